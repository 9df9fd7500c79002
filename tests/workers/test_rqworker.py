"""Killing an RQ worker that runs a scheduler (the Procfile's training worker, and every
worker of the answer-worker pool) loses no job: the next job enqueued after the kill is
run by the worker started in its place, and the scheduler the dead worker had forked goes
away with it."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.scheduler import RQScheduler

from core import keys
from core.settings import ROOT
from tests.emulators import poll_until
from tests.processes import Process, start

JOB = "tests.workers.test_rqworker.double"


def double(value: int) -> int:
    """The job: something a worker must actually run to produce."""
    return value * 2


def _procfile_argv(name: str, redis_url: str) -> list[str]:
    """The Procfile's line for process ``name``, exactly, with this test's Redis."""
    line = next(
        line.split(":", 1)[1]
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith(f"{name}:")
    )
    line = line.replace("${REDIS_URL:-redis://127.0.0.1:6379/0}", redis_url)
    line = line.replace("${ANSWER_WORKERS:-4}", "1")  # the pool's only worker is killed
    argv = shlex.split(line)
    assert argv[0] == "rq"
    return [str(Path(sys.executable).parent / "rq"), *argv[1:]]


def _env(redis_url: str) -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _blocked_readers(redis: Redis) -> list[dict]:
    """Clients blocked reading a queue (a worker waiting for its next job)."""
    return [c for c in redis.client_list() if c.get("cmd") in ("blpop", "blmove")]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[1])


def _scheduler_pid(redis: Redis, queue: str) -> int | None:
    owner = redis.get(RQScheduler.get_locking_key(queue))
    if owner is None:
        return None
    pid = redis.hget(f"rq:scheduler:{owner.decode()}", "pid")
    return int(pid) if pid else None


@pytest.mark.parametrize(
    ("process", "queue_name"),
    [("worker", keys.QUEUE_TRAINING), ("answer-workers", keys.QUEUE_ANSWERS)],
)
def test_a_job_enqueued_after_a_worker_is_killed_is_run_by_its_replacement(
    process: str, queue_name: str, redis_url: str, redis_conn: Redis, tmp_path: Path
) -> None:
    argv = _procfile_argv(process, redis_url)
    pooled = argv[1] == "worker-pool"
    assert pooled or "--with-scheduler" in argv, "rq pools start their workers with one"
    first = start(argv, _env(redis_url), tmp_path / "first.log")
    replacement: Process | None = None
    scheduler = None
    try:
        scheduler = poll_until(lambda: _scheduler_pid(redis_conn, queue_name), 20, 0.05)
        assert scheduler, f"the scheduler did not start:\n{first.output()[-3000:]}"
        assert poll_until(lambda: _blocked_readers(redis_conn), 20, 0.05), first.output()
        worker = _parent(scheduler)  # the worker that forked it (in a pool: one of its own)
        assert worker != scheduler

        # The worker dies; nothing it forked is told.
        if pooled:
            os.kill(worker, signal.SIGKILL)  # the pool starts another in its place
        else:
            first.stop(signal.SIGKILL)
        # The dead process's blocked read must end with it (bounded wait, then go on: the
        # assertions below say what happened).
        poll_until(lambda: _alive(worker) is False and not _blocked_readers(redis_conn), 5, 0.05)
        job = Queue(queue_name, connection=redis_conn).enqueue(JOB, 21)

        if not pooled:
            replacement = start(argv, _env(redis_url), tmp_path / "replacement.log")
        finished = poll_until(
            lambda: Job.fetch(job.id, connection=redis_conn).get_status() == JobStatus.FINISHED,
            30,
            0.05,
        )
        assert finished, (
            f"the job was lost (status {job.get_status(refresh=True)}, queued "
            f"{redis_conn.lrange(f'rq:queue:{queue_name}', 0, -1)}):\n"
            f"{(replacement or first).output()[-3000:]}"
        )
        assert Job.fetch(job.id, connection=redis_conn).return_value() == 42
        assert poll_until(lambda: not _alive(scheduler), 10, 0.05), (
            "the dead worker's scheduler outlived it"
        )
    finally:
        if replacement is not None:
            replacement.stop()
        first.stop()
        if scheduler and _alive(scheduler):
            os.kill(scheduler, signal.SIGKILL)
