"""Seeding the approved-example log from files, so the first training run needs no votes.

Examples go in through :func:`core.approved.append`, which refuses content that is
already logged: loading the same file twice adds nothing the second time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.exceptions import RedisError

from core import approved
from core.errors import StoreUnavailable

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
APPROVED_BY = "cli"


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def connect(url: str) -> Redis:
    """A checked connection; one clear line when Redis cannot be reached."""
    try:
        redis = Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
        redis.ping()
    except (RedisError, ValueError) as exc:
        raise StoreUnavailable(f"cannot reach Redis at {redacted(url)}: {exc}") from None
    return redis


def source_of(file_name: str) -> str:
    """The ``source`` recorded with imported examples."""
    return f"import:{file_name}"


@dataclass
class SeedResult:
    """How many examples were added and how many were in the log already."""

    added: int = 0
    existing: int = 0


def seed(redis: Redis, examples: Iterable[list[dict[str, Any]]], source: str) -> SeedResult:
    """Append each list of messages to the approved-example log as one example."""
    result = SeedResult()
    try:
        for messages in examples:
            example = approved.Example(messages=messages, source=source, approved_by=APPROVED_BY)
            if approved.append(redis, example) is None:
                result.existing += 1
            else:
                result.added += 1
    except RedisError as exc:
        raise StoreUnavailable(
            f"Redis failed after {result.added} examples were added: {exc} "
            "(loading the file again adds only the missing ones)"
        ) from None
    return result
