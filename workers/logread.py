"""Reading the approved-example log for a training-set build.

Batches of raw examples between two stream ids, read ahead by a thread so Redis and the
conversion overlap, and the replay sample of earlier examples drawn from the reservoir
:mod:`core.approved` keeps up to date at approval time (so a build never scans the
consumed history).
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Iterator
from typing import Any

from redis import Redis

from core import approved, keys, replies

READ_BATCH = 2000


def read_range(
    redis: Redis, after_id: str, upto_id: str | None, batch: int = READ_BATCH
) -> Iterator[list[tuple[str, bytes]]]:
    """Batches of (stream id, example JSON) after ``after_id`` up to ``upto_id`` inclusive."""
    cursor = after_id
    high = upto_id or "+"
    while True:
        chunk = redis.xrange(keys.APPROVED_LOG, min=f"({cursor}", max=high, count=batch)
        if not chunk:
            return
        out = replies.entry_values(chunk, "example")
        yield out
        cursor = out[-1][0]
        if len(chunk) < batch:
            return


_DONE = object()


def prefetched(batches: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate ``batches`` with the next ones read by a thread meanwhile (at most ``depth``).

    Reading from Redis waits on the socket with the GIL released, so it overlaps with
    converting the batch before; memory stays bounded by ``depth`` batches.
    """
    out: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    reader = threading.Thread(target=read, name="trainset-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join(timeout=5)


def last_id(redis: Redis) -> str | None:
    """The newest id in the approved log (a build's upper bound), None when it is empty."""
    newest = replies.entry_ids(redis.xrevrange(keys.APPROVED_LOG, count=1))
    return newest[0] if newest else None


# KEYS[1] seen set; ARGV[1] ttl, then (exact, near) digest pairs.
# Returns one character per pair: 0 new, 1 exact duplicate, 2 near-exact duplicate.


def replay_sample(
    redis: Redis, upto_id: str, k: int, rng: random.Random
) -> tuple[int, list[bytes]]:
    """(candidates, up to ``k`` raw examples) drawn uniformly from the consumed log
    (stream ids up to ``upto_id``), through the reservoir kept at approval time.

    Costs the size of the reservoir and ``k`` reads, not the length of the history. A log
    the reservoir has not seen whole (written before it existed) is sampled into it once.
    """
    approved.rebuild_reservoir(redis)
    pool = approved.replay_pool(redis, upto_id)
    chosen = rng.sample(pool, min(k, len(pool)))
    chosen.sort()
    return len(pool), [raw for _, raw in approved.read_entries(redis, chosen)]
