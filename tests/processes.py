"""The bot's real processes in tests: their environment, and starting and stopping them."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from core.settings import ROOT
from tests.bot.conftest import SIGNING_SECRET
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator

STOP_TIMEOUT_S = 30.0


def bot_env(
    slack: SlackEmulator, openai: OpenAIEmulator, redis_url: str, config: Path
) -> dict[str, str]:
    """The environment of ``python -m bot`` and ``rq worker`` against the emulators."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "OPENAI_API_KEY": openai.api_key,
        "OPENAI_BASE_URL": openai.url,
        "SLACK_API_URL": slack.url,
        "REDIS_URL": redis_url,
        "CONFIG_FILE": str(config),
    }


@dataclass
class Process:
    """A started process whose output goes to a file (a pipe nobody reads could fill up)."""

    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        """Everything it printed so far."""
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait for the exit status (killing what does not stop)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(
                f"{self.proc.args} did not stop:\n{self.output()[-3000:]}"
            ) from None


def start(args: list[str], env: dict[str, str], log: Path) -> Process:
    """Start ``args`` in the project's root, its output (both streams) into ``log``."""
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Process(proc, log)
