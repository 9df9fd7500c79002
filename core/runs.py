"""Training runs as records: one Redis hash per run (``keys.run``), the run lock, and the
exactly-once move of the approved-examples cursor.

A run is created by the web process (:mod:`core.run_control`) and moved along by the
training workers (:mod:`workers.build`, :mod:`workers.follow`, :mod:`workers.gate`);
both read and write it only through this module. ``keys.APPROVED_CURSOR`` moves to the
last example a set read only in the same transaction that records the created job on
the run (:func:`commit_job`); a job that then fails or is cancelled hands the examples
back (:func:`hand_back_examples`), so an example is consumed by exactly one successful
run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import WatchError

from core import keys
from core.replies import Fields, members, text_hash, text_or_none

if TYPE_CHECKING:
    from workers.evaluation import EvalReport
    from workers.training.base import ProgressEvent

logger = logging.getLogger(__name__)


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

    def to_hash(self) -> Fields:
        """Flat strings for HSET."""
        return {f.name: to_str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str]) -> Run:
        """Inverse of :meth:`to_hash` (from HGETALL's reply); unknown fields are ignored,
        missing ones default."""
        data = text_hash(raw)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                values[f.name] = _FROM_STR[str(f.type)](data[f.name])
        return cls(**values)

    @property
    def event(self) -> ProgressEvent | None:
        """The last progress event seen (the backends' type, imported when read)."""
        from workers.training.base import ProgressEvent

        return ProgressEvent(**json.loads(self.last_event)) if self.last_event else None

    @property
    def report(self) -> EvalReport | None:
        """The evaluation report, once evaluated (the gate's type, imported when read)."""
        from workers.evaluation import EvalReport

        return EvalReport.from_json(self.evaluation) if self.evaluation else None


def to_str(value: Any) -> str:
    """A field's value as stored in the run hash (bools as "1"/"", enums by value)."""
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


def new_run_id() -> str:
    """Readable, sortable and unique: ``run-20260101-120000-ab12``."""
    return f"run-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def load_run(redis: Redis, run_id: str) -> Run | None:
    """A run, None when unknown."""
    raw = redis.hgetall(keys.run(run_id))
    return Run.from_hash(raw) if raw else None


def update_run(redis: Redis, run_id: str, **fields: Any) -> None:
    """Set some fields of a run (and its heartbeat)."""
    values: Fields = {name: to_str(value) for name, value in fields.items()}
    values.setdefault("updated_at", str(time.time()))
    redis.hset(keys.run(run_id), mapping=values)


def transition(redis: Redis, run_id: str, frm: RunStatus, to: RunStatus, **fields: Any) -> bool:
    """Move a run from ``frm`` to ``to`` unless something else moved it first."""
    key = keys.run(run_id)
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                if text_or_none(pipe.hget(key, "status")) != frm.value:
                    pipe.unwatch()
                    return False
                pipe.multi()
                values: Fields = {name: to_str(value) for name, value in fields.items()}
                pipe.hset(
                    key, mapping={**values, "status": to.value, "updated_at": str(time.time())}
                )
                pipe.execute()
                return True
            except WatchError:
                continue


def active_run(redis: Redis) -> Run | None:
    """The run holding the lock, if any."""
    holder = text_or_none(redis.get(keys.RUN_LOCK))
    return load_run(redis, holder) if holder else None


def recent_runs(redis: Redis, count: int = 10) -> list[Run]:
    """The newest runs first."""
    ids = members(redis.zrevrange(keys.RUNS, 0, count - 1))
    runs = [load_run(redis, i) for i in ids]
    return [r for r in runs if r is not None]


def run_metrics(redis: Redis, run_id: str) -> list[dict[str, Any]]:
    """The run's metric points (step, train_loss, valid_loss, token_accuracy), oldest first."""
    return [json.loads(raw) for raw in redis.lrange(keys.run_metrics(run_id), 0, -1)]


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def release_lock(redis: Redis, run_id: str) -> None:
    """Free the run lock, only if ``run_id`` still holds it (a compare-and-delete)."""
    redis.eval(_RELEASE, 1, keys.RUN_LOCK, run_id)


def read_cursor(redis: Redis) -> str:
    """The consumed position in the approved log ("" before any run consumed it)."""
    return text_or_none(redis.get(keys.APPROVED_CURSOR)) or ""


def commit_job(redis: Redis, run: Run, job_id: str, heldout: list[str]) -> bool:
    """Record the created job and move the cursor, in one transaction (exactly once)."""
    run_key = keys.run(run.run_id)
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(keys.APPROVED_CURSOR, run_key, keys.RUN_LOCK)
                cursor = text_or_none(pipe.get(keys.APPROVED_CURSOR)) or ""
                status = text_or_none(pipe.hget(run_key, "status"))
                holder = text_or_none(pipe.get(keys.RUN_LOCK))
                if holder != run.run_id:
                    pipe.unwatch()
                    return False
                if (
                    status == RunStatus.TRAINING.value
                    and text_or_none(pipe.hget(run_key, "job_id")) == job_id
                ):
                    # This very commit went through but its reply was lost (the connection
                    # dropped after EXEC; redis-py raises WatchError): it is done.
                    pipe.unwatch()
                    logger.warning("run %s: job %s was already recorded", run.run_id, job_id)
                    return True
                if cursor != run.cursor_from or status not in (
                    RunStatus.STARTING.value,
                    RunStatus.BUILDING.value,
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
                        "job_status": "pending",
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


def hand_back_examples(redis: Redis, run: Run) -> bool:
    """A job that failed or was cancelled consumed nothing: move the cursor back."""
    heldout = json.loads(run.heldout) if run.heldout else []
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(keys.APPROVED_CURSOR)
                cursor = text_or_none(pipe.get(keys.APPROVED_CURSOR)) or ""
                if cursor != run.cursor_to:
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
