"""The admin's log: who did what, when (``keys.ADMIN_LOG``), for every admin action."""

from __future__ import annotations

import time

from redis import Redis

from core import keys
from core.replies import entries

AUDIT_MAXLEN = 10_000


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
    newest = entries(redis.xrevrange(keys.ADMIN_LOG, count=count))
    return [{"id": entry_id, **fields} for entry_id, fields in newest]
