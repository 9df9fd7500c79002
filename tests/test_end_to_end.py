"""The real processes: ``python -m bot`` and ``rq worker``, driven by signed requests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import pytest
from redis import Redis

from tests import payloads
from tests.bot.conftest import ADMIN, SIGNING_SECRET, write_config
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator
from workers import approved, keys
from workers.settings import ROOT


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the bot exited: {stop_web(proc)[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the bot did not listen on {port}")


@pytest.fixture
def env(
    tmp_path: Path, slack_api: SlackEmulator, openai_api: OpenAIEmulator, redis_url: str
) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": openai_api.url,
        "SLACK_API_URL": slack_api.url,
        "REDIS_URL": redis_url,
        "CONFIG_FILE": str(write_config(tmp_path / "settings.yaml")),
        "PORT": str(payloads.free_port()),
    }


_LOGS: dict[int, IO[str]] = {}  # pid -> the process's log file


def start_web(env: dict[str, str]) -> subprocess.Popen:
    """``python -m bot`` on ``env["PORT"]``, listening when this returns.

    Its log goes to a temporary file (a pipe nobody reads could fill up and stall it);
    :func:`stop_web` returns it."""
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by stop_web)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    _LOGS[proc.pid] = log
    _wait_port(int(env["PORT"]), proc)
    return proc


def stop_web(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
    """Send ``sig`` (SIGKILL if it does not stop in time); returns what it logged."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    with _LOGS.pop(proc.pid) as log:
        log.seek(0)
        return log.read()


@pytest.fixture
def web(env: dict[str, str], redis_conn: Redis) -> Iterator[tuple[subprocess.Popen, str]]:
    """A web process, stopped before the test db is flushed."""
    proc = start_web(env)
    try:
        yield proc, f"http://127.0.0.1:{env['PORT']}/slack/events"
    finally:
        stop_web(proc)


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
    web: tuple[subprocess.Popen, str],
    slack_api: SlackEmulator,
    redis_conn: Redis,
) -> None:
    _, url = web
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
    openai_api.script_answer("never finished", first_token_delay_s=60)
    first = start_web(env)
    try:
        ts = slack_api.add_message("C1", "<@UBOT> survive a crash", "U1")
        _send(
            f"http://127.0.0.1:{env['PORT']}/slack/events",
            payloads.mention("survive a crash", ts=ts),
        )
        openai_api.wait_for_request("/v1/chat/completions", timeout=10)
    finally:
        first.kill()  # a crash: no drain, no goodbye
        first.communicate(timeout=10)
    assert redis_conn.hlen(keys.INFLIGHT) == 1, "the cut-off answer is in the journal"
    openai_api.reset()
    openai_api.script_answer("answered after the crash")

    # Another web process notices the dead one's heartbeat is gone and queues the answer.
    second = start_web({**env, "PORT": str(payloads.free_port())})
    try:
        deadline = time.monotonic() + 20
        while not redis_conn.keys("rq:job:answer-*") and time.monotonic() < deadline:
            time.sleep(0.1)
        _run_answer_worker(env)
    finally:
        stop_web(second)
    answers = [m for m in slack_api.messages("C1", ts) if m.get("user") == "UBOT"]
    assert [m["text"] for m in answers] == ["answered after the crash"]
    assert redis_conn.exists(f"tl:answer:C1-{ts}")
    assert redis_conn.hlen(keys.INFLIGHT) == 0


def test_sigterm_lets_an_acknowledged_answer_finish_and_logs_are_json_without_secrets(
    env: dict[str, str],
    slack_api: SlackEmulator,
    openai_api: OpenAIEmulator,
    redis_conn: Redis,
) -> None:
    openai_api.script_answer("finished despite the shutdown", first_token_delay_s=1.5)
    proc = start_web(env)
    try:
        ts = slack_api.add_message("C1", "<@UBOT> slow one", "U1")
        _send(f"http://127.0.0.1:{env['PORT']}/slack/events", payloads.mention("slow one", ts=ts))
        openai_api.wait_for_request("/v1/chat/completions")
    finally:
        stderr = stop_web(proc)
    assert proc.returncode == 0
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
    slack_api: SlackEmulator,
    redis_conn: Redis,
) -> None:
    procs = []
    urls = []
    try:
        for _ in range(2):
            port = payloads.free_port()
            procs.append(start_web({**env, "PORT": str(port)}))
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
        for proc in procs:
            stop_web(proc)
    for ts in questions:
        answers = [m for m in slack_api.messages("C1", ts) if m.get("user") == "UBOT"]
        assert len(answers) == 1, f"{ts}: {len(answers)} answers"
