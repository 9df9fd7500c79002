"""The Procfile's workers serve exactly the queues the code enqueues to."""

from __future__ import annotations

import shlex

from core import keys
from core.settings import ROOT


def _processes() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {
        name.strip(): shlex.split(command)
        for name, command in (line.split(":", 1) for line in lines if line.strip())
    }


def _queues(argv: list[str]) -> list[str]:
    """Positional arguments of an ``rq worker`` command line: the queue names."""
    queues, skip = [], False
    for arg in argv[2:]:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in {
                "--url",
                "-u",
                "--path",
                "-P",
                "-n",
                "--num-workers",
                "-w",
                "--maintenance-interval",
                "--worker-ttl",
            }
        else:
            queues.append(arg)
    return queues


def test_procfile_runs_the_bot_and_workers_on_every_queue_of_the_keys_module() -> None:
    processes = _processes()
    assert processes["web"] == ["python", "-m", "bot"]
    served = set()
    for name, argv in processes.items():
        if argv[0] == "rq":
            queues = _queues(argv)
            assert queues, f"{name} serves no queue"
            assert set(queues) <= set(keys.ALL_QUEUES), f"{name} names an unknown queue"
            served.update(queues)
    assert served == set(keys.ALL_QUEUES)
    assert "--with-scheduler" in processes["worker"], "polling jobs are scheduled"
