"""The append-only log of approved training examples (a Redis Stream).

Slack approvals and dataset imports both append here; training runs read everything
after the last consumed stream id, so "approved since the last run" is exact. The
same content is logged once: a set of content hashes guards the append, atomically.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import WatchError

from core import keys, replies

RESERVOIR_SIZE = 10_000
"""Stream ids kept in the replay reservoir (:data:`keys.APPROVED_RESERVOIR`): a uniform
sample of the whole log, from which a build draws its replay examples among those already
consumed. Replay takes at most ``training.replay_max`` (2,000 by default) of them."""

RESERVOIR_LUA = """
local function offer_to_reservoir(reservoir, seen, id, size, u)
  local n = redis.call('INCR', seen)
  if n <= size then
    redis.call('HSET', reservoir, n - 1, id)
  else
    local slot = math.floor(u * n)
    if slot < size then redis.call('HSET', reservoir, slot, id) end
  end
end
"""
"""Algorithm R, one step: the n-th example replaces a random slot with probability
size/n. Scripts that append to the log call it with the new id, so the reservoir changes
atomically with the append; ``u`` is a uniform number in [0, 1) drawn by the caller."""

# KEYS: hashes set, stream, reservoir, reservoir seen counter
# ARGV: hash, example JSON, reservoir size, uniform number
_APPEND = (
    RESERVOIR_LUA
    + """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[2], '*', 'example', ARGV[2])
offer_to_reservoir(KEYS[3], KEYS[4], id, tonumber(ARGV[3]), tonumber(ARGV[4]))
return id
"""
)


@dataclass(frozen=True)
class Example:
    """One approved example: a whole chat ending in the assistant turn to learn.

    ``rejected`` holds the answer a correction replaced, so the example can also serve
    as a preference pair (chosen = the last assistant turn, rejected = this).
    """

    messages: list[dict[str, Any]]
    source: str
    approved_by: str = ""
    approved_at: float = field(default_factory=time.time)
    answer_id: str | None = None
    rejected: str | None = None

    def content_hash(self) -> str:
        """Identity of the content: same messages and rejected answer, same example."""
        payload = json.dumps([self.messages, self.rejected], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_json(self) -> str:
        """The stream field's value."""
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Example:
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(raw))


def append(redis: Redis, example: Example) -> str | None:
    """Log an approved example; return its stream id, or None if it was logged before."""
    result = redis.eval(
        _APPEND,
        4,
        keys.APPROVED_HASHES,
        keys.APPROVED_LOG,
        keys.APPROVED_RESERVOIR,
        keys.APPROVED_RESERVOIR_SEEN,
        example.content_hash(),
        example.to_json(),
        RESERVOIR_SIZE,
        repr(random.random()),
    )
    return replies.text_or_none(result)


def read_after(
    redis: Redis, after_id: str = "0-0", batch: int = 1000
) -> Iterator[tuple[str, Example]]:
    """Yield (stream id, example) for every example logged after ``after_id``, in order.

    Reads in batches so memory does not grow with the length of the log.
    """
    cursor = after_id
    while True:
        chunk = redis.xrange(keys.APPROVED_LOG, min=f"({cursor}", count=batch)
        if not chunk:
            return
        for entry_id, raw in replies.entry_values(chunk, "example"):
            yield entry_id, Example.from_json(raw)
            cursor = entry_id


def pending_count(redis: Redis) -> int:
    """How many approved examples wait for the next training run."""
    cursor = redis.get(keys.APPROVED_CURSOR)
    if cursor is None:
        return int(redis.xlen(keys.APPROVED_LOG))
    total = 0
    for _ in read_ids_after(redis, replies.text(cursor)):
        total += 1
    return total


def read_ids_after(redis: Redis, after_id: str, batch: int = 5000) -> Iterator[str]:
    """Stream ids after ``after_id`` without decoding the examples (for counting)."""
    cursor = after_id
    while True:
        chunk = redis.xrange(keys.APPROVED_LOG, min=f"({cursor}", count=batch)
        if not chunk:
            return
        for cursor in replies.entry_ids(chunk):
            yield cursor


