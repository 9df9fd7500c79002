"""``/finetune``: parse the sub-command, check admin rights on the server, run it."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from bot import messages
from bot.runtime import Services
from workers import approved

logger = logging.getLogger(__name__)

HELP = """*`/finetune` commands*
• `help` – this list
• `status` – current model, examples waiting, the running job"""


@dataclass(frozen=True)
class Reply:
    """What the command answers (ephemeral, to the caller only)."""

    text: str
    blocks: list[dict[str, Any]] | None = field(default=None)


Handler = Callable[[Services, str, str, list[str]], Reply]


def is_admin(services: Services, user_id: str) -> bool:
    """Admin rights come from the server's configuration, never from the request."""
    return user_id in services.settings.slack.admins


def _help(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    return Reply(HELP)


def _status(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    try:
        model = services.store.current_model(services.settings.model.base_model)
        waiting = approved.pending_count(services.redis)
    except RedisError:
        logger.exception("status unavailable")
        return Reply("Status is unavailable right now: storage cannot be reached.")
    return Reply(f"*Current model:* `{model}`\n*Approved examples waiting:* {waiting}")


PUBLIC: dict[str, Handler] = {"help": _help, "status": _status}
ADMIN: dict[str, Handler] = {}


def handle(services: Services, *, user_id: str, channel_id: str, text: str) -> Reply:
    """Run one ``/finetune`` invocation and say what happened."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        return Reply(f"Could not read that command ({exc}). Try `/finetune help`.")
    name, args = (words[0].lower(), words[1:]) if words else ("help", [])
    if name in PUBLIC:
        return PUBLIC[name](services, user_id, channel_id, args)
    if name in ADMIN:
        if not is_admin(services, user_id):
            logger.warning("non-admin %s tried /finetune %s", user_id, name)
            return Reply(messages.NOT_ADMIN)
        return ADMIN[name](services, user_id, channel_id, args)
    return Reply(f"Unknown command `{name}`. Try `/finetune help`.")
