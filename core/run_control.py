"""Starting, supervising and cancelling training runs: what the web process does.

A run is moved along by short RQ jobs on the ``training`` queue (named here, defined in
:mod:`workers.jobs`), never one worker blocked for the length of a fine-tuning job:
:func:`request_run` (``/finetune retrain``) → build → poll (every ``poll_interval_s``) →
evaluate. What happens is recorded for Slack in ``keys.RUN_EVENTS``
(:mod:`core.run_events`), never posted from a worker.

One run at a time: ``keys.RUN_LOCK`` is taken with SET NX; a second request is told
which run is going. A run whose worker died is noticed (its RQ job is gone or its
heartbeat is old) by the next request or by the web processes' periodic check
(:func:`supervise_active`) and cleaned up, adopted when it had already created a job
(:meth:`Trainer.find_job`), or followed by a new poll chain.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from openai import OpenAI
from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus

from core import canary, keys, metrics, run_events
from core.errors import TuneloopError
from core.replies import Fields
from core.run_events import RunEvent
from core.runs import (
    Run,
    RunStatus,
    active_run,
    commit_job,
    load_run,
    new_run_id,
    release_lock,
    to_str,
    transition,
    update_run,
)
from core.settings import Settings
from core.store import Store

if TYPE_CHECKING:
    from workers.training.base import Trainer

logger = logging.getLogger(__name__)

BUILD_JOB = "workers.jobs.build_job"
POLL_JOB = "workers.jobs.poll_job"
EVALUATE_JOB = "workers.jobs.evaluate_job"
CANCEL_JOB = "workers.jobs.cancel_job"
PROMOTE_JOB = "workers.jobs.promote_job"
DECIDE_CANARY_JOB = "workers.jobs.decide_canary_job"
EXPORT_JOB = "workers.jobs.export_job"
"""The training queue's entry points, enqueued by name (see :mod:`workers.jobs`)."""
BUILD_TIMEOUT_S = 3 * 3600
SHORT_TIMEOUT_S = 600
EVALUATE_TIMEOUT_S = 3600
RESULT_TTL_S = 86400
FAILURE_TTL_S = 30 * 86400


# --- the context a job works in ------------------------------------------------------------
@dataclass
class LoopContext:
    """Settings and clients; built per RQ job (cheap) or given explicitly by callers.

    The trainer is built on first use from ``workers.training`` (the backends live with
    the workers; the web process needs one only to make a model servable on rollback).
    """

    settings: Settings
    redis: Redis
    llm: OpenAI | None = None

    @cached_property
    def trainer(self) -> Trainer:
        """The configured backend."""
        from workers.training import make_trainer

        return make_trainer(self.settings, self.redis, self.llm)

    @cached_property
    def queue(self) -> Queue:
        """The training queue."""
        return Queue(keys.QUEUE_TRAINING, connection=self.redis)

    @cached_property
    def store(self) -> Store:
        """Answers and the current-model pointer."""
        return Store(self.redis, retention_s=self.settings.retention.unrated_days * 86400)

    @property
    def base_model(self) -> str:
        """The configured base model (what a run starts from before any promotion)."""
        return self.settings.model.base_model

    def current_model(self) -> str:
        """The model the bot answers with now."""
        return self.store.current_model(self.base_model)


# --- scheduling and reporting --------------------------------------------------------------
def enqueue(
    ctx: LoopContext, func: str, *args: Any, job_id: str | None = None, **opts: Any
) -> None:
    """Queue a training-queue job by name with the loop's timeouts and retention."""
    ctx.queue.enqueue(
        func,
        *args,
        job_id=job_id,
        job_timeout=opts.pop("job_timeout", SHORT_TIMEOUT_S),
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        **opts,
    )


def report(ctx: LoopContext, run_id: str, kind: RunEvent) -> None:
    """Record for Slack that something happened to a run (the web processes post it)."""
    try:
        run_events.publish(ctx.redis, run_id, kind)
    except Exception:  # noqa: BLE001 - a report never stops the loop
        logger.exception("could not record the %s report of %s", kind.value, run_id)


def rq_status(redis: Redis, job_id: str) -> RQStatus | None:
    """An RQ job's status, None once it is gone (how a dead worker is noticed)."""
    try:
        return Job.fetch(job_id, connection=redis).get_status()
    except NoSuchJobError:
        return None


def schedule_poll(ctx: LoopContext, run_id: str, *, now: bool = False) -> int:
    """Start (or restart) the poll chain; a newer chain makes older ones stop."""
    seq = int(ctx.redis.hincrby(keys.run(run_id), "poll_seq", 1))
    job_id = f"poll-{run_id}-{seq}"
    if now:
        enqueue(ctx, POLL_JOB, run_id, seq, job_id=job_id)
    else:
        delay = timedelta(seconds=ctx.settings.training.poll_interval_s)
        ctx.queue.enqueue_in(
            delay,
            POLL_JOB,
            run_id,
            seq,
            job_id=job_id,
            job_timeout=SHORT_TIMEOUT_S,
            result_ttl=RESULT_TTL_S,
            failure_ttl=FAILURE_TTL_S,
        )
    return seq


