"""Every RQ entry point, in one place: what the workers run, by dotted name.

Jobs take ids and strings and log and re-raise on failure (so they land in RQ's failed
registry). The loop's jobs never run the bot's code: what Slack should hear is recorded
in ``keys.RUN_EVENTS`` and posted by the web processes (:mod:`bot.reporting`).

``training`` queue (names in :mod:`core.run_control`, enqueued by the web process and by
the jobs themselves):

* :func:`build_job` - build the run's set and start its job (:mod:`workers.build`)
* :func:`poll_job` - follow the job once, re-enqueued while it runs (:mod:`workers.follow`)
* :func:`cancel_job` - cancel the job (:mod:`workers.follow`)
* :func:`evaluate_job` - the evaluation gate (:mod:`workers.gate`)
* :func:`promote_job` - promotion asked for by an admin (:mod:`workers.gate`)
* :func:`decide_canary_job` - promote or roll back the canary's candidate
  (:mod:`workers.rollout`)
* :func:`export_job` - store a set's files for the admin's DM (the sets live where this
  queue's worker runs; enqueued by ``/finetune export``, uploaded by the web processes:
  :mod:`workers.export`, :mod:`core.exports`)

``gpu`` queue: ``workers.training.local.run_training_job`` - one LoRA training
(:data:`workers.training.local.JOB_FUNC`).

``answers`` queue: ``bot.answering.answer_job`` - a Slack answer a web process had no
slot for (the Slack side's job, :data:`bot.answering.JOB_FUNCTION`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis import Redis

from core.canary import Outcome
from core.run_control import LoopContext
from workers.build import build_and_start
from workers.export import export_set
from workers.follow import cancel_training, poll
from workers.gate import evaluate_and_promote, promote_manually
from workers.rollout import decide

logger = logging.getLogger(__name__)


def job_context() -> LoopContext:
    """The context inside an RQ job: settings from the environment, the job's Redis."""
    from rq import get_current_job

    from core.llm import make_client
    from core.settings import load_settings

    settings = load_settings()
    job = get_current_job()
    redis = job.connection if job is not None else Redis.from_url(settings.endpoints.redis_url)
    return LoopContext(settings, redis, make_client(settings))


def _entry(name: str, func: Callable[[LoopContext], object]) -> None:
    try:
        func(job_context())
    except Exception:
        logger.exception("%s failed", name)
        raise


def build_job(run_id: str) -> None:
    """RQ: build the run's training set and start its fine-tuning job."""
    _entry(f"building run {run_id}", lambda ctx: build_and_start(ctx, run_id))


def poll_job(run_id: str, seq: int) -> None:
    """RQ: follow the run's job once (re-enqueues itself while the job runs)."""
    _entry(f"polling run {run_id}", lambda ctx: poll(ctx, run_id, seq))


def evaluate_job(run_id: str) -> None:
    """RQ: evaluate the run's model and promote it if the gate allows."""
    _entry(f"evaluating run {run_id}", lambda ctx: evaluate_and_promote(ctx, run_id))


def cancel_job(run_id: str, by: str) -> None:
    """RQ: cancel the run's fine-tuning job."""
    _entry(f"cancelling run {run_id} for {by}", lambda ctx: cancel_training(ctx, run_id))


def promote_job(model: str, by: str, channel: str = "") -> None:
    """RQ: make ``model`` servable, then the bot's model; the admin is answered."""
    _entry(
        f"promoting {model} for {by}",
        lambda ctx: promote_manually(ctx, model, by=by, channel=channel),
    )


def decide_canary_job(force: str = "", by: str = "canary") -> None:
    """RQ: decide the canary now if its votes call for it (or as ``force`` says)."""
    outcome = Outcome(force) if force else None
    _entry(f"deciding the canary for {by}", lambda ctx: decide(ctx, force=outcome, by=by))


def export_job(set_id: str, dm_channel: str, user_id: str) -> None:
    """RQ: store a training set's files for the web processes to upload to the admin's DM."""
    _entry(
        f"exporting {set_id} for {user_id}",
        lambda ctx: export_set(ctx, set_id, dm_channel, user_id),
    )
