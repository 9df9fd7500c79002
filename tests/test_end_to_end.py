"""The real processes: ``python -m bot`` and ``rq worker``, driven by signed requests."""

from __future__ import annotations

import os
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

from tests import payloads
from tests.bot.conftest import ADMIN, SIGNING_SECRET, write_config
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator
from workers import approved, keys
from workers.settings import ROOT


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
        "PORT": str(payloads.free_port()),
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
    env = {**env, "REDIS_URL": f"redis://127.0.0.1:{payloads.free_port()}/0"}  # answered in-process
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


def test_two_bot_processes_and_two_workers_answer_once_and_start_one_training_run(
    env: dict[str, str],
    slack_api: SlackEmulator,
    redis_conn: Redis,
) -> None:
    procs = []
    urls = []
    try:
        for _ in range(2):
            port = payloads.free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "bot"],
                cwd=ROOT,
                env={**env, "PORT": str(port)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(proc)
            urls.append(f"http://127.0.0.1:{port}/slack/events")
            _wait_port(port, proc)
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
        deadline = time.monotonic() + 10
        while len(redis_conn.keys("rq:job:answer-*")) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        rq = str(Path(sys.executable).parent / "rq")
        workers = [
            subprocess.Popen(
                [rq, "worker", "--burst", "--url", env["REDIS_URL"], "answers"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        for worker in workers:
            assert worker.wait(timeout=60) == 0
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
            proc.terminate()
            proc.wait(timeout=10)
    for ts in questions:
        answers = [m for m in slack_api.messages("C1", ts) if m.get("user") == "UBOT"]
        assert len(answers) == 1, f"{ts}: {len(answers)} answers"