def enqueue_evaluation(ctx: LoopContext, run_id: str) -> None:
    """Queue the run's evaluation (one job id per run, so a re-queue replaces it)."""
    enqueue(ctx, EVALUATE_JOB, run_id, job_id=f"evaluate-{run_id}", job_timeout=EVALUATE_TIMEOUT_S)


def finish(ctx: LoopContext, run: Run, status: RunStatus, kind: RunEvent, **fields: Any) -> None:
    """End a run: final status and its report recorded together, lock released."""
    values: Fields = {name: to_str(value) for name, value in fields.items()}
    with ctx.redis.pipeline() as pipe:
        pipe.hset(
            keys.run(run.run_id),
            mapping={
                **values,
                "status": status.value,
                "finished_at": str(time.time()),
                "updated_at": str(time.time()),
            },
        )
        run_events.publish(pipe, run.run_id, kind)
        pipe.execute()
    release_lock(ctx.redis, run.run_id)
    metrics.incr(ctx.redis, "tuneloop_training_runs", status=status.value)
    logger.info("run %s ended: %s", run.run_id, status.value)


# --- asking for a run ----------------------------------------------------------------------
@dataclass(frozen=True)
class RunRequest:
    """What ``/finetune retrain`` got: a new run, or the run already going."""

    run: Run | None
    busy: Run | None = None


def request_run(
    ctx: LoopContext,
    *,
    admin: str,
    channel: str,
    dry_run: bool = False,
    announce: Callable[[Run], tuple[str, str]] | None = None,
) -> RunRequest:
    """Create a run and queue its build, unless another run is going (then name it).

    Dry runs consume nothing and upload nothing, so they take no lock. ``announce``
    (the bot's) starts the run's Slack thread before any job can report into it and
    returns (channel, thread ts).
    """
    redis = ctx.redis
    now = time.time()
    run = Run(
        run_id=new_run_id(),
        status=RunStatus.QUEUED,
        admin=admin,
        channel=channel,
        created_at=now,
        updated_at=now,
        dry_run=dry_run,
        backend=ctx.settings.training.backend.value,
        method=ctx.settings.training.method.value,
    )
    redis.hset(keys.run(run.run_id), mapping=run.to_hash())
    if not dry_run:
        for _ in range(3):
            if redis.set(keys.RUN_LOCK, run.run_id, nx=True):
                break
            holder = active_run(redis)
            if holder is not None and supervise(ctx, holder):
                redis.delete(keys.run(run.run_id))
                return RunRequest(None, busy=load_run(redis, holder.run_id))
            if holder is None:
                redis.delete(keys.RUN_LOCK)  # a lock without a run record
        else:
            redis.delete(keys.run(run.run_id))
            holder = active_run(redis)
            return RunRequest(None, busy=holder)
    if announce is not None:
        try:
            run.channel, run.thread_ts = announce(run)
            update_run(redis, run.run_id, channel=run.channel, thread_ts=run.thread_ts)
        except Exception:  # noqa: BLE001 - the run goes on; reports go to the channel
            logger.exception("could not announce run %s", run.run_id)
    redis.zadd(keys.RUNS, {run.run_id: now})
    enqueue(ctx, BUILD_JOB, run.run_id, job_id=f"build-{run.run_id}", job_timeout=BUILD_TIMEOUT_S)
    logger.info("run %s queued by %s (dry run: %s)", run.run_id, admin, dry_run)
    return RunRequest(run)


def supervise(ctx: LoopContext, run: Run) -> bool:
    """Whether ``run`` (holding the lock) is still going; a dead one is finished or adopted.

    Called when another run is asked for. A run whose build job is gone, failed, or
    silent for ``stale_run_s`` is dead: if it already created a fine-tuning job (found by
    the job's metadata) it is adopted and followed; otherwise it is marked failed and its
    examples stay pending. A training or evaluating run whose follow-up job died gets a
    new one.
    """
    redis = ctx.redis
    if not run.status.active:
        release_lock(redis, run.run_id)
        return False
    if run.status in (RunStatus.QUEUED, RunStatus.BUILDING, RunStatus.STARTING):
        status = rq_status(redis, f"build-{run.run_id}")
        silent = time.time() - run.updated_at > ctx.settings.training.stale_run_s
        if run.status is RunStatus.QUEUED:
            # A run is queued an instant after it takes the lock: only a failed job, or
            # none for a long time, means it is dead.
            dead = status in (RQStatus.FAILED, RQStatus.STOPPED, RQStatus.CANCELED) or (
                status is None and silent
            )
        else:
            dead = status in (None, RQStatus.FAILED, RQStatus.STOPPED, RQStatus.CANCELED) or (
                silent and status is not RQStatus.QUEUED
            )
        if not dead:
            return True
        if run.status is RunStatus.STARTING and _adopt(ctx, run) is not False:
            return True  # adopted, or its job could not be looked for: never failed blind
        logger.warning("run %s died while %s; cleaning up", run.run_id, run.status.value)
        finish(
            ctx,
            run,
            RunStatus.FAILED,
            RunEvent.FAILED,
            error=f"the run stopped while {run.status.value}; "
            "no fine-tuning job was created and no example was consumed",
        )
        return False
    if run.status is RunStatus.TRAINING:
        status = rq_status(redis, f"poll-{run.run_id}-{run.poll_seq}")
        if status in (
            None,
            RQStatus.FAILED,
            RQStatus.STOPPED,
            RQStatus.CANCELED,
            RQStatus.FINISHED,
        ):
            logger.warning("run %s had nobody following its job; polling again", run.run_id)
            schedule_poll(ctx, run.run_id, now=True)
        return True
    status = rq_status(redis, f"evaluate-{run.run_id}")
    if status in (None, RQStatus.FAILED, RQStatus.STOPPED, RQStatus.CANCELED, RQStatus.FINISHED):
        logger.warning("run %s had nobody evaluating it; evaluating again", run.run_id)
        enqueue_evaluation(ctx, run.run_id)
    return True