def position(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair (ids compare by time, then sequence, not as text)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def remove(redis: Redis, entries: list[tuple[str, Example]]) -> None:
    """Delete logged examples (deleting a user's data), with their content hashes so the
    same content could be approved again. Removing entries a run consumed leaves the
    cursor valid: it is a position in the log, not an entry. The deleted ones leave the
    replay reservoir too."""
    if not entries:
        return
    pipe = redis.pipeline(transaction=True)
    pipe.xdel(keys.APPROVED_LOG, *[entry_id for entry_id, _ in entries])
    pipe.srem(keys.APPROVED_HASHES, *[example.content_hash() for _, example in entries])
    pipe.eval(
        _FORGET_IN_RESERVOIR, 1, keys.APPROVED_RESERVOIR, *[entry_id for entry_id, _ in entries]
    )
    pipe.execute()


# KEYS[1] reservoir; ARGV: stream ids deleted from the log. Their slots are emptied (in
# one script, so an append meanwhile cannot have refilled a slot that is then emptied).
_FORGET_IN_RESERVOIR = """
local gone = {}
for _, id in ipairs(ARGV) do gone[id] = true end
local slots = redis.call('HGETALL', KEYS[1])
for i = 1, #slots, 2 do
  if gone[slots[i + 1]] then redis.call('HDEL', KEYS[1], slots[i]) end
end
return 0
"""


def rebuild_reservoir(redis: Redis, *, attempts: int = 5, batch: int = 5000) -> bool:
    """Fill the replay reservoir from the whole log, once, when it is behind the log.

    The append scripts keep it up to date; a log written before the reservoir existed
    (or by hand) has more entries than the reservoir has seen, and is sampled here in one
    pass. Runs under WATCH so an append meanwhile makes it start again; True when the
    reservoir is (now) complete.
    """
    for _ in range(attempts):
        with redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.APPROVED_RESERVOIR_SEEN, keys.APPROVED_LOG)
                seen = int(pipe.get(keys.APPROVED_RESERVOIR_SEEN) or 0)
                if seen >= int(pipe.xlen(keys.APPROVED_LOG)):
                    return True
                rng = random.Random()
                sample: list[str] = []
                n = 0
                for entry_id in read_ids_after(pipe, "0-0", batch):
                    n += 1
                    if len(sample) < RESERVOIR_SIZE:
                        sample.append(entry_id)
                    else:
                        slot = rng.randrange(n)
                        if slot < RESERVOIR_SIZE:
                            sample[slot] = entry_id
                pipe.multi()
                pipe.delete(keys.APPROVED_RESERVOIR)
                if sample:
                    pipe.hset(keys.APPROVED_RESERVOIR, mapping=dict(enumerate(sample)))
                pipe.set(keys.APPROVED_RESERVOIR_SEEN, n)
                pipe.execute()
                return True
            except WatchError:
                continue
    return False


def replay_pool(redis: Redis, upto_id: str) -> list[str]:
    """Stream ids of the reservoir's examples up to ``upto_id`` (the consumed ones), in
    log order: a uniform sample of the consumed history, read without scanning it."""
    limit = position(upto_id)
    ids = [position(replies.text(raw)) for raw in redis.hvals(keys.APPROVED_RESERVOIR)]
    return [f"{ms}-{seq}" for ms, seq in sorted(set(ids)) if (ms, seq) <= limit]


def read_entries(redis: Redis, entry_ids: list[str]) -> list[tuple[str, bytes]]:
    """(id, example JSON) of these log entries, in one round trip; entries deleted from
    the log since (a user's data forgotten) are left out."""
    pipe = redis.pipeline(transaction=False)
    for entry_id in entry_ids:
        pipe.xrange(keys.APPROVED_LOG, min=entry_id, max=entry_id, count=1)
    out: list[tuple[str, bytes]] = []
    for found in pipe.execute():
        out += replies.entry_values(found, "example")
    return out
