"""The canary across real processes: two ``python -m bot`` web processes, one killed and
restarted, and a real ``rq worker`` applying the decision their periodic checks queue."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from core import canary, keys, model_registry
from core.settings import ROOT, CanarySettings
from tests import payloads
from tests.bot.conftest import SIGNING_SECRET, write_config
from tests.emulators import poll_until
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator
from tests.processes import bot_env
from tests.test_end_to_end import _send, start_web

BASE = "gpt-4o-mini-2024-07-18"
CAND = "ft:gpt-4o-mini-2024-07-18:org:tuneloop:canary"
RULES = {"enabled": True, "share": 0.5, "min_votes": 6, "margin": 0.05, "confidence": 0.9}
THREADS = 16


@pytest.fixture
def env(
    tmp_path: Path, slack_api: SlackEmulator, openai_api: OpenAIEmulator, redis_url: str
) -> dict[str, str]:
    config = write_config(
        tmp_path / "canary.yaml", {"canary": RULES, "slack": {"recover_after_s": 3}}
    )
    return bot_env(slack_api, openai_api, redis_url, config)


def _bot_answers(slack: SlackEmulator, thread_ts: str) -> list[dict]:
    return [m for m in slack.messages("C1", thread_ts) if m.get("user") == "UBOT"]


def _answered_model(redis: Redis, channel: str, ts: str) -> str:
    model = redis.hget(keys.answer(f"{channel}-{ts}"), "model")
    return model.decode() if model else ""


def _wait_answers(redis: Redis, count: int) -> None:
    poll_until(lambda: len(redis.keys("tl:answer:*")) >= count, 30, 0.05)
    assert len(redis.keys("tl:answer:*")) >= count


def _follow_up(slack: SlackEmulator, url: str, thread_ts: str, text: str) -> str:
    ts = slack.add_message("C1", text, "U1", thread_ts=thread_ts)
    _send(url, payloads.message(text, user="U1", ts=ts, thread_ts=thread_ts))
    return ts


def test_threads_keep_their_model_across_processes_and_a_restart_and_the_canary_is_decided_once(
    env: dict[str, str],
    tmp_path: Path,
    slack_api: SlackEmulator,
    openai_api: OpenAIEmulator,
    redis_conn: Redis,
) -> None:
    openai_api.add_model(CAND)
    assert canary.start(
        redis_conn, CanarySettings(**RULES), candidate=CAND, incumbent=BASE, run_id="", by="t"
    )
    ports = [payloads.free_port() for _ in range(2)]
    urls = [f"http://127.0.0.1:{p}/slack/events" for p in ports]
    webs = [start_web({**env, "PORT": str(p)}, tmp_path / f"web{p}.log") for p in ports]
    try:
        expected: dict[str, str] = {}
        for i in range(THREADS):
            ts = slack_api.add_message("C1", f"<@UBOT> thread {i}", "U1")
            _send(urls[i % 2], payloads.mention(f"thread {i}", ts=ts))
            expected[ts] = CAND if canary.bucket("C1", ts) < RULES["share"] else BASE
        assert len(set(expected.values())) == 2, "both sides of the canary get threads"
        _wait_answers(redis_conn, THREADS)
        assert {ts: _answered_model(redis_conn, "C1", ts) for ts in expected} == expected

        # follow-ups reach the other process: each thread keeps its model
        follow = {
            _follow_up(slack_api, urls[(i + 1) % 2], ts, "and then?"): ts
            for i, ts in enumerate(expected)
        }
        _wait_answers(redis_conn, 2 * THREADS)
        for ts, thread in follow.items():
            assert _answered_model(redis_conn, "C1", ts) == expected[thread]

        # one process crashes and comes back: still the same models
        webs[0].stop(signal.SIGKILL)
        webs[0] = start_web({**env, "PORT": str(ports[0])}, tmp_path / "restarted.log")
        again = {_follow_up(slack_api, urls[0], ts, "one more?"): ts for ts in expected}
        _wait_answers(redis_conn, 3 * THREADS)
        for ts, thread in again.items():
            assert _answered_model(redis_conn, "C1", ts) == expected[thread]

        # users vote by a rule: the candidate's answers are liked, half of the others not
        for n, thread in enumerate(expected):
            for message in _bot_answers(slack_api, thread):
                liked = expected[thread] == CAND or n % 2 == 0
                click = payloads.feedback_click(
                    "up" if liked else "down",
                    user=f"U{n}",
                    channel="C1",
                    message_ts=message["ts"],
                    thread_ts=thread,
                )
                body = payloads.interactive_body(click)
                status = payloads.post(
                    urls[n % 2], body, "application/x-www-form-urlencoded", secret=SIGNING_SECRET
                ).status
                assert status == 200
        # the web processes' periodic check queues the decision (no admin acts)
        training = Queue(keys.QUEUE_TRAINING, connection=redis_conn)
        assert poll_until(lambda: training.count > 0, 20, 0.1), "no decision was queued"
        worker = subprocess.run(
            [str(Path(sys.executable).parent / "rq"), "worker", "--burst", "--url"]
            + [env["REDIS_URL"], keys.QUEUE_TRAINING],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert worker.returncode == 0, worker.stderr[-3000:]
    finally:
        for web in webs:
            web.stop()
    assert canary.active(redis_conn) is None
    assert redis_conn.get(keys.CURRENT_MODEL).decode() == CAND
    decisions = canary.history(redis_conn)
    assert [d["outcome"] for d in decisions] == ["promote"], json.dumps(decisions)
    assert len([h for h in model_registry.history(redis_conn, 10) if h["action"] == "promote"]) == 1
