"""Turning rated answers into approved training examples: the policy and the admin's say.

An answer becomes an example in the approved log (``core.approved``) either
automatically, when the configured policy says its votes are enough, or when an admin
approves it in ``/finetune review``. A correction is never approved automatically: only
an admin's approval (as written, or edited) turns it into an example, with the answer
it replaces kept as the rejected side of a preference pair.

Every decision is recorded once in ``keys.REVIEWED``; deciding and logging happen in
one Lua script, so two admins clicking at once, or a vote arriving while an admin
decides, still give one decision and at most one example.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from enum import Enum

from redis import Redis

from core import approved, keys, replies
from core.approved import RESERVOIR_LUA, Example
from core.settings import ApprovalMode, ApprovalSettings
from core.store import AnswerRecord, Store, Vote

logger = logging.getLogger(__name__)

AUTO_APPROVER = "auto"
"""``by`` of decisions the approval policy made."""
SOURCE = "slack"


class Decision(str, Enum):
    """What happened to a rated answer."""

    APPROVED = "approved"
    """The answer as the bot gave it is an example."""
    CORRECTED = "corrected"
    """A user's correction, approved by an admin, is the example."""
    EDITED = "edited"
    """The admin's own text is the example."""
    REJECTED = "rejected"
    """Nothing is learned from this answer."""


class Outcome(str, Enum):
    """What :func:`decide` did."""

    DONE = "done"
    ALREADY_DECIDED = "already_decided"
    NO_SUCH_ANSWER = "no_such_answer"
    NO_CORRECTION = "no_correction"


@dataclass(frozen=True)
class Result:
    """The outcome; ``stream_id`` is set when an example was logged."""

    outcome: Outcome
    decision: Decision | None = None
    stream_id: str | None = None
    previous: dict | None = None


@dataclass(frozen=True)
class Correction:
    """A user's "what it should have said"."""

    user_id: str
    text: str
    at: float


@dataclass(frozen=True)
class Pending:
    """A rated answer waiting for a decision, with what an admin needs to decide."""

    answer_id: str
    question: str
    answer: str
    asker: str
    model: str
    up: int
    down: int
    corrections: tuple[Correction, ...]

    @property
    def latest_correction(self) -> Correction | None:
        """The newest correction (the one "Approve correction" takes)."""
        return max(self.corrections, key=lambda c: c.at) if self.corrections else None


# KEYS: reviewed, approved hashes, approved log, reservoir, reservoir seen counter
# ARGV: answer id, decision JSON, content hash ('' for no example), example JSON,
#       reservoir size, uniform number
_DECIDE = (
    RESERVOIR_LUA
    + """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
if previous then return {0, previous} end
local id = ''
if ARGV[3] ~= '' and redis.call('SADD', KEYS[2], ARGV[3]) == 1 then
  id = redis.call('XADD', KEYS[3], '*', 'example', ARGV[4])
  offer_to_reservoir(KEYS[4], KEYS[5], id, tonumber(ARGV[5]), tonumber(ARGV[6]))
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, id}
"""
)


def corrections(redis: Redis, answer_id: str) -> tuple[Correction, ...]:
    """Every correction of an answer, oldest first."""
    raw = replies.text_hash(redis.hgetall(keys.corrections(answer_id)))
    out = []
    for user, value in raw.items():
        data = json.loads(value)
        out.append(Correction(user, str(data["text"]), float(data.get("at", 0))))
    return tuple(sorted(out, key=lambda c: c.at))


def example_for(record: AnswerRecord, text: str, *, by: str, rejected: str | None) -> Example:
    """The example: the prompt exactly as the bot sent it, then the approved answer."""
    return Example(
        messages=[*record.messages, {"role": "assistant", "content": text}],
        source=SOURCE,
        approved_by=by,
        answer_id=record.answer_id,
        rejected=rejected,
    )


