"""The real processes: ``python -m bot`` and ``rq worker``, driven by signed requests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from tests import payloads
from tests.bot.conftest import SIGNING_SECRET, write_config
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator
from workers.settings import ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
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
        "PORT": str(_free_port()),
    }


@pytest.fixture
def web(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_port(int(env["PORT"]), proc)
        yield proc, f"http://127.0.0.1:{env['PORT']}/slack/events"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def _send(url: str, event: dict) -> None:
    body = payloads.json_body(payloads.event_envelope(event))
    assert payloads.post(url, body, "application/json", secret=SIGNING_SECRET).status == 200


def test_signed_mention_goes_through_web_process_and_rq_worker_process(
    web: tuple[subprocess.Popen, str],
    env: dict[str, str],
    slack_api: SlackEmulator,
    redis_conn: Redis,
) -> None:
    _, url = web
    ts = slack_api.add_message("C1", "<@UBOT> end to end?", "U1")
    _send(url, payloads.mention("end to end?", ts=ts))
    deadline = time.monotonic() + 10
    while not redis_conn.keys("rq:job:answer-*") and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = subprocess.run(
        [
            str(Path(sys.executable).parent / "rq"),
            "worker",
            "--burst",
            "--url",
            env["REDIS_URL"],
            "answers",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 0, worker.stderr
    post = slack_api.wait_for("chat.postMessage")[0]
    assert post.args["thread_ts"] == ts
    assert post.args["text"] == "Echo: end to end?"
    assert redis_conn.exists(f"tl:answer:C1-{ts}")


def test_sigterm_lets_an_acknowledged_answer_finish_and_logs_are_json_without_secrets(
    env: dict[str, str],
    slack_api: SlackEmulator,
    openai_api: OpenAIEmulator,
) -> None:
    env = {**env, "REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0"}  # answered in-process
    openai_api.script_answer("finished despite the shutdown", first_token_delay_s=1.5)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_port(int(env["PORT"]), proc)
        ts = slack_api.add_message("C1", "<@UBOT> slow one", "U1")
        _send(f"http://127.0.0.1:{env['PORT']}/slack/events", payloads.mention("slow one", ts=ts))
        openai_api.wait_for_request("/v1/chat/completions")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    post = slack_api.calls("chat.postMessage")[-1]
    assert post.args["text"] == "finished despite the shutdown"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), stderr[-2000:]
    assert "xoxb-test" not in stderr and "sk-test" not in stderr and SIGNING_SECRET not in stderr
    assert '"msg": "stopped"' in stderr
