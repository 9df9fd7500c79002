"""Redis memory per 1,000 conversations, to size a Redis for tuneloop.

Stores answers shaped like real ones (a system prompt, a few turns of history, a
paragraph-long answer), a third of them rated, and reads Redis's own memory accounting.

    python -m bench.bench_redis_memory --conversations 1000
"""

from __future__ import annotations

import argparse
import sys
import time

from redis import Redis

from core.store import AnswerRecord, Store, Vote, VoteSource

SYSTEM = "You are tuneloop, a helpful assistant for this team in Slack. " * 3
QUESTION = "How do I rotate the staging database credentials without downtime? " * 2
ANSWER = "First create the new credentials, then update the secret store, roll the pods. " * 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=3, help="earlier exchanges in each prompt")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    args = parser.parse_args()
    redis = Redis.from_url(args.redis_url)
    if redis.dbsize():
        sys.exit(f"{args.redis_url} is not empty")
    store = Store(redis, retention_s=30 * 86400)
    before = redis.info("memory")["used_memory"]
    history = []
    for _ in range(args.turns):
        history += [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    now = time.time()
    for i in range(args.conversations):
        record = AnswerRecord(
            answer_id=f"C{i % 50:05d}-{now + i:.6f}",
            team_id="T0123456",
            channel_id=f"C{i % 50:05d}",
            thread_ts=f"{now + i:.6f}",
            question_ts=f"{now + i:.6f}",
            user_id=f"U{i % 200:06d}",
            messages=[
                {"role": "system", "content": SYSTEM},
                *history,
                {"role": "user", "content": QUESTION},
            ],
            answer=ANSWER,
            model="ft:gpt-4o-mini-2024-07-18:org:tuneloop:abc123",
            prompt_tokens=900,
            completion_tokens=150,
            latency_ms=2100,
            created_at=now + i,
            message_ts=(f"{now + i + 0.5:.6f}",),
        )
        store.save_answer(record)
        if i % 3 == 0:
            store.record_vote(record.answer_id, "U999999", Vote.UP, VoteSource.BUTTON)
    used = redis.info("memory")["used_memory"] - before
    redis.flushdb()
    per_1000 = used / args.conversations * 1000
    print(f"conversations: {args.conversations}, {args.turns} earlier exchanges each, 1/3 rated")
    print(f"Redis memory: {used / 2**20:.1f} MiB in all, {per_1000 / 2**20:.2f} MiB per 1,000")


if __name__ == "__main__":
    main()
