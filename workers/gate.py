"""The evaluation gate (the ``evaluate`` job) and promotion on an admin's request.

The candidate is made servable, then answers the held-out examples of its set and the
golden questions next to the current model (:mod:`workers.evaluation`); it is promoted
unless it is worse by more than the tolerance, else held with the evidence. A manual
promotion makes the model servable first and answers the admin either way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from core import canary, keys, run_events
from core.errors import TrainingError, TuneloopError
from core.model_registry import model_info, promote
from core.run_control import LoopContext, finish
from core.run_events import RunEvent
from core.runs import Run, RunStatus, load_run, update_run
from workers import evaluation, trainset

logger = logging.getLogger(__name__)


def evaluate_and_promote(ctx: LoopContext, run_id: str) -> None:
    """Compare the candidate with the current model; promote it if it is not worse."""
    redis = ctx.redis
    run = load_run(redis, run_id)
    if run is None or run.status is not RunStatus.EVALUATING:
        return
    current = ctx.current_model()
    settings = ctx.settings
    try:
        llm = ctx.llm
        if llm is None:
            raise TrainingError("evaluation needs an OpenAI client and the job context has none")
        ctx.trainer.activate(run.candidate_model)
        golden = evaluation.load_golden(settings.evaluation.eval_file, settings.model.system_prompt)
        manifest = trainset.load_manifest(redis, run.set_id) or {}
        valid = (manifest.get("files") or {}).get("valid")
        lines = (
            list(trainset.read_lines(Path(valid), limit=settings.evaluation.max_examples))
            if valid
            else []
        )
        items = (
            evaluation.validation_items(lines)
            + list(golden.items)
            + evaluation.stored_golden(redis, settings.model.system_prompt)
        )
        report = evaluation.evaluate(
            llm,
            settings,
            candidate=run.candidate_model,
            current=current,
            items=items,
            markers=golden.decline_markers,
        )
    except Exception as exc:
        finish(
            ctx, run, RunStatus.HELD, RunEvent.EVALUATED, error=f"evaluation failed: {exc}"[:500]
        )
        raise
    update_run(redis, run_id, evaluation=report.to_json())
    info = model_info(redis, run.candidate_model)
    if info is not None:
        info["evaluation"] = {"score": report.candidate.score, "against": report.current.score}
        redis.hset(keys.MODELS, run.candidate_model, json.dumps(info))
    if report.passed and settings.canary.enabled:
        _enter_canary(ctx, run, current)
    elif report.passed:
        promote(redis, settings, run.candidate_model, by="evaluation gate", reason=run_id)
        finish(ctx, run, RunStatus.PROMOTED, RunEvent.EVALUATED, promoted_by="evaluation gate")
    else:
        finish(ctx, run, RunStatus.HELD, RunEvent.EVALUATED)


def _enter_canary(ctx: LoopContext, run: Run, incumbent: str) -> None:
    """A candidate that passed the gate answers a share of new threads first (one canary
    at a time: while another is going, the candidate is held)."""
    started = canary.start(
        ctx.redis,
        ctx.settings.canary,
        candidate=run.candidate_model,
        incumbent=incumbent,
        run_id=run.run_id,
        by="evaluation gate",
    )
    if started is None:
        finish(ctx, run, RunStatus.HELD, RunEvent.EVALUATED, error="another canary is going")
    else:
        finish(ctx, run, RunStatus.CANARY, RunEvent.CANARY)


def promote_manually(ctx: LoopContext, model: str, *, by: str, channel: str = "") -> None:
    """Make ``model`` servable, then the bot's model; the admin who asked is answered."""
    try:
        if model != ctx.base_model:
            ctx.trainer.activate(model)
        previous = promote(ctx.redis, ctx.settings, model, by=by, reason="manual")
    except TuneloopError as exc:
        _reply(ctx, channel, by, "promote_failed", model=model, error=str(exc))
        raise
    _reply(ctx, channel, by, "promoted", model=model, previous=previous)


def _reply(ctx: LoopContext, channel: str, user: str, reply: str, **values: str) -> None:
    """An ephemeral answer to the admin who asked, posted by the web processes."""
    if not channel:
        return
    try:
        run_events.publish_reply(ctx.redis, channel, user, reply, values)
    except Exception:  # noqa: BLE001
        logger.exception("could not record a %s reply", reply)
