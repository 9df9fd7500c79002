"""The append-only log of approved training examples (a Redis Stream).

Slack approvals and dataset imports both append here; training runs read everything
after the last consumed stream id, so "approved since the last run" is exact. The
same content is logged once: a set of content hashes guards the append, atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis

from core import keys

# KEYS[1] hashes set, KEYS[2] stream; ARGV[1] hash, ARGV[2] example JSON.
_APPEND = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', 'example', ARGV[2])
"""


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
        2,
        keys.APPROVED_HASHES,
        keys.APPROVED_LOG,
        example.content_hash(),
        example.to_json(),
    )
    if result is None:
        return None
    return result.decode() if isinstance(result, bytes) else str(result)


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
        for raw_id, fields in chunk:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            raw = fields.get(b"example", fields.get("example"))
            yield entry_id, Example.from_json(raw)
            cursor = entry_id


def pending_count(redis: Redis) -> int:
    """How many approved examples wait for the next training run."""
    cursor = redis.get(keys.APPROVED_CURSOR)
    if cursor is None:
        return int(redis.xlen(keys.APPROVED_LOG))
    after = cursor.decode() if isinstance(cursor, bytes) else cursor
    total = 0
    for _ in read_ids_after(redis, after):
        total += 1
    return total


def read_ids_after(redis: Redis, after_id: str, batch: int = 5000) -> Iterator[str]:
    """Stream ids after ``after_id`` without decoding the examples (for counting)."""
    cursor = after_id
    while True:
        chunk = redis.xrange(keys.APPROVED_LOG, min=f"({cursor}", count=batch)
        if not chunk:
            return
        for raw_id, _ in chunk:
            cursor = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            yield cursor


def position(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair (ids compare by time, then sequence, not as text)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def remove(redis: Redis, entries: list[tuple[str, Example]]) -> None:
    """Delete logged examples (deleting a user's data), with their content hashes so the
    same content could be approved again. Removing entries a run consumed leaves the
    cursor valid: it is a position in the log, not an entry."""
    if not entries:
        return
    pipe = redis.pipeline(transaction=True)
    pipe.xdel(keys.APPROVED_LOG, *[entry_id for entry_id, _ in entries])
    pipe.srem(keys.APPROVED_HASHES, *[example.content_hash() for _, example in entries])
    pipe.execute()
