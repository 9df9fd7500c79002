"""A training set's files on their way from the training worker to the admin's DM.

The sets are on the training worker's disk and only the web processes talk to Slack, so
``/finetune export`` is done in two halves: the export job (:func:`workers.jobs.export_job`)
stores the files, gzipped, under ``keys.export`` with a TTL and appends a
``RunEvent.EXPORT`` entry to ``keys.RUN_EVENTS`` in the same transaction; the web
processes' consumer of run events (:mod:`bot.reporting`) uploads them to the DM, deletes
the key, and acknowledges the entry only then, so a failed upload is tried again like any
other run event. A set holds other people's conversations: the copy in Redis lives only
until it was uploaded, at most ``TTL_S``.
"""

from __future__ import annotations

import gzip
import uuid

from redis import Redis

from core import keys, run_events
from core.replies import binary, text

MAX_BYTES = 100 * 2**20
"""The most a set's files may weigh together (before compression) to be exported: they
are held in Redis until uploaded, and in a web process's memory while uploading."""
TTL_S = 3600
"""How long stored files wait for a web process (one down longer makes the admin ask again)."""


def stage(
    redis: Redis,
    set_id: str,
    files: dict[str, bytes],
    channel: str,
    user: str,
    values: dict[str, str],
) -> str:
    """Store ``files`` (name -> bytes) for ``user``'s DM ``channel`` and record the export
    for the web processes, together; the key they are under."""
    key = keys.export(set_id, uuid.uuid4().hex[:12])
    with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={name: gzip.compress(data, mtime=0) for name, data in files.items()})
        pipe.expire(key, TTL_S)
        run_events.publish_export(pipe, key, channel, user, values)
        pipe.execute()
    return key


def load(redis: Redis, key: str) -> dict[str, bytes] | None:
    """The files stored under ``key`` (name -> bytes), None once they expired or were
    uploaded."""
    stored = redis.hgetall(key)
    if not stored:
        return None
    return {text(name): gzip.decompress(binary(data)) for name, data in stored.items()}


def discard(redis: Redis, key: str) -> None:
    """Delete the stored files (once uploaded: the set's copy leaves Redis at once)."""
    redis.delete(key)


def discard_all(redis: Redis) -> int:
    """Delete every export waiting for upload (forgetting a user: any set may hold their
    data; an admin whose export was dropped is told to ask again); how many."""
    stored = list(redis.scan_iter(match=keys.export("*", "*"), count=500))
    return int(redis.delete(*stored)) if stored else 0
