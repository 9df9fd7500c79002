"""In production the processes run under supervisord (``deploy/``), which restarts any of
them that dies: kill the web process and the workers, and questions are still answered."""

from __future__ import annotations

import configparser
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

from redis import Redis

from core.settings import ROOT
from tests import payloads
from tests.bot.conftest import SIGNING_SECRET, write_config
from tests.emulators import poll_until
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator
from tests.processes import bot_env, start

BIN = Path(sys.executable).parent
PROGRAMS = ("web", "worker", "answer-workers")


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {
        name.strip(): command.strip()
        for name, command in (line.split(":", 1) for line in lines if line.strip())
    }


def _programs(path: Path) -> dict[str, list[str]]:
    parser = configparser.RawConfigParser()
    parser.read(path)
    return {
        section.split(":", 1)[1]: shlex.split(parser[section]["command"])
        for section in parser.sections()
        if section.startswith("program:")
    }


def test_supervisord_runs_exactly_the_procfile_processes() -> None:
    programs = {
        **_programs(ROOT / "deploy" / "tuneloop.conf"),
        **_programs(ROOT / "deploy" / "gpu-worker.conf"),
    }
    procfile = _procfile()
    assert set(programs) == set(procfile)
    for name, argv in programs.items():
        assert argv == ["/bin/sh", "-c", f"exec {procfile[name]}"], name


def _ctl(config: Path, *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "supervisorctl"), "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout


def _running(config: Path) -> dict[str, int]:
    """Program -> pid of each RUNNING program."""
    pids = {}
    for line in _ctl(config, "status").splitlines():
        words = line.split()
        if len(words) >= 4 and words[1] == "RUNNING" and words[2] == "pid":
            pids[words[0]] = int(words[3].rstrip(","))
    return pids


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _ask(slack: SlackEmulator, port: int, text: str) -> str:
    """Mention the bot; the answer's text once it is posted in the thread."""
    ts = slack.add_message("C1", f"<@UBOT> {text}", "U1")
    body = payloads.json_body(payloads.event_envelope(payloads.mention(text, ts=ts)))
    url = f"http://127.0.0.1:{port}/slack/events"
    assert payloads.post(url, body, "application/json", secret=SIGNING_SECRET).status == 200

    def answer() -> str | None:
        replies = [m for m in slack.messages("C1", ts) if m.get("user") == "UBOT"]
        return replies[0]["text"] if replies else None

    return poll_until(answer, 30, 0.05)


def test_killed_web_process_and_workers_are_restarted_and_answer(
    tmp_path: Path,
    slack_api: SlackEmulator,
    openai_api: OpenAIEmulator,
    redis_url: str,
    redis_conn: Redis,
) -> None:
    # Every answer goes through the answers queue: an answer proves a worker serves it.
    settings = write_config(tmp_path / "settings.yaml", {"slack": {"inline_answers": 0}})
    port = payloads.free_port()
    env = {
        **bot_env(slack_api, openai_api, redis_url, settings),
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PORT": str(port),
        "ANSWER_WORKERS": "1",
    }
    config = tmp_path / "supervisord.conf"
    config.write_text(
        f"""[supervisord]
nodaemon=true
logfile={tmp_path / "supervisord.log"}
pidfile={tmp_path / "supervisord.pid"}

[unix_http_server]
file={tmp_path / "supervisor.sock"}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{tmp_path / "supervisor.sock"}

[include]
files = {ROOT / "deploy" / "tuneloop.conf"}
"""
    )
    supervisord = start([str(BIN / "supervisord"), "-c", str(config)], env, tmp_path / "out.log")
    try:
        before = poll_until(lambda: (p := _running(config)) and len(p) == 3 and p, 30, 0.2)
        assert before and set(before) == set(PROGRAMS), supervisord.output()[-3000:]
        assert poll_until(lambda: _listening(port), 30, 0.1), supervisord.output()[-3000:]
        assert _ask(slack_api, port, "before the crash") == "Echo: before the crash"

        pool_workers = _children(before["answer-workers"])
        assert pool_workers, "the pool runs its worker in a child process"
        for name in PROGRAMS:
            os.kill(before[name], signal.SIGKILL)

        def restarted() -> dict[str, int] | None:
            now = _running(config)
            fresh = set(now) == set(PROGRAMS) and all(now[n] != before[n] for n in PROGRAMS)
            return now if fresh else None

        assert poll_until(restarted, 30, 0.2), (
            f"{_ctl(config, 'status')}\n{supervisord.output()[-3000:]}"
        )
        assert poll_until(lambda: _listening(port), 30, 0.1), supervisord.output()[-3000:]
        assert _ask(slack_api, port, "after the crash") == "Echo: after the crash", (
            supervisord.output()[-3000:]
        )
        assert poll_until(lambda: not any(_alive(p) for p in pool_workers), 10, 0.1), (
            "the killed pool's worker stopped with it"
        )
    finally:
        assert supervisord.stop() == 0, supervisord.output()[-3000:]
