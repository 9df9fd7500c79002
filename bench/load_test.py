"""Load test: many users at once against the real processes, the model answering slowly.

A realistic mix of new mentions, thread follow-ups without mention, DMs, button votes and
reactions from many users is sent to one web process (``python -m bot``) with a pool of
answer workers (``rq worker-pool``), while the OpenAI emulator streams each answer over a
few seconds. Bounded in time and in count; loopback only. Checks and reports:

- every request acknowledged within Slack's 3 seconds (ack latency p50 / p99 / max);
- every question answered exactly once; every vote stored exactly once;
- the sustained request rate and answer rate.

    python -m bench.load_test --seconds 30 --rate 8 --workers 24
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from bench.bench_bot import SECRET, _free_port, _wait_http, service_env, start_bot, stop
from core import keys
from tests import payloads
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator

ROOT = Path(__file__).resolve().parent.parent
ACK_LIMIT_S = 3.0


@dataclass
class Tally:
    acks: list[float] = field(default_factory=list)
    questions: dict[str, str] = field(default_factory=dict)  # question ts -> channel
    votes: dict[tuple[str, str], str] = field(default_factory=dict)  # (answer ts, user) -> vote
    lock: threading.Lock = field(default_factory=threading.Lock)


def _answers(slack: SlackEmulator, channel: str, thread_ts: str) -> list[dict]:
    """The bot's finished answers in a thread (those carrying the feedback buttons)."""
    return [
        m
        for m in slack.messages(channel, thread_ts)
        if m.get("user") == "UBOT"
        and any(b.get("type") == "context_actions" for b in m.get("blocks") or [])
    ]


