"""The real processes: ``python -m bot`` and ``rq worker``, driven by signed requests."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from redis import Redis

from bot import messages
from core import approved, keys
from core.settings import ROOT
from tests import payloads
from tests.bot.conftest import ADMIN, SIGNING_SECRET, write_config
from tests.emulators import poll_until
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator
from tests.processes import Process, bot_env, start


def _wait_port(port: int, web: Process, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if web.proc.poll() is not None:
            raise AssertionError(f"the bot exited: {web.output()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    web.stop(signal.SIGKILL)
    raise AssertionError(f"the bot did not listen on {port}")


@pytest.fixture
def env(
    tmp_path: Path, slack_api: SlackEmulator, openai_api: OpenAIEmulator, redis_url: str
) -> dict[str, str]:
    config = write_config(tmp_path / "settings.yaml")
    return {**bot_env(slack_api, openai_api, redis_url, config), "PORT": str(payloads.free_port())}


def start_web(env: dict[str, str], log: Path) -> Process:
    """``python -m bot`` on ``env["PORT"]``, listening when this returns."""
    web = start([sys.executable, "-m", "bot"], env, log)
    _wait_port(int(env["PORT"]), web)
    return web


@pytest.fixture
def web(env: dict[str, str], redis_conn: Redis, tmp_path: Path) -> Iterator[str]:
    """A web process (its URL), stopped before the test db is flushed."""
    process = start_web(env, tmp_path / "web.log")
    try:
        yield f"http://127.0.0.1:{env['PORT']}/slack/events"
    finally:
        process.stop()


def _send(url: str, event: dict) -> None:
    body = payloads.json_body(payloads.event_envelope(event))
    assert payloads.post(url, body, "application/json", secret=SIGNING_SECRET).status == 200


def _run_answer_worker(env: dict[str, str]) -> None:
    worker = subprocess.run(
        [str(Path(sys.executable).parent / "rq"), "worker", "--burst", "--url", env["REDIS_URL"]]
        + ["answers"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 0, worker.stderr


def test_signed_mention_is_answered_by_the_web_process_and_recorded(
    web: str,
    slack_api: SlackEmulator,
    redis_conn: Redis,
) -> None:
    url = web
    ts = slack_api.add_message("C1", "<@UBOT> end to end?", "U1")
    _send(url, payloads.mention("end to end?", ts=ts))
    post = slack_api.wait_for("chat.postMessage", timeout=10)[0]
    assert post.args["thread_ts"] == ts
    assert post.args["text"] == "Echo: end to end?"
    deadline = time.monotonic() + 10
    while not redis_conn.exists(f"tl:answer:C1-{ts}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_conn.exists(f"tl:answer:C1-{ts}")
    assert redis_conn.hlen(keys.INFLIGHT) == 0


def test_an_answer_cut_off_by_a_killed_web_process_is_queued_again_and_answered_once(
    env: dict[str, str],
    tmp_path: Path,
    slack_api: SlackEmulator,
    openai_api: OpenAIEmulator,
    redis_conn: Redis,
) -> None:
    config = write_config(tmp_path / "fast-recovery.yaml", {"slack": {"recover_after_s": 3}})
    env = {**env, "CONFIG_FILE": str(config)}
    # A long answer that streams slowly: the process dies while its message is streaming.
    openai_api.script_answer(" ".join(["word"] * 3000), chunk_delay_s=0.05)
    first = start_web(env, tmp_path / "first.log")
    try:
        ts = slack_api.add_message("C1", "<@UBOT> survive a crash", "U1")
        _send(
            f"http://127.0.0.1:{env['PORT']}/slack/events",
            payloads.mention("survive a crash", ts=ts),
        )
        slack_api.wait_for("chat.startStream", timeout=20)
        entry_shown = lambda: json.loads(redis_conn.hget(keys.INFLIGHT, f"C1-{ts}"))["shown"]  # noqa: E731
        shown = poll_until(entry_shown, 10, 0.05)
        assert shown, "the streaming message is journaled"
    finally:
        first.stop(signal.SIGKILL)  # a crash: no drain, no goodbye
    assert redis_conn.hlen(keys.INFLIGHT) == 1, "the cut-off answer is in the journal"
    openai_api.reset()
    openai_api.script_answer("answered after the crash")

    # Another web process notices the dead one's heartbeat is gone and queues the answer.
    second = start_web({**env, "PORT": str(payloads.free_port())}, tmp_path / "second.log")
    try:
        deadline = time.monotonic() + 20
        while not redis_conn.keys("rq:job:answer-*") and time.monotonic() < deadline:
            time.sleep(0.1)
        _run_answer_worker(env)
    finally:
        second.stop()
    cut_off, answer = [m for m in slack_api.messages("C1", ts) if m.get("user") == "UBOT"]
    assert [cut_off["ts"]] == shown
    assert cut_off["text"].startswith("word word")
    assert cut_off["text"].endswith(messages.CUT_OFF), "the dead attempt says it was cut off"
    assert answer["text"] == "answered after the crash"
    assert redis_conn.exists(f"tl:answer:C1-{ts}")
    assert redis_conn.hlen(keys.INFLIGHT) == 0


def test_sigterm_lets_an_acknowledged_answer_finish_and_logs_are_json_without_secrets(
    env: dict[str, str],
    tmp_path: Path,
    slack_api: SlackEmulator,
    openai_api: OpenAIEmulator,
    redis_conn: Redis,
) -> None:
    openai_api.script_answer("finished despite the shutdown", first_token_delay_s=1.5)
    web = start_web(env, tmp_path / "web.log")
    try:
        ts = slack_api.add_message("C1", "<@UBOT> slow one", "U1")
        _send(f"http://127.0.0.1:{env['PORT']}/slack/events", payloads.mention("slow one", ts=ts))
        openai_api.wait_for_request("/v1/chat/completions")
    finally:
        status = web.stop()
    stderr = web.output()
    assert status == 0
    post = slack_api.calls("chat.postMessage")[-1]
    assert post.args["text"] == "finished despite the shutdown"
    assert redis_conn.exists(f"tl:answer:C1-{ts}")
    assert redis_conn.hlen(keys.INFLIGHT) == 0
    assert not redis_conn.keys(keys.answer_owner("*")), "a clean stop ends the heartbeat"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), stderr[-2000:]
    assert "xoxb-test" not in stderr and "sk-test" not in stderr and SIGNING_SECRET not in stderr
    assert '"msg": "stopped"' in stderr
    assert "will be unused" not in stderr, "no misleading start-up warning from Bolt"


def test_two_bot_processes_answer_every_redelivered_message_once_and_start_one_training_run(
    env: dict[str, str],
    tmp_path: Path,
    slack_api: SlackEmulator,
    redis_conn: Redis,
) -> None:
    procs = []
    urls = []
    try:
        for _ in range(2):
            port = payloads.free_port()
            procs.append(start_web({**env, "PORT": str(port)}, tmp_path / f"web{port}.log"))
            urls.append(f"http://127.0.0.1:{port}/slack/events")
        questions = []
        for i in range(10):
            ts = slack_api.add_message("C1", f"<@UBOT> question {i}", f"U{i}")
            event = payloads.mention(f"question {i}", user=f"U{i}", ts=ts)
            envelope = payloads.event_envelope(event)
            body = payloads.json_body(envelope)
            # A load balancer may deliver Slack's retries of one event to either process,
            # and Slack sends the mention as a message event too.
            for url in urls + urls:
                assert (
                    payloads.post(url, body, "application/json", secret=SIGNING_SECRET).status
                    == 200
                )
            as_message = payloads.message(f"<@UBOT> question {i}", user=f"U{i}", ts=ts)
            _send(urls[i % 2], as_message)
            questions.append(ts)
        deadline = time.monotonic() + 20
        while len(redis_conn.keys("tl:answer:*")) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Two admins ask both processes for a training run at the same moment.
        for i in range(12):
            approved.append(
                redis_conn,
                approved.Example(
                    messages=[
                        {"role": "system", "content": "s"},
                        {"role": "user", "content": f"q{i}"},
                        {"role": "assistant", "content": f"a{i}"},
                    ],
                    source="test",
                ),
            )
        reply_urls = [slack_api.new_response_url() for _ in urls]
        bodies = [
            payloads.form_body(payloads.command_form("retrain", user=ADMIN, response_url=reply))
            for reply in reply_urls
        ]
        with ThreadPoolExecutor(2) as pool:
            statuses = list(
                pool.map(
                    lambda pair: (
                        payloads.post(
                            pair[0],
                            pair[1],
                            "application/x-www-form-urlencoded",
                            secret=SIGNING_SECRET,
                        ).status
                    ),
                    zip(urls, bodies, strict=True),
                )
            )
        assert statuses == [200, 200]
        deadline = time.monotonic() + 10
        while not all(slack_api.responses(u) for u in reply_urls) and time.monotonic() < deadline:
            time.sleep(0.05)
        texts = [slack_api.responses(u)[0]["text"] for u in reply_urls]
        assert sum("already going" in t for t in texts) == 1, texts
        assert redis_conn.zcard(keys.RUNS) == 1, "one training run"
    finally:
        for web in procs:
            web.stop()
    for ts in questions:
        answers = [m for m in slack_api.messages("C1", ts) if m.get("user") == "UBOT"]
        assert len(answers) == 1, f"{ts}: {len(answers)} answers"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no RSS for {pid}")


def test_a_listening_web_process_is_ready_the_first_answer_loads_nothing_more(
    env: dict[str, str], tmp_path: Path, slack_api: SlackEmulator, redis_conn: Redis
) -> None:
    # Listening (and so /healthz 200) comes after the tokenizer, the answer engine and its
    # clients are loaded: the first answer must not pay for them (the tokenizer alone is
    # about 75 MB).
    web = start_web(env, tmp_path / "web.log")
    try:
        before = _rss_mb(web.proc.pid)
        ts = slack_api.add_message("C1", "<@UBOT> first one", "U1")
        _send(f"http://127.0.0.1:{env['PORT']}/slack/events", payloads.mention("first one", ts=ts))
        assert poll_until(lambda: redis_conn.exists(f"tl:answer:C1-{ts}"), 20, 0.05)
        grown = _rss_mb(web.proc.pid) - before
    finally:
        web.stop()
    assert grown < 25, f"the first answer grew the process by {grown:.0f} MB"