def supervise_active(ctx: LoopContext, every_s: float) -> bool:
    """The periodic check every web process makes: the run going, if any, is supervised,
    so a poll chain broken by a dead worker or a Redis outage resumes by itself instead of
    waiting for the next ``/finetune retrain``. A short lock makes one process do it per
    period. True if a check ran."""
    if not ctx.redis.set(keys.SUPERVISE_LOCK, "1", nx=True, px=max(1, int(every_s * 1000))):
        return False
    run = active_run(ctx.redis)
    if run is not None:
        supervise(ctx, run)
    canary_tick(ctx)
    return True


_WAITING = (RQStatus.QUEUED, RQStatus.STARTED, RQStatus.SCHEDULED, RQStatus.DEFERRED)


def canary_tick(ctx: LoopContext) -> bool:
    """The periodic check of the canary: queue a decision when its votes or time call for
    one (or a decider died mid-way). Cheap: reads only. True if a decision was queued."""
    going = canary.active(ctx.redis)
    if going is None:
        return False
    if going.state is canary.CanaryState.RUNNING:
        seen = canary.progress(ctx.redis, going)
        if canary.verdict(seen, ctx.settings.canary).outcome is canary.Outcome.CONTINUE:
            return False
    request_canary_decision(ctx)
    return True


def request_canary_decision(
    ctx: LoopContext, *, force: canary.Outcome | None = None, by: str = "canary"
) -> None:
    """Queue the canary's decision job (what an admin's ``/finetune canary promote`` does).
    The periodic check queues one job per canary at a time, however often it runs while
    the training worker is busy."""
    if force is not None:
        enqueue(ctx, DECIDE_CANARY_JOB, force.value, by)
        return
    going = canary.active(ctx.redis)
    if going is None:
        return
    job_id = f"decide-{going.canary_id}"
    if rq_status(ctx.redis, job_id) in _WAITING:
        return
    enqueue(ctx, DECIDE_CANARY_JOB, "", by, job_id=job_id)


def _adopt(ctx: LoopContext, run: Run) -> bool | None:
    """A run that died between creating its job and recording it: record it now.

    True when adopted, False when the backend has no job for the run (it may be failed),
    None when the backend could not be asked: the run is left as it is and looked at
    again on the next check, so a job that is training is never left behind a failed run.
    """
    try:
        job_id = ctx.trainer.find_job(run.run_id)
    except TuneloopError:
        logger.exception("could not look for the job of run %s", run.run_id)
        return None
    if not job_id:
        return False
    logger.warning("run %s died after creating job %s: adopting it", run.run_id, job_id)
    heldout = json.loads(run.heldout) if run.heldout else []
    if not commit_job(ctx.redis, run, job_id, heldout):
        # Another run took over meanwhile: this job would train on examples it now owns.
        ctx.trainer.cancel(job_id)
        return False
    report(ctx, run.run_id, RunEvent.STARTED)
    schedule_poll(ctx, run.run_id, now=True)
    return True


# --- cancelling ----------------------------------------------------------------------------
def request_cancel(ctx: LoopContext, *, by: str) -> Run | None:
    """Ask the running run to stop; None when no run is going."""
    run = active_run(ctx.redis)
    if run is None or not run.status.active:
        return None
    update_run(ctx.redis, run.run_id, cancel_requested=True, cancelled_by=by)
    if run.status is RunStatus.QUEUED and transition(
        ctx.redis, run.run_id, RunStatus.QUEUED, RunStatus.CANCELLED, finished_at=time.time()
    ):
        try:
            Job.fetch(f"build-{run.run_id}", connection=ctx.redis).cancel()
        except Exception:  # noqa: BLE001 - gone or already taken: the build sees the status
            logger.info("build job of %s could not be cancelled", run.run_id)
        release_lock(ctx.redis, run.run_id)
        report(ctx, run.run_id, RunEvent.CANCELLED)
    elif run.status is RunStatus.TRAINING:
        enqueue(ctx, CANCEL_JOB, run.run_id, by)
    return load_run(ctx.redis, run.run_id)
