"""Faults injected for real into training runs: Redis restarted (AOF on) in the middle of a
run that a real ``rq worker --with-scheduler`` follows, Redis's reply to the commit that
consumes the examples lost, and the worker SIGKILLed while it creates the fine-tuning job
or polls it. Each test has a redis-server of its own (``own_redis``)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from rq import Queue, Worker
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from bot import messages
from bot.dispatch import start_journal
from bot.journal import AnswerJournal
from core import approved, keys, run_control, runs
from core.runs import RunStatus
from core.settings import ROOT
from tests.bot import test_faults
from tests.bot.conftest import Bot
from tests.bot.test_faults import RedisServer, kill_worker
from tests.bot.test_finetune import (
    BASE,
    command,
    only_run,
    seed,
    training_lines,
    wait,
    work,
)

own_redis = test_faults.own_redis  # a redis-server of the test's own, AOF on, restartable

RQ = str(Path(sys.executable).parent / "rq")
JOBS = "/v1/fine_tuning/jobs"


@pytest.fixture
def bot_settings(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Sets in the test's folder, polls due at once (or as a test's ``indirect`` param
    says), every event reported."""
    training = {
        "sets_dir": str(tmp_path / "sets"),
        "poll_interval_s": 0.01,
        "progress_post_interval_s": 0,
        "replay_fraction": 0.0,
    }
    return {"training": {**training, **getattr(request, "param", {})}}


@pytest.fixture
def bot_redis_url(own_redis: RedisServer, request: pytest.FixtureRequest) -> str:
    """The bot (and every worker, through REDIS_URL) on the test's own Redis, or on the
    reply-losing proxy in front of it when the test asks for ``redis_proxy``."""
    if "redis_proxy" in request.fixturenames:
        return request.getfixturevalue("redis_proxy").url
    return f"redis://127.0.0.1:{own_redis.port}/0"


