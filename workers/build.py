"""Building a run's training set and starting its fine-tuning job (the ``build`` job).

The set is built from the approved examples after the cursor; a set too small (or a dry
run) ends the run there. Otherwise the backend shapes the hyper-parameters, starts the
job, and the job is recorded on the run together with the cursor's move
(:func:`core.runs.commit_job`). Whatever breaks, the run gives up the lock; a job
created before the break was recorded nowhere, so it is cancelled.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from core.model_registry import model_info
from core.run_control import LoopContext, finish, report, schedule_poll
from core.run_events import RunEvent
from core.runs import Run, RunStatus, commit_job, load_run, read_cursor, transition, update_run
from workers import trainset
from workers.training.base import (
    RUN_METADATA_KEY,
    SET_METADATA_KEY,
    Lineage,
    StartUnconfirmed,
)

logger = logging.getLogger(__name__)


def hyperparameters(ctx: LoopContext, n_train_new: int, current: str) -> tuple[dict[str, Any], str]:
    """The job's hyper-parameters, shaped by the backend from what ``current`` was
    trained with, and why the learning rate was lowered (if it was)."""
    info = model_info(ctx.redis, current) or {}
    prior = Lineage(
        trained_examples=int(info.get("trained_examples", 0)),
        hyperparameters=info.get("hyperparameters") or {},
    )
    return ctx.trainer.hyperparameters(n_train_new, prior)


def build_and_start(ctx: LoopContext, run_id: str) -> None:
    """Build the run's set; if it is large enough (and not a dry run), start the job."""
    redis = ctx.redis
    run = load_run(redis, run_id)
    if run is None or run.status is not RunStatus.QUEUED:
        logger.info("run %s is %s: nothing to build", run_id, run.status.value if run else "gone")
        return
    if run.cancel_requested:
        finish(ctx, run, RunStatus.CANCELLED, RunEvent.CANCELLED)
        return
    if not transition(redis, run_id, RunStatus.QUEUED, RunStatus.BUILDING):
        logger.info("run %s left the queue meanwhile (cancelled?): not built", run_id)
        return
    created: list[str] = []
    try:
        _build_and_start(ctx, run, created)
    except StartUnconfirmed:
        # The job may exist and train: the run keeps its lock, and the next check
        # (supervise) adopts the job or, finding none, fails the run.
        logger.warning("run %s: its job may exist; the next check adopts it or fails", run_id)
        raise
    except Exception as exc:
        # Whatever broke, the run must not keep the lock; a job created before the
        # failure was recorded nowhere, so it is cancelled rather than left to train.
        for job_id in created:
            try:
                ctx.trainer.cancel(job_id)
            except Exception:  # noqa: BLE001
                logger.exception("could not cancel job %s of failed run %s", job_id, run_id)
        now = load_run(redis, run_id)
        if now is not None and now.status in (RunStatus.BUILDING, RunStatus.STARTING):
            finish(ctx, now, RunStatus.FAILED, RunEvent.FAILED, error=str(exc)[:500])
        raise


def _build_and_start(ctx: LoopContext, run: Run, created: list[str]) -> None:
    """The work of :func:`build_and_start`; ``created`` gets the job id once there is one."""
    redis = ctx.redis
    run_id = run.run_id
    trainer = ctx.trainer
    current = ctx.current_model()
    cursor_from = read_cursor(redis)
    upto = trainset.last_id(redis)
    set_id, version = trainset.next_version(redis)
    min_train = max(ctx.settings.training.min_examples, trainer.min_examples)
    update_run(
        redis,
        run_id,
        base_model=current,
        set_id=set_id,
        cursor_from=cursor_from,
        cursor_to=upto or "",
        backend=trainer.name,
    )
    request = trainset.BuildRequest(
        set_id=set_id,
        version=version,
        after_id=cursor_from or "0-0",
        upto_id=upto,
        base_model=current,
        min_train=min_train,
        run_id=run_id,
    )
    if upto is None or (cursor_from and upto == cursor_from):
        built = None
        n_new, missing = 0, min_train
    else:
        built = trainset.build(
            redis, ctx.settings, request, heartbeat=lambda: update_run(redis, run_id)
        )
        n_new, missing = built.n_new, built.missing
    counts = built.manifest["counts"] if built else {}
    update_run(
        redis,
        run_id,
        n_new=n_new,
        n_train=counts.get("train", 0),
        n_valid=counts.get("valid", 0),
        missing=missing,
        heldout=json.dumps(list(built.heldout)) if built else "",
    )
    if missing:
        finish(ctx, run, RunStatus.TOO_FEW, RunEvent.TOO_FEW)
        return
    assert built is not None
    if run.dry_run:
        finish(ctx, run, RunStatus.DRY_RUN, RunEvent.DRY_RUN)
        return
    if (load_run(redis, run_id) or run).cancel_requested:
        finish(ctx, run, RunStatus.CANCELLED, RunEvent.CANCELLED)
        return
    hyper, note = hyperparameters(ctx, counts.get("train_new", 0), current)
    update_run(
        redis, run_id, status=RunStatus.STARTING, hyperparameters=json.dumps(hyper), lr_note=note
    )
    job_id = trainer.start(
        built.files,
        base_model=current,
        hyperparameters=hyper,
        suffix=ctx.settings.training.suffix,
        metadata={RUN_METADATA_KEY: run_id, SET_METADATA_KEY: set_id},
    )
    created.append(job_id)
    run = load_run(redis, run_id) or run
    if not commit_job(redis, run, job_id, list(built.heldout)):
        created.clear()
        trainer.cancel(job_id)
        finish(
            ctx,
            run,
            RunStatus.FAILED,
            RunEvent.FAILED,
            error="another run took over meanwhile (lock or cursor moved); the job was cancelled",
        )
        return
    created.clear()  # recorded: from here on the poll follows it, whatever happens
    report(ctx, run_id, RunEvent.STARTED)
    if (load_run(redis, run_id) or run).cancel_requested:
        trainer.cancel(job_id)
    schedule_poll(ctx, run_id, now=True)
