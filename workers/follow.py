"""Following a run's fine-tuning job (the ``poll`` and ``cancel`` jobs).

A poll reads the job once, records new metric points and events, reports progress at
most every ``progress_post_interval_s``, and then ends the run (failed, cancelled: the
examples are handed back), hands it to evaluation (succeeded), or polls again later. A
newer poll chain makes older ones stop (``poll_seq``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from core import keys
from core.errors import TuneloopError
from core.model_registry import record_model
from core.run_control import LoopContext, enqueue_evaluation, finish, report, schedule_poll
from core.run_events import RunEvent
from core.runs import RunStatus, hand_back_examples, load_run, update_run
from workers.training.base import JobStatus

logger = logging.getLogger(__name__)


def poll(ctx: LoopContext, run_id: str, seq: int | None = None) -> JobStatus | None:
    """Read the job once: record new events, report, end the run or poll again later."""
    redis = ctx.redis
    run = load_run(redis, run_id)
    if run is None or run.status is not RunStatus.TRAINING:
        return None
    if seq is not None and seq != run.poll_seq:
        logger.info("poll chain %s of %s superseded by %s", seq, run_id, run.poll_seq)
        return None
    try:
        state = ctx.trainer.poll(run.job_id, after_event=run.last_event_id or None)
    except TuneloopError:
        # The provider may be briefly unreachable: keep following, but let this poll fail
        # visibly (logged, RQ's failed registry).
        schedule_poll(ctx, run_id)
        raise
    fields: dict[str, Any] = {"job_status": state.status.value}
    if state.events:
        points = [
            json.dumps(
                {
                    "step": e.step,
                    "train_loss": e.train_loss,
                    "valid_loss": e.valid_loss,
                    "token_accuracy": e.token_accuracy,
                }
            )
            for e in state.events
            if e.step is not None and (e.train_loss is not None or e.valid_loss is not None)
        ]
        if points:
            redis.rpush(keys.run_metrics(run_id), *points)
        last = state.events[-1]
        fields.update(last_event_id=last.id, last_event=json.dumps(dataclasses.asdict(last)))
    if state.trained_tokens:
        fields["trained_tokens"] = state.trained_tokens
    update_run(redis, run_id, **fields)
    if state.status is JobStatus.SUCCEEDED:
        if not state.result_model:
            hand_back_examples(redis, run)
            finish(
                ctx,
                run,
                RunStatus.FAILED,
                RunEvent.FAILED,
                error="the job succeeded without a model",
            )
            return state.status
        record_model(ctx, run, state.result_model, state.details)
        update_run(redis, run_id, status=RunStatus.EVALUATING, candidate_model=state.result_model)
        report(ctx, run_id, RunEvent.TRAINED)
        enqueue_evaluation(ctx, run_id)
    elif state.status is JobStatus.FAILED:
        hand_back_examples(redis, run)
        finish(
            ctx,
            run,
            RunStatus.FAILED,
            RunEvent.FAILED,
            error=(state.error or "the job failed")[:500],
        )
    elif state.status is JobStatus.CANCELLED:
        hand_back_examples(redis, run)
        finish(ctx, run, RunStatus.CANCELLED, RunEvent.CANCELLED)
    else:
        interval = ctx.settings.training.progress_post_interval_s
        if state.events and time.time() - run.last_post_at >= interval:
            update_run(redis, run_id, last_post_at=time.time())
            report(ctx, run_id, RunEvent.PROGRESS)
        schedule_poll(ctx, run_id)
    return state.status


def cancel_training(ctx: LoopContext, run_id: str) -> None:
    """Cancel a run's fine-tuning job and poll at once so the run ends now."""
    run = load_run(ctx.redis, run_id)
    if run is None or run.status is not RunStatus.TRAINING:
        return
    ctx.trainer.cancel(run.job_id)
    schedule_poll(ctx, run_id, now=True)
