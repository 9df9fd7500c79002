"""The models runs produced, and which one the bot answers with.

``keys.MODELS`` records every model a run produced (run, set, job, parent, examples
trained over its lineage, hyper-parameters, evaluation); ``keys.CURRENT_MODEL`` is the
pointer the answer path reads and ``keys.MODEL_HISTORY`` logs every move of it.
Promotion and rollback first make the target servable (a self-hosted adapter is loaded
into every vLLM replica) and move the pointer only when that worked.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import WatchError

from core import keys
from core.errors import TrainingError
from core.replies import text_or_none
from core.runs import Run, RunStatus, load_run, update_run
from core.settings import Settings

if TYPE_CHECKING:
    from core.run_control import LoopContext

logger = logging.getLogger(__name__)

HISTORY_MAX = 1000


def model_info(redis: Redis, model: str) -> dict[str, Any] | None:
    """What a run recorded about a model it produced."""
    raw = redis.hget(keys.MODELS, model)
    return json.loads(raw) if raw else None


def record_model(ctx: LoopContext, run: Run, model: str, details: dict[str, Any]) -> None:
    """Record a model a run produced, with what it was trained on (for promotion and
    the next run's learning rate)."""
    parent = run.base_model or ctx.base_model
    info = {
        "model": model,
        "run_id": run.run_id,
        "set_id": run.set_id,
        "job_id": run.job_id,
        "parent": parent,
        "trained_examples": trained_examples(ctx.redis, parent) + run.n_new - run.n_valid,
        "hyperparameters": details.get("hyperparameters") or {},
        "created_at": time.time(),
    }
    ctx.redis.hset(keys.MODELS, model, json.dumps(info))


def trained_examples(redis: Redis, model: str) -> int:
    """How many examples went into ``model`` over its lineage (0 for a base model)."""
    info = model_info(redis, model)
    return int(info.get("trained_examples", 0)) if info else 0


def candidates(redis: Redis, count: int = 10) -> list[dict[str, Any]]:
    """Models the runs produced, newest first."""
    infos = [json.loads(v) for v in redis.hvals(keys.MODELS)]
    return sorted(infos, key=lambda i: i.get("created_at", 0), reverse=True)[:count]


def history(redis: Redis, count: int = 10) -> list[dict[str, Any]]:
    """Promotions and rollbacks, newest first."""
    return [json.loads(raw) for raw in redis.lrange(keys.MODEL_HISTORY, 0, count - 1)]


def known_model(redis: Redis, settings: Settings, model: str) -> bool:
    """Whether ``model`` may be promoted: the base model or one a run produced."""
    return model == settings.model.base_model or redis.hexists(keys.MODELS, model)


def _switch(redis: Redis, settings: Settings, model: str, record: dict[str, Any]) -> str:
    """Point the bot at ``model`` and log it, atomically; returns the previous model."""
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(keys.CURRENT_MODEL)
                previous = text_or_none(pipe.get(keys.CURRENT_MODEL)) or settings.model.base_model
                pipe.multi()
                if model == settings.model.base_model:
                    pipe.delete(keys.CURRENT_MODEL)
                else:
                    pipe.set(keys.CURRENT_MODEL, model)
                entry = {**record, "model": model, "previous": previous, "at": time.time()}
                pipe.lpush(keys.MODEL_HISTORY, json.dumps(entry))
                pipe.ltrim(keys.MODEL_HISTORY, 0, HISTORY_MAX - 1)
                pipe.execute()
                return previous
            except WatchError:
                continue


def promote(redis: Redis, settings: Settings, model: str, *, by: str, reason: str = "") -> str:
    """Make ``model`` the bot's model now (history keeps metrics, set and job); the previous one."""
    info = model_info(redis, model) or {}
    run = load_run(redis, info["run_id"]) if info.get("run_id") else None
    report = run.report if run else None
    record = {
        "action": "promote",
        "by": by,
        "reason": reason,
        "run_id": info.get("run_id", ""),
        "set_id": info.get("set_id", ""),
        "job_id": info.get("job_id", ""),
        "trained_examples": info.get("trained_examples", 0),
        "metrics": {
            "candidate": report.candidate.score,
            "current": report.current.score,
            "scorer": report.scorer,
        }
        if report
        else {},
    }
    previous = _switch(redis, settings, model, record)
    if run is not None and run.status in (
        RunStatus.HELD,
        RunStatus.EVALUATING,
        RunStatus.CANARY,
    ):
        update_run(redis, run.run_id, status=RunStatus.PROMOTED, promoted_by=by)
    logger.info("promoted %s (was %s) by %s", model, previous, by)
    return previous


def rollback(ctx: LoopContext, *, by: str) -> tuple[str, str]:
    """Return to the model that was current before the current one; (from, to).

    The previous model is made servable again first (a self-hosted adapter may have been
    unloaded from vLLM meanwhile); if that fails, the pointer does not move.
    """
    redis, settings = ctx.redis, ctx.settings
    current = ctx.current_model()
    target = None
    for entry in history(redis, HISTORY_MAX):
        if entry.get("action") == "promote" and entry.get("model") == current:
            target = entry.get("previous")
            break
    if not target or target == current:
        raise TrainingError(
            f"{current} was not promoted from another model: nothing to roll back to"
        )
    if target != settings.model.base_model:
        ctx.trainer.activate(target)
    _switch(redis, settings, target, {"action": "rollback", "by": by})
    logger.info("rolled back from %s to %s by %s", current, target, by)
    return current, target
