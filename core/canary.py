"""Canary rollout: a candidate answers a share of new threads until the votes decide.

Why: the offline gate only says a candidate is not worse on a few questions; the users'
votes say whether answers got better. A candidate that passes the gate enters a canary
(``keys.CANARY``): new threads whose hash of channel + thread_ts falls below the share
are answered by the candidate, the others by the incumbent (the current model). The
assignment is deterministic, so every web process and worker picks the same model for a
thread without asking each other, and each thread's model is pinned
(``keys.thread_model``) when first answered, so a conversation never switches models
while the canary lasts, nor when a canary starts in the middle of it.

Once each side has ``min_votes`` votes cast during the canary (counts since its start,
from :mod:`core.satisfaction`), a one-sided non-inferiority z-test decides: promote when
the candidate's up-rate is shown not worse than the incumbent's by more than ``margin``
at ``confidence``; roll back otherwise, or when ``max_duration_h`` passes first. The
decision is taken once: :func:`begin_decision` takes a lock and records the outcome on
the canary before anything moves, so a process that dies mid-way leaves a decision the
next check finishes (promotion is idempotent) instead of a second, different one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from enum import Enum

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from core import keys, satisfaction
from core.replies import text, text_hash
from core.settings import CanarySettings, Settings

logger = logging.getLogger(__name__)

LOCK_TTL_MS = 60_000
HISTORY_MAX = 200


class Outcome(str, Enum):
    """What a canary check concluded."""

    CONTINUE = "continue"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


class CanaryState(str, Enum):
    """Where the canary stands."""

    RUNNING = "running"
    DECIDING = "deciding"
    """The outcome is recorded; promotion or rollback is being applied."""


@dataclass(frozen=True)
class Canary:
    """The canary going, as stored in ``keys.CANARY``."""

    canary_id: str
    candidate: str
    incumbent: str
    share: float
    started_at: float
    run_id: str
    by: str
    base_candidate_up: int
    base_candidate_down: int
    base_incumbent_up: int
    base_incumbent_down: int
    state: CanaryState = CanaryState.RUNNING
    outcome: str = ""
    decision: str = ""
    """JSON of the decision once taken (see :class:`Decision`)."""

    def to_hash(self) -> dict[str, str]:
        """Flat strings for HSET."""
        return {k: str(v.value if isinstance(v, Enum) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str]) -> Canary:
        """Inverse of :meth:`to_hash` (from HGETALL's reply)."""
        d = text_hash(raw)
        return cls(
            canary_id=d["canary_id"],
            candidate=d["candidate"],
            incumbent=d["incumbent"],
            share=float(d["share"]),
            started_at=float(d["started_at"]),
            run_id=d.get("run_id", ""),
            by=d.get("by", ""),
            base_candidate_up=int(d.get("base_candidate_up", 0)),
            base_candidate_down=int(d.get("base_candidate_down", 0)),
            base_incumbent_up=int(d.get("base_incumbent_up", 0)),
            base_incumbent_down=int(d.get("base_incumbent_down", 0)),
            state=CanaryState(d.get("state", CanaryState.RUNNING.value)),
            outcome=d.get("outcome", ""),
            decision=d.get("decision", ""),
        )


def bucket(channel_id: str, thread_ts: str) -> float:
    """Where a thread falls in [0, 1): the same for every process, for ever."""
    digest = hashlib.sha256(f"{channel_id}:{thread_ts}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# KEYS: the thread's pin, the canary ; ARGV: current model, bucket, pin TTL
_ASSIGN = """
local pin = redis.call('GET', KEYS[1])
local c = redis.call('HMGET', KEYS[2], 'candidate', 'incumbent', 'share', 'state')
local candidate, incumbent, share, state = c[1], c[2], c[3], c[4]
if pin and (pin == ARGV[1] or pin == candidate or pin == incumbent) then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return pin
end
local model = ARGV[1]
if candidate and state == 'running' and incumbent == ARGV[1]
   and tonumber(ARGV[2]) < tonumber(share) then
  model = candidate
end
redis.call('SET', KEYS[1], model, 'EX', ARGV[3])
return model
"""


def _assign_args(
    settings: Settings, channel_id: str, thread_ts: str, current_model: str
) -> tuple[str, int, str, str, str, float, int]:
    """EVAL arguments of the assignment script (shared by the sync and async callers)."""
    return (
        _ASSIGN,
        2,
        keys.thread_model(channel_id, thread_ts),
        keys.CANARY,
        current_model,
        bucket(channel_id, thread_ts),
        settings.retention.unrated_days * 86400,
    )


def model_for_thread(
    redis: Redis, settings: Settings, channel_id: str, thread_ts: str, current_model: str
) -> str:
    """The model that answers in this thread: its pinned model while that is still in
    play (current, or either side of the canary), else the candidate for the canary's
    share of new threads, else ``current_model``. Never fails: without Redis it is
    ``current_model``."""
    try:
        model = redis.eval(*_assign_args(settings, channel_id, thread_ts, current_model))
    except RedisError:
        logger.warning("Redis unavailable: thread answered with the current model")
        return current_model
    return text(model)


async def model_for_thread_async(
    redis: AsyncRedis, settings: Settings, channel_id: str, thread_ts: str, current_model: str
) -> str:
    """:func:`model_for_thread` on the answer engine's event loop."""
    try:
        model = await redis.eval(*_assign_args(settings, channel_id, thread_ts, current_model))
    except RedisError:
        logger.warning("Redis unavailable: thread answered with the current model")
        return current_model
    return text(model)


# KEYS: canary ; ARGV: field/value pairs
_START = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


def start(
    redis: Redis,
    settings: CanarySettings,
    *,
    candidate: str,
    incumbent: str,
    run_id: str,
    by: str,
    now: float | None = None,
) -> Canary | None:
    """Start a canary of ``candidate`` against ``incumbent``; None if one is going already
    (one canary at a time). The vote counts both models have now are the baseline: only
    votes cast after this count for the decision."""
    cand, inc = satisfaction.totals(redis, candidate), satisfaction.totals(redis, incumbent)
    canary = Canary(
        canary_id=f"canary-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}",
        candidate=candidate,
        incumbent=incumbent,
        share=settings.share,
        started_at=time.time() if now is None else now,
        run_id=run_id,
        by=by,
        base_candidate_up=cand.up,
        base_candidate_down=cand.down,
        base_incumbent_up=inc.up,
        base_incumbent_down=inc.down,
    )
    pairs = [item for pair in canary.to_hash().items() for item in pair]
    if not redis.eval(_START, 1, keys.CANARY, *pairs):
        return None
    logger.info("canary %s: %s against %s", canary.canary_id, candidate, incumbent)
    return canary


def active(redis: Redis) -> Canary | None:
    """The canary going, if any."""
    raw = redis.hgetall(keys.CANARY)
    return Canary.from_hash(raw) if raw else None


@dataclass(frozen=True)
class Progress:
    """Votes each side got since the canary started."""

    candidate_up: int
    candidate_down: int
    incumbent_up: int
    incumbent_down: int
    elapsed_s: float

    @property
    def candidate_votes(self) -> int:
        """Votes on the candidate during the canary."""
        return self.candidate_up + self.candidate_down

    @property
    def incumbent_votes(self) -> int:
        """Votes on the incumbent during the canary."""
        return self.incumbent_up + self.incumbent_down


def progress(redis: Redis, canary: Canary, now: float | None = None) -> Progress:
    """The canary's votes so far (totals minus the baseline taken at its start)."""
    cand = satisfaction.totals(redis, canary.candidate)
    inc = satisfaction.totals(redis, canary.incumbent)
    return Progress(
        candidate_up=cand.up - canary.base_candidate_up,
        candidate_down=cand.down - canary.base_candidate_down,
        incumbent_up=inc.up - canary.base_incumbent_up,
        incumbent_down=inc.down - canary.base_incumbent_down,
        elapsed_s=(time.time() if now is None else now) - canary.started_at,
    )


@dataclass(frozen=True)
class Decision:
    """What was decided, why, and the numbers behind it."""

    outcome: Outcome
    reason: str
    candidate_up: int
    candidate_votes: int
    incumbent_up: int
    incumbent_votes: int
    z: float | None = None
    p_value: float | None = None
    margin: float = 0.0
    confidence: float = 0.0
    by: str = "canary"

    def to_json(self) -> str:
        """Stored on the canary and in its history."""
        return json.dumps({**asdict(self), "outcome": self.outcome.value})

    @classmethod
    def from_json(cls, raw: str) -> Decision:
        """Inverse of :meth:`to_json`."""
        data = json.loads(raw)
        data["outcome"] = Outcome(data["outcome"])
        return cls(**data)


def verdict(
    seen: Progress, settings: CanarySettings, *, force: Outcome | None = None, by: str = "canary"
) -> Decision:
    """Decide from the votes: continue, promote or roll back (``force``: an admin's choice,
    with the numbers as they stand)."""
    enough = min(seen.candidate_votes, seen.incumbent_votes) >= settings.min_votes
    test = None
    if seen.candidate_votes and seen.incumbent_votes:
        test = satisfaction.non_inferiority(
            seen.candidate_up,
            seen.candidate_votes,
            seen.incumbent_up,
            seen.incumbent_votes,
            margin=settings.margin,
            confidence=settings.confidence,
        )
    waiting = Decision(
        Outcome.CONTINUE,
        "waiting for votes",
        candidate_up=seen.candidate_up,
        candidate_votes=seen.candidate_votes,
        incumbent_up=seen.incumbent_up,
        incumbent_votes=seen.incumbent_votes,
        z=None if test is None else round(test.z, 4),
        p_value=None if test is None else round(test.p_value, 6),
        margin=settings.margin,
        confidence=settings.confidence,
        by=by,
    )
    if force is not None:
        return replace(waiting, outcome=force, reason="ended early")
    if enough and test is not None:
        if test.passed:
            return replace(waiting, outcome=Outcome.PROMOTE, reason="not worse than the incumbent")
        return replace(waiting, outcome=Outcome.ROLLBACK, reason="not shown to be as good")
    if seen.elapsed_s >= settings.max_duration_h * 3600:
        return replace(
            waiting, outcome=Outcome.ROLLBACK, reason="too few votes before the time limit"
        )
    return waiting


def begin_decision(redis: Redis, canary_id: str, decision: Decision) -> Canary | None:
    """Record ``decision`` on the canary, once, under the lock; the canary to act on, or
    None when another process holds the lock or the canary is gone. A canary already
    deciding (its decider died) is handed back with the decision it recorded."""
    if not redis.set(keys.CANARY_LOCK, canary_id, nx=True, px=LOCK_TTL_MS):
        return None
    current = active(redis)
    if current is None or current.canary_id != canary_id:
        release(redis, canary_id)
        return None
    if current.state is CanaryState.RUNNING:
        redis.hset(
            keys.CANARY,
            mapping={
                "state": CanaryState.DECIDING.value,
                "outcome": decision.outcome.value,
                "decision": decision.to_json(),
            },
        )
        current = active(redis)
    return current


def finish(redis: Redis, canary: Canary, decision: Decision) -> None:
    """The decision is applied: the canary ends, its record goes to the history."""
    record = {
        "canary_id": canary.canary_id,
        "candidate": canary.candidate,
        "incumbent": canary.incumbent,
        "run_id": canary.run_id,
        "started_at": canary.started_at,
        "ended_at": time.time(),
        **json.loads(decision.to_json()),
    }
    pipe = redis.pipeline(transaction=True)
    pipe.delete(keys.CANARY)
    pipe.lpush(keys.CANARY_HISTORY, json.dumps(record))
    pipe.ltrim(keys.CANARY_HISTORY, 0, HISTORY_MAX - 1)
    pipe.execute()
    release(redis, canary.canary_id)


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def release(redis: Redis, canary_id: str) -> None:
    """Let go of the decision lock if this canary holds it."""
    redis.eval(_RELEASE, 1, keys.CANARY_LOCK, canary_id)


def history(redis: Redis, count: int = 10) -> list[dict]:
    """Past canary decisions, newest first."""
    return [json.loads(raw) for raw in redis.lrange(keys.CANARY_HISTORY, 0, count - 1)]