def decide(
    store: Store,
    answer_id: str,
    decision: Decision,
    *,
    by: str,
    text: str | None = None,
) -> Result:
    """Record a decision on a rated answer and log its example, once.

    ``CORRECTED`` takes the newest correction; ``EDITED`` takes ``text``. Both keep the
    bot's answer as the rejected side of a preference pair.
    """
    redis = store.redis
    record = store.get_answer(answer_id)
    if record is None:
        return Result(Outcome.NO_SUCH_ANSWER)
    example: Example | None = None
    if decision is Decision.APPROVED:
        example = example_for(record, record.answer, by=by, rejected=None)
    elif decision is Decision.CORRECTED:
        found = corrections(redis, answer_id)
        if not found:
            return Result(Outcome.NO_CORRECTION)
        newest = max(found, key=lambda c: c.at)
        example = example_for(record, newest.text, by=by, rejected=record.answer)
    elif decision is Decision.EDITED:
        if not text or not text.strip():
            return Result(Outcome.NO_CORRECTION)
        edited = text.strip()
        rejected = None if edited == record.answer.strip() else record.answer
        example = example_for(record, edited, by=by, rejected=rejected)
    verdict = json.dumps({"decision": decision.value, "by": by, "at": time.time()})
    done, value = redis.eval(
        _DECIDE,
        5,
        keys.REVIEWED,
        keys.APPROVED_HASHES,
        keys.APPROVED_LOG,
        keys.APPROVED_RESERVOIR,
        keys.APPROVED_RESERVOIR_SEEN,
        answer_id,
        verdict,
        example.content_hash() if example else "",
        example.to_json() if example else "",
        approved.RESERVOIR_SIZE,
        repr(random.random()),
    )
    if not done:
        return Result(Outcome.ALREADY_DECIDED, previous=json.loads(value))
    stream_id = replies.text_or_none(value)
    logger.info("%s %s by %s (logged %s)", answer_id, decision.value, by, stream_id or "nothing")
    return Result(Outcome.DONE, decision, stream_id or None)


def decision_of(redis: Redis, answer_id: str) -> dict | None:
    """The recorded decision on an answer ({"decision", "by", "at"}), None if undecided."""
    raw = redis.hget(keys.REVIEWED, answer_id)
    return json.loads(raw) if raw else None


def auto_approve(store: Store, policy: ApprovalSettings, answer_id: str) -> bool:
    """Apply the automatic policy after a vote; True if it approved the answer now.

    Approves when the mode allows it, nobody voted down and nobody wrote a correction
    (a dispute is for an admin), and either the asker voted up (if configured) or at
    least ``min_upvotes`` people did.
    """
    if policy.mode is ApprovalMode.ADMIN:
        return False
    redis = store.redis
    if redis.hexists(keys.REVIEWED, answer_id) or redis.exists(keys.corrections(answer_id)):
        return False
    votes = store.votes(answer_id)
    if not votes or any(v is Vote.DOWN for v in votes.values()):
        return False
    record = store.get_answer(answer_id)
    if record is None:
        return False
    ups = sum(1 for v in votes.values() if v is Vote.UP)
    by_asker = policy.asker_upvote_approves and votes.get(record.user_id) is Vote.UP
    if not by_asker and ups < policy.min_upvotes:
        return False
    result = decide(store, answer_id, Decision.APPROVED, by=AUTO_APPROVER)
    return result.outcome is Outcome.DONE


def _question(record: AnswerRecord) -> str:
    for message in reversed(record.messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def pending(store: Store, limit: int, *, scan_batch: int = 200) -> list[Pending]:
    """The oldest rated answers nobody decided on yet, at most ``limit``."""
    redis = store.redis
    out: list[Pending] = []
    start = 0
    while len(out) < limit:
        ids = replies.members(redis.zrange(keys.RATED, start, start + scan_batch - 1))
        if not ids:
            break
        start += scan_batch
        decided = redis.hmget(keys.REVIEWED, ids)
        for answer_id, verdict in zip(ids, decided, strict=True):
            if verdict is not None:
                continue
            record = store.get_answer(answer_id)
            if record is None:
                continue
            votes = store.votes(answer_id)
            out.append(
                Pending(
                    answer_id=answer_id,
                    question=_question(record),
                    answer=record.answer,
                    asker=record.user_id,
                    model=record.model,
                    up=sum(1 for v in votes.values() if v is Vote.UP),
                    down=sum(1 for v in votes.values() if v is Vote.DOWN),
                    corrections=corrections(redis, answer_id),
                )
            )
            if len(out) >= limit:
                break
    return out


def pending_count(redis: Redis) -> int:
    """How many rated answers wait for a decision (every decided answer was rated)."""
    pipe = redis.pipeline(transaction=False)
    pipe.zcard(keys.RATED)
    pipe.hlen(keys.REVIEWED)
    rated, reviewed = pipe.execute()
    return max(0, int(rated) - int(reviewed))
