"""Training runs: approved examples → training set → fine-tuning job → evaluation → promotion.

A run is a Redis hash (``keys.run``) moved along by short RQ jobs on the ``training``
queue, never one worker blocked for the length of a fine-tuning job:

``request_run`` (the bot, on ``/finetune retrain``) → ``build_job`` (build the set,
start the job) → ``poll_job`` (every ``poll_interval_s``, re-enqueued by itself) →
``evaluate_job`` (gate, promotion). Slack is told through ``bot.reporting.report_run``,
enqueued by dotted path so this module never imports the bot.

Guarantees:

* One run at a time: ``keys.RUN_LOCK`` is taken with SET NX; a second request is told
  which run is going. A run whose worker died is noticed (its RQ job is gone or its
  heartbeat is old) by the next request or by the web processes' periodic check
  (``supervise_active``), and cleaned up, adopted when it had already created a
  fine-tuning job (found by the job's metadata), or followed by a new poll chain.
* Exactly once: ``keys.APPROVED_CURSOR`` moves to the last example the set read only in
  the same transaction that records the created job on the run. A failed upload or job
  creation leaves the examples pending; a job that then fails or is cancelled hands
  them back (the cursor returns to where the run found it), so an example is consumed
  by exactly one successful run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any

from openai import OpenAI
from redis import Redis
from redis.exceptions import WatchError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus

from core import canary, keys, metrics
from core.errors import TrainingError, TuneloopError
from core.settings import Settings, TrainerBackend, TrainingMethod
from core.store import Store
from workers import evaluation, trainset
from workers.training.base import JobStatus, ProgressEvent, Trainer

logger = logging.getLogger(__name__)

BUILD_JOB = "workers.loop.build_job"
POLL_JOB = "workers.loop.poll_job"
EVALUATE_JOB = "workers.loop.evaluate_job"
CANCEL_JOB = "workers.loop.cancel_job"
PROMOTE_JOB = "workers.loop.promote_job"
REPORT_JOB = "bot.reporting.report_run"
"""Posting a run's progress to Slack lives with the bot; enqueued by name only."""
REPLY_JOB = "bot.reporting.reply"
BUILD_TIMEOUT_S = 3 * 3600
SHORT_TIMEOUT_S = 600
EVALUATE_TIMEOUT_S = 3600
RESULT_TTL_S = 86400
FAILURE_TTL_S = 30 * 86400
HISTORY_MAX = 1000
AUDIT_MAXLEN = 10_000
RUN_METADATA_KEY = "tuneloop_run"
SET_METADATA_KEY = "tuneloop_set"


class RunStatus(str, Enum):
    """Where a training run stands."""

    QUEUED = "queued"
    BUILDING = "building"
    STARTING = "starting"
    TRAINING = "training"
    EVALUATING = "evaluating"
    PROMOTED = "promoted"
    HELD = "held"
    """Trained but not promoted: worse than the current model, or the check failed."""
    CANARY = "canary"
    """Passed the gate; answering a share of new threads until the votes decide."""
    TOO_FEW = "too_few"
    DRY_RUN = "dry_run"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """True while the run holds the lock and work is still to come."""
        return self in ACTIVE


ACTIVE = frozenset(
    {
        RunStatus.QUEUED,
        RunStatus.BUILDING,
        RunStatus.STARTING,
        RunStatus.TRAINING,
        RunStatus.EVALUATING,
    }
)


