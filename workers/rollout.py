"""Applying a canary's decision: promote the candidate or roll it back, once.

The web processes' periodic check (:func:`tick`, called from
``workers.loop.supervise_active``) only reads the canary and its votes; when they call
for a decision, or an admin asks for one, :data:`DECIDE_JOB` runs on the training queue
and :func:`decide` applies it under the canary's lock (see :mod:`core.canary`). Slack is
told through ``bot.reporting.report_run`` with kind ``canary_decided``.
"""

from __future__ import annotations

import logging

from rq.job import JobStatus as RQStatus

from core import canary
from core.canary import CanaryState, Decision, Outcome
from core.errors import TuneloopError
from workers import loop
from workers.loop import LoopContext, RunStatus

logger = logging.getLogger(__name__)

DECIDE_JOB = "workers.rollout.decide_job"
_WAITING = (RQStatus.QUEUED, RQStatus.STARTED, RQStatus.SCHEDULED, RQStatus.DEFERRED)


def decide(
    ctx: LoopContext, *, force: Outcome | None = None, by: str = "canary"
) -> Decision | None:
    """Check the canary and, when its votes (or ``force``) call for it, promote or roll
    back; the decision, or None when no canary is going or another process decides."""
    redis, settings = ctx.redis, ctx.settings
    going = canary.active(redis)
    if going is None:
        return None
    if going.state is CanaryState.DECIDING:
        decision = Decision.from_json(going.decision)
    else:
        seen = canary.progress(redis, going)
        decision = canary.verdict(seen, settings.canary, force=force, by=by)
        if decision.outcome is Outcome.CONTINUE:
            return decision
    taken = canary.begin_decision(redis, going.canary_id, decision)
    if taken is None:
        return None
    decision = Decision.from_json(taken.decision)
    try:
        run = loop.load_run(redis, taken.run_id) if taken.run_id else None
        if decision.outcome is Outcome.PROMOTE and ctx.current_model() != taken.candidate:
            if taken.candidate != ctx.base_model:
                ctx.trainer.activate(taken.candidate)
            loop.promote(
                redis,
                settings,
                taken.candidate,
                by=f"canary ({decision.by})",
                reason=taken.run_id,
            )
        if run is not None and run.status is RunStatus.CANARY:
            promoted = decision.outcome is Outcome.PROMOTE
            loop.update_run(
                redis, run.run_id, status=RunStatus.PROMOTED if promoted else RunStatus.HELD
            )
        canary.finish(redis, taken, decision)
    except TuneloopError:
        canary.release(redis, taken.canary_id)
        raise
    logger.info("canary %s: %s (%s)", taken.canary_id, decision.outcome.value, decision.reason)
    if taken.run_id:
        loop._report(ctx, taken.run_id, "canary_decided")
    return decision


def tick(ctx: LoopContext) -> bool:
    """The periodic check: queue a decision when the canary's votes or time call for one
    (or a decider died mid-way). Cheap: reads only. True if a decision was queued."""
    going = canary.active(ctx.redis)
    if going is None:
        return False
    if going.state is CanaryState.RUNNING:
        seen = canary.progress(ctx.redis, going)
        if canary.verdict(seen, ctx.settings.canary).outcome is Outcome.CONTINUE:
            return False
    request(ctx)
    return True


def request(ctx: LoopContext, *, force: Outcome | None = None, by: str = "canary") -> None:
    """Queue :func:`decide_job` (what an admin's ``/finetune canary promote`` does). The
    periodic check queues one job per canary at a time, however often it runs while the
    training worker is busy."""
    if force is not None:
        loop._enqueue(ctx, DECIDE_JOB, force.value, by)
        return
    going = canary.active(ctx.redis)
    if going is None:
        return
    job_id = f"decide-{going.canary_id}"
    if loop._rq_status(ctx.redis, job_id) in _WAITING:
        return
    loop._enqueue(ctx, DECIDE_JOB, "", by, job_id=job_id)


def decide_job(force: str = "", by: str = "canary") -> None:
    """RQ: decide the canary now if its votes call for it (or as ``force`` says)."""
    outcome = Outcome(force) if force else None
    loop._entry(f"deciding the canary for {by}", lambda ctx: decide(ctx, force=outcome, by=by))
