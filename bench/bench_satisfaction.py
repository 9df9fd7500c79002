"""What satisfaction tracking and canary assignment add to an answer and to a vote.

    python -m bench.bench_satisfaction --redis-url redis://127.0.0.1:6379/10 --n 2000

Side by side in one run, on the same (empty) Redis db, alternating which goes first:

* answer: the save script alone in a MULTI, as storing an answer was before (the
  baseline), against the answer path's Redis work now: ``canary.model_for_thread``
  before the answer, and ``Store.save_answer``, whose MULTI also runs
  ``satisfaction.record_answer``, after it;
* vote: the vote script alone in a MULTI (the baseline) against ``Store.record_vote``,
  whose MULTI also runs ``satisfaction.sync_feedback``.

Reports microseconds per operation (median of the rounds) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from redis import Redis

from core import canary, keys
from core.settings import load_behaviour
from core.store import AnswerRecord, Store, Vote, VoteSource, save_call

MODEL = "gpt-4o-mini-2024-07-18"


def _record(n: int, tag: str) -> AnswerRecord:
    return AnswerRecord(
        answer_id=f"C1-{tag}{n}",
        team_id="T1",
        channel_id="C1",
        thread_ts=f"{tag}{n}",
        question_ts=f"{tag}{n}",
        user_id="U1",
        messages=[{"role": "user", "content": "How do I reset my password?"}],
        answer="Open the settings page and choose Reset password.",
        model=MODEL,
        prompt_tokens=120,
        completion_tokens=40,
        latency_ms=300,
        created_at=time.time(),
        message_ts=(f"{tag}{n}.5",),
    )


def _timed(work: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        work(i)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--n", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    redis = Redis.from_url(args.redis_url)
    if redis.dbsize():
        sys.exit(f"{args.redis_url} is not empty")
    settings = load_behaviour()
    store = Store(redis, retention_s=3600)
    results: dict[str, list[float]] = {}
    try:
        for r in range(args.rounds):

            def baseline_answer(i: int, r: int = r) -> None:
                record = _record(i, f"b{r}-")
                pipe = redis.pipeline(transaction=True)
                # the save script alone, as storing an answer was before
                store._save(**save_call(record, (), 3600, 3600), client=pipe)
                pipe.execute()

            def answer_now(i: int, r: int = r) -> None:
                record = _record(i, f"n{r}-")
                canary.model_for_thread(redis, settings, "C1", record.thread_ts, MODEL)
                store.save_answer(record)

            def baseline_vote(i: int, r: int = r) -> None:
                answer_id = f"C1-b{r}-{i}"
                pipe = redis.pipeline(transaction=True)
                store._vote(  # the vote script alone, as recording a vote was before
                    client=pipe,
                    keys=[
                        keys.answer(answer_id),
                        keys.votes(answer_id),
                        keys.vote_sources(answer_id),
                        keys.RATED,
                        keys.STATS_VOTES,
                        keys.user_answers("U2"),
                    ],
                    args=[
                        answer_id,
                        "U2",
                        "up",
                        "button",
                        time.time(),
                        0,
                        keys.MESSAGE_ANSWER_PREFIX,
                    ],
                )
                pipe.execute()

            def vote_now(i: int, r: int = r) -> None:
                store.record_vote(f"C1-n{r}-{i}", "U2", Vote.UP, VoteSource.BUTTON)

            pairs = [
                (
                    "answer: save script only",
                    baseline_answer,
                    "answer: + canary + totals",
                    answer_now,
                ),
                ("vote: vote script only", baseline_vote, "vote: + totals sync", vote_now),
            ]
            for base_name, base, new_name, new in pairs:
                order = [(base_name, base), (new_name, new)]
                if r % 2:
                    order.reverse()
                for name, work in order:
                    results.setdefault(name, []).append(_timed(work, args.n))
    finally:
        redis.flushdb()
    print("| operation | µs (median of rounds) |\n|---|---:|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.0f} |")
    names = list(results)
    for base_name, new_name in zip(names[::2], names[1::2], strict=True):
        ratio = statistics.median(results[new_name]) / statistics.median(results[base_name])
        print(f"| **{new_name} / {base_name}** | **{ratio:.2f}x** |")


if __name__ == "__main__":
    main()