@dataclass
class Run:
    """One training run as stored in its hash (see the README's data model)."""

    run_id: str
    status: RunStatus
    admin: str
    channel: str
    created_at: float
    updated_at: float
    dry_run: bool = False
    thread_ts: str = ""
    backend: str = ""
    method: str = ""
    base_model: str = ""
    set_id: str = ""
    cursor_from: str = ""
    """The cursor when the set was built ("" when the log was never consumed)."""
    cursor_to: str = ""
    """The last example id the set read; the cursor's value once the job exists."""
    job_id: str = ""
    candidate_model: str = ""
    last_event_id: str = ""
    last_event: str = ""
    job_status: str = ""
    last_post_at: float = 0.0
    poll_seq: int = 0
    cancel_requested: bool = False
    cancelled_by: str = ""
    error: str = ""
    hyperparameters: str = ""
    lr_note: str = ""
    heldout: str = ""
    evaluation: str = ""
    trained_tokens: int = 0
    n_new: int = 0
    n_train: int = 0
    n_valid: int = 0
    missing: int = 0
    promoted_by: str = ""
    finished_at: float = 0.0

    def to_hash(self) -> dict[str, str]:
        """Flat strings for HSET."""
        return {f.name: _to_str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> Run:
        """Inverse of :meth:`to_hash`; unknown fields are ignored, missing ones default."""
        data = {k.decode(): v.decode() for k, v in raw.items()}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                values[f.name] = _FROM_STR[str(f.type)](data[f.name])
        return cls(**values)

    @property
    def event(self) -> ProgressEvent | None:
        """The last progress event seen."""
        return ProgressEvent(**json.loads(self.last_event)) if self.last_event else None

    @property
    def report(self) -> evaluation.EvalReport | None:
        """The evaluation report, once evaluated."""
        return evaluation.EvalReport.from_json(self.evaluation) if self.evaluation else None


def _to_str(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


_FROM_STR: dict[str, Callable[[str], Any]] = {
    "str": str,
    "float": lambda v: float(v or 0),
    "int": lambda v: int(float(v or 0)),
    "bool": lambda v: v not in ("", "0", "False", "false"),
    "RunStatus": RunStatus,
}


# --- the context a job works in -------------------------------------------------------
@dataclass
class LoopContext:
    """Settings and clients; built per RQ job (cheap) or given explicitly by callers."""

    settings: Settings
    redis: Redis
    llm: OpenAI | None = None
    trainer_factory: Callable[[], Trainer] | None = field(default=None, repr=False)

    @cached_property
    def trainer(self) -> Trainer:
        """The configured backend."""
        if self.trainer_factory is not None:
            return self.trainer_factory()
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


def job_context() -> LoopContext:
    """The context inside an RQ job: settings from the environment, the job's Redis."""
    from rq import get_current_job

    from core.llm import make_client
    from core.settings import load_settings

    settings = load_settings()
    job = get_current_job()
    redis = job.connection if job is not None else Redis.from_url(settings.endpoints.redis_url)
    return LoopContext(settings, redis, make_client(settings))


# --- run records -----------------------------------------------------------------------
def new_run_id() -> str:
    """Readable, sortable and unique: ``run-20260101-120000-ab12``."""
    return f"run-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def load_run(redis: Redis, run_id: str) -> Run | None:
    """A run, None when unknown."""
    raw = redis.hgetall(keys.run(run_id))
    return Run.from_hash(raw) if raw else None


def update_run(redis: Redis, run_id: str, **fields: Any) -> None:
    """Set some fields of a run (and its heartbeat)."""
    values = {name: _to_str(value) for name, value in fields.items()}
    values.setdefault("updated_at", str(time.time()))
    redis.hset(keys.run(run_id), mapping=values)


def _transition(redis: Redis, run_id: str, frm: RunStatus, to: RunStatus, **fields: Any) -> bool:
    """Move a run from ``frm`` to ``to`` unless something else moved it first."""
    key = keys.run(run_id)
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                if pipe.hget(key, "status") != frm.value.encode():
                    pipe.unwatch()
                    return False
                pipe.multi()
                values = {name: _to_str(value) for name, value in fields.items()}
                pipe.hset(
                    key, mapping={**values, "status": to.value, "updated_at": str(time.time())}
                )
                pipe.execute()
                return True
            except WatchError:
                continue


def active_run(redis: Redis) -> Run | None:
    """The run holding the lock, if any."""
    holder = redis.get(keys.RUN_LOCK)
    return load_run(redis, holder.decode()) if holder else None


def recent_runs(redis: Redis, count: int = 10) -> list[Run]:
    """The newest runs first."""
    ids = redis.zrevrange(keys.RUNS, 0, count - 1)
    runs = [load_run(redis, i.decode()) for i in ids]
    return [r for r in runs if r is not None]


def run_metrics(redis: Redis, run_id: str) -> list[dict[str, Any]]:
    """The run's metric points (step, train_loss, valid_loss, token_accuracy), oldest first."""
    return [json.loads(raw) for raw in redis.lrange(keys.run_metrics(run_id), 0, -1)]


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _release_lock(redis: Redis, run_id: str) -> None:
    redis.eval(_RELEASE, 1, keys.RUN_LOCK, run_id)


# --- the admin's log ----------------------------------------------------------------------
def audit(redis: Redis, user: str, action: str, detail: str = "") -> None:
    """Log an admin action (who, what, when) in ``keys.ADMIN_LOG``."""
    redis.xadd(
        keys.ADMIN_LOG,
        {"user": user, "action": action, "detail": detail[:1000], "at": f"{time.time():.3f}"},
        maxlen=AUDIT_MAXLEN,
        approximate=True,
    )


def audit_entries(redis: Redis, count: int = 20) -> list[dict[str, str]]:
    """The newest admin actions first."""
    entries = redis.xrevrange(keys.ADMIN_LOG, count=count)
    return [
        {"id": i.decode(), **{k.decode(): v.decode() for k, v in f.items()}} for i, f in entries
    ]


# --- reporting and scheduling ---------------------------------------------------------------
def _enqueue(
    ctx: LoopContext, func: str, *args: Any, job_id: str | None = None, **opts: Any
) -> None:
    ctx.queue.enqueue(
        func,
        *args,
        job_id=job_id,
        job_timeout=opts.pop("job_timeout", SHORT_TIMEOUT_S),
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        **opts,
    )


def _report(ctx: LoopContext, run_id: str, kind: str) -> None:
    """Tell Slack (the bot's reporting job) that something happened to a run."""
    try:
        _enqueue(ctx, REPORT_JOB, run_id, kind)
    except Exception:  # noqa: BLE001 - a report never stops the loop
        logger.exception("could not enqueue the %s report of %s", kind, run_id)


def _rq_status(redis: Redis, job_id: str) -> RQStatus | None:
    try:
        return Job.fetch(job_id, connection=redis).get_status()
    except NoSuchJobError:
        return None


def _schedule_poll(ctx: LoopContext, run_id: str, *, now: bool = False) -> int:
    """Start (or restart) the poll chain; a newer chain makes older ones stop."""
    seq = int(ctx.redis.hincrby(keys.run(run_id), "poll_seq", 1))
    job_id = f"poll-{run_id}-{seq}"
    if now:
        _enqueue(ctx, POLL_JOB, run_id, seq, job_id=job_id)
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


def _finish(ctx: LoopContext, run: Run, status: RunStatus, kind: str, **fields: Any) -> None:
    """End a run: final status, lock released, Slack told."""
    update_run(ctx.redis, run.run_id, status=status, finished_at=time.time(), **fields)
    _release_lock(ctx.redis, run.run_id)
    metrics.incr(ctx.redis, "tuneloop_training_runs", status=status.value)
    _report(ctx, run.run_id, kind)
    logger.info("run %s ended: %s", run.run_id, status.value)


# --- asking for a run -----------------------------------------------------------------------
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
    _enqueue(ctx, BUILD_JOB, run.run_id, job_id=f"build-{run.run_id}", job_timeout=BUILD_TIMEOUT_S)
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
        _release_lock(redis, run.run_id)
        return False
    if run.status in (RunStatus.QUEUED, RunStatus.BUILDING, RunStatus.STARTING):
        status = _rq_status(redis, f"build-{run.run_id}")
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
        if run.status is RunStatus.STARTING and _adopt(ctx, run):
            return True
        logger.warning("run %s died while %s; cleaning up", run.run_id, run.status.value)
        _finish(
            ctx,
            run,
            RunStatus.FAILED,
            "failed",
            error=f"the worker stopped while the run was {run.status.value}; "
            "no fine-tuning job was created and no example was consumed",
        )
        return False
    if run.status is RunStatus.TRAINING:
        status = _rq_status(redis, f"poll-{run.run_id}-{run.poll_seq}")
        if status in (
            None,
            RQStatus.FAILED,
            RQStatus.STOPPED,
            RQStatus.CANCELED,
            RQStatus.FINISHED,
        ):
            logger.warning("run %s had nobody following its job; polling again", run.run_id)
            _schedule_poll(ctx, run.run_id, now=True)
        return True
    status = _rq_status(redis, f"evaluate-{run.run_id}")
    if status in (None, RQStatus.FAILED, RQStatus.STOPPED, RQStatus.CANCELED, RQStatus.FINISHED):
        logger.warning("run %s had nobody evaluating it; evaluating again", run.run_id)
        _enqueue_evaluation(ctx, run.run_id)
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
    from workers import rollout  # it applies decisions with this module's promotion

    rollout.tick(ctx)
    return True


def _adopt(ctx: LoopContext, run: Run) -> bool:
    """A run that died between creating its job and recording it: record it now."""
    find = getattr(ctx.trainer, "find_job", None)
    if find is None:
        return False
    try:
        job_id = find(run.run_id)
    except TuneloopError:
        logger.exception("could not look for the job of run %s", run.run_id)
        return False
    if not job_id:
        return False
    logger.warning("run %s died after creating job %s: adopting it", run.run_id, job_id)
    heldout = json.loads(run.heldout) if run.heldout else []
    if not _commit_job(ctx, run, job_id, heldout):
        return False
    _report(ctx, run.run_id, "started")
    _schedule_poll(ctx, run.run_id, now=True)
    return True


# --- building and starting ------------------------------------------------------------------
def _read_cursor(redis: Redis) -> str:
    raw = redis.get(keys.APPROVED_CURSOR)
    return raw.decode() if raw else ""


def trained_examples(redis: Redis, model: str) -> int:
    """How many examples went into ``model`` over its lineage (0 for a base model)."""
    info = model_info(redis, model)
    return int(info.get("trained_examples", 0)) if info else 0


def hyperparameters(ctx: LoopContext, n_train_new: int, current: str) -> tuple[dict[str, Any], str]:
    """The job's hyper-parameters from config, and why the learning rate was lowered (if).

    OpenAI advises a smaller learning-rate multiplier when continuing on a small
    increment: when the new examples are fewer than ``small_increment_ratio`` of those
    the current model was trained on, the multiplier (configured, else the one the
    current model was trained with) is divided by ``lr_reduction_factor``.
    """
    training = ctx.settings.training
    configured = training.openai
    hyper: dict[str, Any] = {
        "n_epochs": configured.n_epochs,
        "batch_size": configured.batch_size,
        "learning_rate_multiplier": configured.learning_rate_multiplier,
    }
    if training.method is TrainingMethod.DPO:
        hyper["beta"] = configured.dpo_beta
    note = ""
    prior = trained_examples(ctx.redis, current)
    if prior and n_train_new < training.small_increment_ratio * prior:
        base_lr = configured.learning_rate_multiplier
        if base_lr is None:
            used = (model_info(ctx.redis, current) or {}).get("hyperparameters") or {}
            value = used.get("learning_rate_multiplier")
            base_lr = float(value) if isinstance(value, int | float) else None
        if base_lr is None and training.backend is TrainerBackend.LOCAL:
            base_lr = 1.0  # the local trainer multiplies its configured learning rate
        if base_lr is not None:
            reduced = round(base_lr / training.lr_reduction_factor, 6)
            hyper["learning_rate_multiplier"] = reduced
            note = (
                f"{n_train_new} new examples next to {prior} already trained: learning-rate "
                f"multiplier {base_lr:g} / {training.lr_reduction_factor:g} = {reduced:g}"
            )
        else:
            note = (
                f"{n_train_new} new examples next to {prior} already trained, but no "
                "learning-rate multiplier is known to reduce: the provider chooses"
            )
    return {k: v for k, v in hyper.items() if v is not None}, note


def build_and_start(ctx: LoopContext, run_id: str) -> None:
    """Build the run's set; if it is large enough (and not a dry run), start the job."""
    redis = ctx.redis
    run = load_run(redis, run_id)
    if run is None or run.status is not RunStatus.QUEUED:
        logger.info("run %s is %s: nothing to build", run_id, run.status.value if run else "gone")
        return
    if run.cancel_requested:
        _finish(ctx, run, RunStatus.CANCELLED, "cancelled")
        return
    if not _transition(redis, run_id, RunStatus.QUEUED, RunStatus.BUILDING):
        logger.info("run %s left the queue meanwhile (cancelled?): not built", run_id)
        return
    created: list[str] = []
    try:
        _build_and_start(ctx, run, created)
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
            _finish(ctx, now, RunStatus.FAILED, "failed", error=str(exc)[:500])
        raise


def _build_and_start(ctx: LoopContext, run: Run, created: list[str]) -> None:
    """The work of :func:`build_and_start`; ``created`` gets the job id once there is one."""
    redis = ctx.redis
    run_id = run.run_id
    trainer = ctx.trainer
    current = ctx.current_model()
    cursor_from = _read_cursor(redis)
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
        _finish(ctx, run, RunStatus.TOO_FEW, "too_few")
        return
    assert built is not None
    if run.dry_run:
        _finish(ctx, run, RunStatus.DRY_RUN, "dry_run")
        return
    if (load_run(redis, run_id) or run).cancel_requested:
        _finish(ctx, run, RunStatus.CANCELLED, "cancelled")
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
    if not _commit_job(ctx, run, job_id, list(built.heldout)):
        created.clear()
        trainer.cancel(job_id)
        _finish(
            ctx,
            run,
            RunStatus.FAILED,
            "failed",
            error="another run took over meanwhile (lock or cursor moved); the job was cancelled",
        )
        return
    created.clear()  # recorded: from here on the poll follows it, whatever happens
    _report(ctx, run_id, "started")
    if (load_run(redis, run_id) or run).cancel_requested:
        trainer.cancel(job_id)
    _schedule_poll(ctx, run_id, now=True)


def _commit_job(ctx: LoopContext, run: Run, job_id: str, heldout: list[str]) -> bool:
    """Record the created job and move the cursor, in one transaction (exactly once)."""
    redis = ctx.redis
    run_key = keys.run(run.run_id)
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(keys.APPROVED_CURSOR, run_key, keys.RUN_LOCK)
                cursor = pipe.get(keys.APPROVED_CURSOR)
                status = pipe.hget(run_key, "status")
                holder = pipe.get(keys.RUN_LOCK)
                if holder != run.run_id.encode():
                    pipe.unwatch()
                    return False
                if (
                    status == RunStatus.TRAINING.value.encode()
                    and pipe.hget(run_key, "job_id") == job_id.encode()
                ):
                    # This very commit went through but its reply was lost (the connection
                    # dropped after EXEC; redis-py raises WatchError): it is done.
                    pipe.unwatch()
                    logger.warning("run %s: job %s was already recorded", run.run_id, job_id)
                    return True
                if (cursor.decode() if cursor else "") != run.cursor_from or status not in (
                    RunStatus.STARTING.value.encode(),
                    RunStatus.BUILDING.value.encode(),
                ):
                    pipe.unwatch()
                    return False
                pipe.multi()
                if run.cursor_to:
                    pipe.set(keys.APPROVED_CURSOR, run.cursor_to)
                pipe.hset(
                    run_key,
                    mapping={
                        "job_id": job_id,
                        "status": RunStatus.TRAINING.value,
                        "job_status": JobStatus.PENDING.value,
                        "updated_at": str(time.time()),
                    },
                )
                if heldout:
                    pipe.sadd(keys.HELDOUT, *heldout)
                pipe.execute()
                logger.info(
                    "run %s: job %s created, cursor at %s", run.run_id, job_id, run.cursor_to
                )
                return True
            except WatchError:
                continue


def _hand_back_examples(ctx: LoopContext, run: Run) -> bool:
    """A job that failed or was cancelled consumed nothing: move the cursor back."""
    redis = ctx.redis
    heldout = json.loads(run.heldout) if run.heldout else []
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(keys.APPROVED_CURSOR)
                cursor = pipe.get(keys.APPROVED_CURSOR)
                if (cursor.decode() if cursor else "") != run.cursor_to:
                    pipe.unwatch()
                    return False
                pipe.multi()
                if run.cursor_from:
                    pipe.set(keys.APPROVED_CURSOR, run.cursor_from)
                else:
                    pipe.delete(keys.APPROVED_CURSOR)
                if heldout:
                    pipe.srem(keys.HELDOUT, *heldout)
                pipe.execute()
                return True
            except WatchError:
                continue


# --- following the job ------------------------------------------------------------------------
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
        _schedule_poll(ctx, run_id)
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
            _hand_back_examples(ctx, run)
            _finish(ctx, run, RunStatus.FAILED, "failed", error="the job succeeded without a model")
            return state.status
        _record_model(ctx, run, state.result_model, state.details)
        update_run(redis, run_id, status=RunStatus.EVALUATING, candidate_model=state.result_model)
        _report(ctx, run_id, "trained")
        _enqueue_evaluation(ctx, run_id)
    elif state.status is JobStatus.FAILED:
        _hand_back_examples(ctx, run)
        _finish(ctx, run, RunStatus.FAILED, "failed", error=(state.error or "the job failed")[:500])
    elif state.status is JobStatus.CANCELLED:
        _hand_back_examples(ctx, run)
        _finish(ctx, run, RunStatus.CANCELLED, "cancelled")
    else:
        interval = ctx.settings.training.progress_post_interval_s
        if state.events and time.time() - run.last_post_at >= interval:
            update_run(redis, run_id, last_post_at=time.time())
            _report(ctx, run_id, "progress")
        _schedule_poll(ctx, run_id)
    return state.status


def _enqueue_evaluation(ctx: LoopContext, run_id: str) -> None:
    _enqueue(ctx, EVALUATE_JOB, run_id, job_id=f"evaluate-{run_id}", job_timeout=EVALUATE_TIMEOUT_S)


# --- models: candidates, promotion, rollback ------------------------------------------------
def model_info(redis: Redis, model: str) -> dict[str, Any] | None:
    """What a run recorded about a model it produced."""
    raw = redis.hget(keys.MODELS, model)
    return json.loads(raw) if raw else None


def _record_model(ctx: LoopContext, run: Run, model: str, details: dict[str, Any]) -> None:
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
                raw = pipe.get(keys.CURRENT_MODEL)
                previous = raw.decode() if raw else settings.model.base_model
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
    if run is not None and run.status in (RunStatus.HELD, RunStatus.EVALUATING, RunStatus.CANARY):
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


# --- evaluation -------------------------------------------------------------------------------
def evaluate_and_promote(ctx: LoopContext, run_id: str) -> None:
    """Compare the candidate with the current model; promote it if it is not worse."""
    redis = ctx.redis
    run = load_run(redis, run_id)
    if run is None or run.status is not RunStatus.EVALUATING:
        return
    current = ctx.current_model()
    settings = ctx.settings
    try:
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
            ctx.llm,
            settings,
            candidate=run.candidate_model,
            current=current,
            items=items,
            markers=golden.decline_markers,
        )
    except Exception as exc:
        _finish(ctx, run, RunStatus.HELD, "evaluated", error=f"evaluation failed: {exc}"[:500])
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
        _finish(ctx, run, RunStatus.PROMOTED, "evaluated", promoted_by="evaluation gate")
    else:
        _finish(ctx, run, RunStatus.HELD, "evaluated")


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
        _finish(ctx, run, RunStatus.HELD, "evaluated", error="another canary is going")
    else:
        _finish(ctx, run, RunStatus.CANARY, "canary")


# --- cancelling -------------------------------------------------------------------------------
def request_cancel(ctx: LoopContext, *, by: str) -> Run | None:
    """Ask the running run to stop; None when no run is going."""
    run = active_run(ctx.redis)
    if run is None or not run.status.active:
        return None
    update_run(ctx.redis, run.run_id, cancel_requested=True, cancelled_by=by)
    if run.status is RunStatus.QUEUED and _transition(
        ctx.redis, run.run_id, RunStatus.QUEUED, RunStatus.CANCELLED, finished_at=time.time()
    ):
        try:
            Job.fetch(f"build-{run.run_id}", connection=ctx.redis).cancel()
        except Exception:  # noqa: BLE001 - gone or already taken: the build sees the status
            logger.info("build job of %s could not be cancelled", run.run_id)
        _release_lock(ctx.redis, run.run_id)
        _report(ctx, run.run_id, "cancelled")
    elif run.status is RunStatus.TRAINING:
        _enqueue(ctx, CANCEL_JOB, run.run_id, by)
    return load_run(ctx.redis, run.run_id)


def cancel_training(ctx: LoopContext, run_id: str) -> None:
    """Cancel a run's fine-tuning job and poll at once so the run ends now."""
    run = load_run(ctx.redis, run_id)
    if run is None or run.status is not RunStatus.TRAINING:
        return
    ctx.trainer.cancel(run.job_id)
    _schedule_poll(ctx, run_id, now=True)


# --- RQ entry points (enqueued by dotted path; ids and strings only) -----------------------
def _entry(name: str, func: Callable[[LoopContext], None]) -> None:
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

    def work(ctx: LoopContext) -> None:
        try:
            if model != ctx.base_model:
                ctx.trainer.activate(model)
            previous = promote(ctx.redis, ctx.settings, model, by=by, reason="manual")
        except TuneloopError as exc:
            _reply(ctx, channel, by, "promote_failed", model=model, error=str(exc))
            raise
        _reply(ctx, channel, by, "promoted", model=model, previous=previous)

    _entry(f"promoting {model} for {by}", work)


def _reply(ctx: LoopContext, channel: str, user: str, kind: str, **values: str) -> None:
    """An ephemeral answer to the admin who asked (``bot.reporting.reply``)."""
    if not channel:
        return
    try:
        _enqueue(ctx, REPLY_JOB, channel, user, kind, json.dumps(values))
    except Exception:  # noqa: BLE001
        logger.exception("could not enqueue a %s reply", kind)
