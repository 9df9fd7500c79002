"""Applying a canary's decision: promote the candidate or roll it back, once.

The web processes' periodic check (:func:`core.run_control.canary_tick`) only reads the
canary and its votes; when they call for a decision, or an admin asks for one,
``workers.jobs.decide_canary_job`` runs :func:`decide` on the training queue, which applies
it under the canary's lock (see :mod:`core.canary`). Slack is told through the run's
events (``canary_decided``).
"""

from __future__ import annotations

import logging

from core import canary
from core.canary import CanaryState, Decision, Outcome
from core.errors import TuneloopError
from core.model_registry import promote
from core.run_control import LoopContext, report
from core.run_events import RunEvent
from core.runs import RunStatus, load_run, update_run

logger = logging.getLogger(__name__)


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
        run = load_run(redis, taken.run_id) if taken.run_id else None
        if decision.outcome is Outcome.PROMOTE and ctx.current_model() != taken.candidate:
            if taken.candidate != ctx.base_model:
                ctx.trainer.activate(taken.candidate)
            promote(
                redis,
                settings,
                taken.candidate,
                by=f"canary ({decision.by})",
                reason=taken.run_id,
            )
        if run is not None and run.status is RunStatus.CANARY:
            promoted = decision.outcome is Outcome.PROMOTE
            update_run(redis, run.run_id, status=RunStatus.PROMOTED if promoted else RunStatus.HELD)
        canary.finish(redis, taken, decision)
    except TuneloopError:
        canary.release(redis, taken.canary_id)
        raise
    logger.info("canary %s: %s (%s)", taken.canary_id, decision.outcome.value, decision.reason)
    if taken.run_id:
        report(ctx, taken.run_id, RunEvent.CANARY_DECIDED)
    return decision