def _final_calls(slack: SlackEmulator) -> list:
    """Calls that complete an answer: each answer here fits one message."""
    return [
        c
        for c in slack.calls()
        if c.method in ("chat.stopStream", "chat.postMessage") and not c.error
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long requests are sent")
    parser.add_argument("--rate", type=float, default=8.0, help="requests per second")
    parser.add_argument("--max-requests", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--workers", type=int, default=24, help="answer workers")
    parser.add_argument("--first-token-s", type=float, default=1.0)
    parser.add_argument("--chunk-delay-s", type=float, default=0.05)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    redis = Redis.from_url(args.redis_url)
    if redis.dbsize():
        sys.exit(f"{args.redis_url} is not empty")
    slack = SlackEmulator(bot_token="xoxb-bench").start()
    llm = OpenAIEmulator(api_key="sk-bench").start()
    llm.first_token_delay_s = args.first_token_s
    llm.chunk_delay_s = args.chunk_delay_s
    long_answer = " ".join(f"word{i}" for i in range(120))  # ~40 chunks, ~1-5 s in all
    llm.answer_fn = lambda body: long_answer
    port = _free_port()
    procs = start_bot(service_env(slack, llm, args.redis_url), port, args.workers)
    url = f"http://127.0.0.1:{port}/slack/events"
    tally = Tally()

    def send(body: bytes, content_type: str) -> None:
        started = time.monotonic()
        response = payloads.post(url, body, content_type, secret=SECRET)
        elapsed = time.monotonic() - started
        assert response.status == 200, response
        with tally.lock:
            tally.acks.append(elapsed)

    def answered() -> list[tuple[str, str]]:
        """(channel, answer ts) of questions already answered, to vote and follow up on."""
        with tally.lock:
            items = list(tally.questions.items())
        out = []
        for ts, channel in rng.sample(items, min(len(items), 40)):
            found = _answers(slack, channel, ts)
            if found:
                out.append((channel, found[0]["ts"], ts))
        return out

    def one_request(i: int) -> None:
        user = f"U{rng.randrange(args.users):04d}"
        kind = rng.choices(["mention", "follow", "dm", "button", "reaction"], [40, 20, 15, 15, 10])[
            0
        ]
        done = answered() if kind in ("follow", "button", "reaction") else []
        if kind in ("follow", "button", "reaction") and not done:
            kind = "mention"
        if kind == "mention":
            channel = f"C{rng.randrange(5)}"
            ts = slack.add_message(channel, f"<@UBOT> question {i}", user)
            with tally.lock:
                tally.questions[ts] = channel
            send(
                payloads.json_body(
                    payloads.event_envelope(
                        payloads.mention(f"question {i}", user=user, channel=channel, ts=ts)
                    )
                ),
                "application/json",
            )
        elif kind == "dm":
            channel = f"D{user}"
            ts = slack.add_message(channel, f"private question {i}", user)
            with tally.lock:
                tally.questions[ts] = channel
            send(
                payloads.json_body(
                    payloads.event_envelope(
                        payloads.message(
                            f"private question {i}",
                            user=user,
                            channel=channel,
                            channel_type="im",
                            ts=ts,
                        )
                    )
                ),
                "application/json",
            )
        elif kind == "follow":
            channel, _, thread = rng.choice(done)
            ts = slack.add_message(channel, f"follow-up {i}", user, thread_ts=thread)
            with tally.lock:
                tally.questions[ts] = channel
            send(
                payloads.json_body(
                    payloads.event_envelope(
                        payloads.message(
                            f"follow-up {i}", user=user, channel=channel, ts=ts, thread_ts=thread
                        )
                    )
                ),
                "application/json",
            )
        else:
            channel, answer_ts, _ = rng.choice(done)
            vote = rng.choice(["up", "down"])
            with tally.lock:
                if (answer_ts, user) in tally.votes:
                    return  # one vote per user and answer, so the stored value is known
                tally.votes[(answer_ts, user)] = vote
            if kind == "button":
                send(
                    payloads.interactive_body(
                        payloads.feedback_click(
                            vote, user=user, channel=channel, message_ts=answer_ts
                        )
                    ),
                    "application/x-www-form-urlencoded",
                )
            else:
                send(
                    payloads.json_body(
                        payloads.event_envelope(
                            payloads.reaction(
                                "+1" if vote == "up" else "-1",
                                user=user,
                                channel=channel,
                                message_ts=answer_ts,
                            )
                        )
                    ),
                    "application/json",
                )

    try:
        _wait_http(port)
        time.sleep(3)  # the worker pool starts
        started = time.monotonic()
        sent = 0
        with ThreadPoolExecutor(64) as pool:
            futures = []
            while time.monotonic() - started < args.seconds and sent < args.max_requests:
                futures.append(pool.submit(one_request, sent))
                sent += 1
                time.sleep(max(0.0, started + sent / args.rate - time.monotonic()))
            for future in futures:
                future.result()
        send_elapsed = time.monotonic() - started
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(_final_calls(slack)) < len(tally.questions):
            time.sleep(0.2)
        drain_elapsed = time.monotonic() - started
    finally:
        stop(procs)

    final_calls = [
        c
        for c in slack.calls()
        if c.method in ("chat.stopStream", "chat.postMessage") and not c.error
    ]
    unanswered = [
        ts
        for ts, ch in tally.questions.items()
        if not slack.message(ch, ts).get("thread_ts") and not _answers(slack, ch, ts)
    ]
    completions = len(llm.completions())
    stored_votes = 0
    wrong_votes = 0
    for (answer_ts, user), vote in tally.votes.items():
        answer_id = redis.get(keys.message_answer(_channel_of(tally, slack, answer_ts), answer_ts))
        recorded = redis.hget(keys.votes(answer_id.decode()), user) if answer_id else None
        stored_votes += recorded is not None
        wrong_votes += recorded is not None and recorded.decode() != vote
    acks = sorted(tally.acks)
    queued = len(redis.keys("rq:job:answer-*"))
    redis.flushdb()
    slack.stop()
    llm.stop()
    questions = len(tally.questions)
    print(
        f"requests: {len(acks)} in {send_elapsed:.1f} s ({len(acks) / send_elapsed:.1f}/s), "
        f"{questions} questions, "
        f"{len(tally.votes)} distinct votes"
    )
    print(
        f"ack latency: p50 {acks[len(acks) // 2] * 1000:.1f} ms, "
        f"p99 {acks[int(len(acks) * 0.99)] * 1000:.1f} ms, max {acks[-1] * 1000:.1f} ms; "
        f"over {ACK_LIMIT_S:.0f} s: {sum(a > ACK_LIMIT_S for a in acks)}"
    )
    print(
        f"answers: {len(final_calls)} posted and {completions} model calls for {questions} "
        f"questions (exactly once: {len(final_calls) == completions == questions}); "
        f"unanswered: {len(unanswered)}; all answered {drain_elapsed:.1f} s after the start "
        f"({questions / drain_elapsed:.1f} answers/s)"
    )
    print(f"votes: {stored_votes} of {len(tally.votes)} stored, {wrong_votes} with a wrong value")
    print(f"answers that overflowed to the queue (answer workers): {queued}")


def _channel_of(tally: Tally, slack: SlackEmulator, answer_ts: str) -> str:
    for channel in {*tally.questions.values()}:
        if slack.message(channel, answer_ts):
            return channel
    return ""


if __name__ == "__main__":
    main()