# --- helpers ----------------------------------------------------------------------------------
@contextmanager
def rq_worker(log: Path, *args: str) -> Iterator[subprocess.Popen]:
    """A real ``rq worker`` for the training queue on the bot's Redis, in a process group of
    its own; whatever is left of it is SIGKILLed on the way out (see :func:`kill_worker`)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [RQ, "worker", "--url", os.environ["REDIS_URL"], *args, keys.QUEUE_TRAINING],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        kill_worker(proc)


def newest_id(bot: Bot) -> str:
    return bot.redis.xrevrange(keys.APPROVED_LOG, count=1)[0][0].decode()


def cursor(bot: Bot) -> str | None:
    raw = bot.redis.get(keys.APPROVED_CURSOR)
    return raw.decode() if raw else None


def training_queue(bot: Bot) -> Queue:
    return Queue(keys.QUEUE_TRAINING, connection=bot.redis)


def no_job_at_hand(queue: Queue) -> bool:
    """No job queued, in transit (RQ's intermediate queue) or running."""
    return not (
        queue.count
        or queue.connection.llen(queue.intermediate_queue_key)
        or StartedJobRegistry(queue=queue).get_job_ids(cleanup=False)
    )


def questions(bot: Bot, job: dict[str, Any]) -> set[str]:
    """The user questions a fine-tuning job was given (training and validation files)."""
    return {
        line["messages"][1]["content"]
        for key in ("training_file", "validation_file")
        if job[key]
        for line in training_lines(bot, job, key)
    }


def asked(start: int, n: int) -> set[str]:
    return {f"How do I configure service {i}?" for i in range(start, start + n)}


def finish(bot: Bot, run: runs.Run) -> runs.Run:
    """Let the provider finish the run's job; one worker pass polls, evaluates, promotes."""
    bot.openai.finish_job(run.job_id)
    work(bot)
    return runs.load_run(bot.redis, run.run_id)


def retrain_too_few(bot: Bot, new: int) -> None:
    """``/finetune retrain`` now builds a set of ``new`` examples and starts no job."""
    jobs = len(bot.openai.jobs())
    assert "started" in command(bot, "retrain")["text"]
    work(bot)
    run = only_run(bot)
    assert run.status is RunStatus.TOO_FEW and run.n_new == new
    told = bot.slack.messages(run.channel, run.thread_ts)[-1]["text"]
    assert told.startswith(f"Not enough examples to train: {new} usable new example(s)")
    assert len(bot.openai.jobs()) == jobs


# --- Redis restarted in the middle of a run -----------------------------------------------------
@pytest.mark.parametrize("bot_settings", [{"poll_interval_s": 2.0}], indirect=True)
def test_redis_restart_mid_training_run_resumes_and_consumes_each_example_once(
    bot: Bot, own_redis: RedisServer, tmp_path: Path
) -> None:
    """What carries a run over a restart: the run, the lock, the cursor and the chain's next
    poll (a job in RQ's scheduled registry) come back from the append-only file; the worker,
    blocked in its dequeue, retries it, and the run goes on to its promotion.

    The restart is made while the worker waits between two polls (where a production
    worker, polling every 30 s, nearly always is): RQ rides out a lost connection only there
    (``rq worker --url`` gives redis-py no retries). A worker caught between two jobs exits
    (its process manager must start it again); a job caught half-way would fail, and a
    failed poll breaks the chain until the next ``/finetune retrain`` (see the last test).
    The scheduler process dies if it touches Redis during the outage; the worker starts it
    again at its next maintenance, which runs between two dequeues: within a second here
    (``--worker-ttl 16``), after up to ``worker_ttl - 15`` = 405 s idle with RQ's defaults."""
    seed(bot, 12)
    consumed_upto = newest_id(bot)
    assert "started" in command(bot, "retrain")["text"]
    run_id = only_run(bot).run_id
    queue = training_queue(bot)
    scheduled = ScheduledJobRegistry(queue=queue)

    def run() -> runs.Run:
        return runs.load_run(bot.redis, run_id)

    def steps() -> int:
        return len(runs.run_metrics(bot.redis, run_id))

    quiet_since: dict[str, float] = {}

    def between_polls() -> str | None:
        """The chain's next link once it has been scheduled ahead, with no job queued, in
        transit or running and the worker idle, for 0.1 s: the worker is then blocked in
        its dequeue, the one place where RQ rides out a lost connection."""
        link = f"poll-{run_id}-{run().poll_seq}"
        due = bot.redis.zscore(scheduled.key, link) or 0.0
        workers = Worker.all(queue=queue)
        quiet = (
            len(workers) == 1
            and workers[0].get_state() == "idle"
            and no_job_at_hand(queue)
            and due - time.time() > 0.8  # RQ's scheduler moves it once due, in whole seconds
        )
        if not quiet:
            quiet_since.clear()
            return None
        return (
            link
            if time.monotonic() - quiet_since.setdefault(link, time.monotonic()) > 0.1
            else None
        )

    worker_args = ("-w", "rq.worker.SimpleWorker", "--with-scheduler")
    worker_args += ("--maintenance-interval", "1", "--worker-ttl", "16")
    with rq_worker(tmp_path / "worker.log", *worker_args) as worker:
        job_id = wait(lambda: run().job_id, timeout=15, what="the fine-tuning job")
        assert cursor(bot) == consumed_upto, "consumed when the job was created"
        for _ in range(3):  # files validated, running, step 1
            bot.openai.advance_job(job_id)
        wait(lambda: steps() == 1, timeout=10, what="step 1 recorded by a poll")
        link = wait(between_polls, timeout=10, what="the worker to wait for the next poll")
        due = bot.redis.zscore(scheduled.key, link)

        own_redis.stop()
        own_redis.start()  # same dir: the append-only file brings everything back

        assert bot.redis.zscore(scheduled.key, link) == due, "the next poll is still scheduled"
        assert run().status is RunStatus.TRAINING
        assert bot.redis.get(keys.RUN_LOCK).decode() == run_id
        assert cursor(bot) == consumed_upto
        ctx = run_control.LoopContext(bot.settings, bot.redis, bot.services.llm)
        assert run_control.supervise(ctx, run()), "the run is alive"
        assert f"poll-{run_id}-{run().poll_seq}" == link, "and followed: no second chain"
        seed(bot, 3, start=100)  # approved right after the restart: for the next run

        bot.openai.advance_job(job_id)  # step 2
        wait(lambda: steps() == 2, timeout=20, what="the poll chain to go on after the restart")
        bot.openai.finish_job(job_id)
        wait(lambda: run().status is RunStatus.PROMOTED, timeout=20, what="the promotion")
        wait(lambda: no_job_at_hand(queue), timeout=10, what="the last reports")
        assert worker.poll() is None, "the worker rode out the restart"

    done = run()
    assert [m["step"] for m in runs.run_metrics(bot.redis, run_id)] == [1, 2, 3]
    assert bot.services.store.current_model(BASE) == done.candidate_model
    assert queue.failed_job_registry.get_job_ids() == [], "no job of the run failed"
    # Nothing approved was lost, nothing was trained twice.
    assert done.cursor_from == "" and done.cursor_to == consumed_upto == cursor(bot)
    assert approved.pending_count(bot.redis) == 3
    (job,) = bot.openai.jobs()
    assert job["id"] == done.job_id and questions(bot, job) == asked(0, 12)
    retrain_too_few(bot, new=3)
    assert cursor(bot) == consumed_upto and approved.pending_count(bot.redis) == 3


# --- Redis's reply to the commit lost ----------------------------------------------------------
CURSOR = keys.APPROVED_CURSOR.encode()
SET_CURSOR = b"$3\r\nSET\r\n$%d\r\n%s\r\n" % (len(CURSOR), CURSOR)  # in RESP
EXEC_REPLIED = re.compile(rb"\+QUEUED\r\n\*\d+\r\n")  # EXEC's own reply (an array) has begun


class ReplyLosingProxy:
    """A TCP proxy in front of Redis that, once armed, loses one reply: it forwards the next
    transaction that moves the approved cursor (MULTI ... EXEC), waits until Redis has
    executed it, throws the answer away and closes the client's connection. The commit
    happened; the client never hears of it, as when Redis restarts (or the network drops)
    between executing an EXEC and sending its reply."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.armed = False
        self.lost: list[bytes] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            cut = threading.Event()
            threading.Thread(target=self._up, args=(client, server, cut), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, cut), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        pending = b""
        while data := _recv(client):
            pending = (pending + data)[-65536:]
            if pending.endswith(b"EXEC\r\n"):
                with self._lock:
                    if self.armed and b"MULTI" in pending and SET_CURSOR in pending:
                        self.armed = False
                        cut.set()
                pending = b""
            with suppress(OSError):
                server.sendall(data)
        _shut(client, server)

    def _down(self, server: socket.socket, client: socket.socket, cut: threading.Event) -> None:
        lost = b""
        while data := _recv(server):
            if not cut.is_set():
                with suppress(OSError):
                    client.sendall(data)
                continue
            lost += data
            if EXEC_REPLIED.search(lost):
                break
        if cut.is_set():
            with self._lock:
                self.lost.append(lost)
        _shut(client, server)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _shut(*socks: socket.socket) -> None:
    for sock in socks:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            sock.close()


@pytest.fixture
def redis_proxy(own_redis: RedisServer) -> Iterator[ReplyLosingProxy]:
    proxy = ReplyLosingProxy(own_redis.port)
    yield proxy
    proxy.close()


def test_a_lost_reply_to_the_commit_neither_cancels_the_job_nor_loses_the_examples(
    bot: Bot, redis_proxy: ReplyLosingProxy
) -> None:
    """redis-py turns the lost connection into a WatchError and ``_commit_job`` tries again:
    it must recognise its own commit (it used to read the moved cursor as another run's
    doing, cancel the job and fail the run with the cursor left moved: 12 examples gone)."""
    seed(bot, 12)
    consumed_upto = newest_id(bot)
    assert "started" in command(bot, "retrain")["text"]
    redis_proxy.armed = True
    work(bot)  # the build: the job is created, the commit's reply is lost, the worker retries

    (lost,) = redis_proxy.lost
    assert EXEC_REPLIED.search(lost), "Redis executed the commit; its client never heard of it"
    run = only_run(bot)
    (job,) = bot.openai.jobs()
    assert run.status is RunStatus.TRAINING and run.job_id == job["id"], run.error
    assert job["status"] != "cancelled"
    assert cursor(bot) == run.cursor_to == consumed_upto
    assert approved.pending_count(bot.redis) == 0
    assert bot.redis.get(keys.RUN_LOCK).decode() == run.run_id

    assert finish(bot, run).status is RunStatus.PROMOTED
    assert len(bot.openai.jobs()) == 1 and questions(bot, job) == asked(0, 12)
    retrain_too_few(bot, new=0)


# --- a worker SIGKILLed while it creates the fine-tuning job, or while it polls it --------------
@pytest.mark.parametrize("provider_created", [True, False], ids=["job-created", "no-job"])
def test_a_worker_killed_while_creating_the_job_frees_the_lock_and_consumes_once(
    bot: Bot, tmp_path: Path, provider_created: bool
) -> None:
    seed(bot, 12)
    if provider_created:
        # The creation request is slow; the provider creates the job after the worker died.
        bot.openai.fail_next(JOBS, hang_s=1.5)
    else:
        # The provider never gets to create it (the request would fail after the hang).
        bot.openai.fail_next(JOBS, hang_s=60, status=500)
    assert "started" in command(bot, "retrain")["text"]
    dead = only_run(bot)

    with rq_worker(tmp_path / "worker.log") as worker:
        wait(lambda: bot.openai.requests(JOBS), timeout=15, what="the job creation request")
        kill_worker(worker)

    stuck = runs.load_run(bot.redis, dead.run_id)
    assert stuck.status is RunStatus.STARTING and stuck.job_id == ""
    assert bot.redis.get(keys.RUN_LOCK).decode() == dead.run_id
    assert cursor(bot) is None and approved.pending_count(bot.redis) == 12
    if provider_created:
        wait(lambda: bot.openai.jobs(), timeout=10, what="the provider to create the job")

    # While RQ still counts the job as running (heartbeat not expired), nothing is decided.
    busy = command(bot, "retrain")["text"]
    assert f"`{dead.run_id}` is already going (starting" in busy
    assert runs.load_run(bot.redis, dead.run_id).status is RunStatus.STARTING

    # The killed worker's heartbeat expires: RQ marks the build job failed.
    registry = StartedJobRegistry(queue=training_queue(bot))
    assert f"build-{dead.run_id}" in registry.get_job_ids(cleanup=False)
    registry.cleanup(timestamp=time.time() + 3600)
    build = Job.fetch(f"build-{dead.run_id}", connection=bot.redis)
    assert build.get_status() is RQStatus.FAILED

    reply = command(bot, "retrain")["text"]
    if provider_created:
        # The job the dead worker created is found by its metadata and adopted.
        assert f"`{dead.run_id}` is already going (training" in reply
        (job,) = bot.openai.jobs()
        adopted = runs.load_run(bot.redis, dead.run_id)
        assert adopted.status is RunStatus.TRAINING and adopted.job_id == job["id"]
        assert cursor(bot) == adopted.cursor_to == newest_id(bot)
        assert approved.pending_count(bot.redis) == 0
        assert finish(bot, adopted).status is RunStatus.PROMOTED
        assert questions(bot, job) == asked(0, 12)
        seed(bot, 10, start=200)  # a new run can start, and trains only what is new
        assert "started" in command(bot, "retrain")["text"]
    else:
        # No job exists: the dead run is failed, its examples stay pending, a new run starts.
        assert reply == messages.RETRAIN_STARTED.format(run_id=only_run(bot).run_id, channel="C1")
        failed = runs.load_run(bot.redis, dead.run_id)
        assert failed.status is RunStatus.FAILED
        assert "no fine-tuning job was created" in failed.error
        assert cursor(bot) is None and approved.pending_count(bot.redis) == 12
    work(bot)
    fresh = only_run(bot)
    assert fresh.run_id != dead.run_id and fresh.status is RunStatus.TRAINING
    assert len(bot.openai.jobs()) == (2 if provider_created else 1)
    assert questions(bot, bot.openai.job(fresh.job_id)) == (
        asked(200, 10) if provider_created else asked(0, 12)
    )
    assert approved.pending_count(bot.redis) == 0 and cursor(bot) == newest_id(bot)
    assert finish(bot, fresh).status is RunStatus.PROMOTED
    assert bot.redis.get(keys.RUN_LOCK) is None


def test_a_worker_killed_while_polling_is_replaced_by_the_next_retrain(
    bot: Bot, tmp_path: Path
) -> None:
    """A poll that dies (its worker killed, or failed on a Redis error) breaks the chain:
    the next ``/finetune retrain`` (or the web process's periodic check, tested below)
    starts a new link once RQ has marked the dead one failed (the run stays "training"
    until then)."""
    seed(bot, 12)
    command(bot, "retrain")
    work(bot)
    run = only_run(bot)
    assert run.status is RunStatus.TRAINING
    path = f"{JOBS}/{run.job_id}"
    polled = len(bot.openai.requests(path))
    bot.openai.fail_next(path, hang_s=60, status=500)  # the next poll hangs at the provider

    with rq_worker(tmp_path / "worker.log", "--with-scheduler") as worker:
        wait(lambda: len(bot.openai.requests(path)) > polled, timeout=15, what="the next poll")
        kill_worker(worker)

    link = f"poll-{run.run_id}-{runs.load_run(bot.redis, run.run_id).poll_seq}"
    assert Job.fetch(link, connection=bot.redis).get_status() is RQStatus.STARTED
    # A retrain before the worker's heartbeat expired: the poll still counts as running.
    assert f"`{run.run_id}` is already going (training" in command(bot, "retrain")["text"]
    assert f"poll-{run.run_id}-{runs.load_run(bot.redis, run.run_id).poll_seq}" == link

    StartedJobRegistry(queue=training_queue(bot)).cleanup(timestamp=time.time() + 3600)
    assert Job.fetch(link, connection=bot.redis).get_status() is RQStatus.FAILED
    # The chain is broken; the next retrain notices it and starts a new one.
    assert f"`{run.run_id}` is already going (training" in command(bot, "retrain")["text"]
    assert runs.load_run(bot.redis, run.run_id).poll_seq == run.poll_seq + 1

    done = finish(bot, run)
    assert done.status is RunStatus.PROMOTED
    assert len(bot.openai.jobs()) == 1 and cursor(bot) == done.cursor_to == newest_id(bot)
    assert approved.pending_count(bot.redis) == 0
    retrain_too_few(bot, new=0)


def test_a_broken_poll_chain_resumes_by_itself_through_the_web_process_check(bot: Bot) -> None:
    """The next link of the chain is lost (a Redis restart without persistence, say): the
    web process's periodic check starts a new one, no ``/finetune retrain`` needed."""
    bot.services.journal.stop()  # run the web process's checks every second
    bot.services.__dict__["journal"] = AnswerJournal(
        bot.services.store, capacity=1, recover_after_s=3
    )
    start_journal(bot.services)
    seed(bot, 12)
    command(bot, "retrain")
    work(bot)
    run = only_run(bot)
    assert run.status is RunStatus.TRAINING
    Job.fetch(f"poll-{run.run_id}-{run.poll_seq}", connection=bot.redis).delete()

    wait(
        lambda: runs.load_run(bot.redis, run.run_id).poll_seq > run.poll_seq,
        timeout=15,
        what="the periodic check to start a new poll",
    )
    done = finish(bot, run)
    assert done.status is RunStatus.PROMOTED
    assert len(bot.openai.jobs()) == 1 and cursor(bot) == done.cursor_to == newest_id(bot)
