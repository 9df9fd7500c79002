"""Slack's AI-app surfaces, as plain data: greeting, suggested prompts, thread titles and
what the user is looking at.

Both of Slack's experiences are served. The agent experience (manifest ``agent_view``)
sends ``app_home_opened`` with ``tab == "messages"`` and ``app_context_changed``; the
older assistant experience (``assistant_view``) sends ``assistant_thread_started`` and
``assistant_thread_context_changed``. The listeners in
:mod:`bot.listeners.events.agent` turn either into the calls below.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from bot import messages
from core import keys
from core.replies import text_or_none
from core.settings import AgentSettings

logger = logging.getLogger(__name__)

TITLE_MAX_CHARS = 80
TITLE_TTL_S = 7 * 86400
"""How long a titled thread is remembered (a later question in it keeps the title)."""

CHANNEL = "slack#/types/channel_id"
CANVAS = "slack#/types/canvas_id"
LIST = "slack#/types/list_id"
MESSAGE = "slack#/types/message_context"


def prompts(settings: AgentSettings) -> list[dict[str, str]]:
    """The suggested prompts as ``assistant.threads.setSuggestedPrompts`` takes them."""
    return [{"title": p.title, "message": p.message} for p in settings.suggested_prompts]


def thread_title(text: str) -> str:
    """A thread title from the first question: its first non-empty line, mentions and
    Slack markup dropped, cut at a word to fit a sidebar."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    words = [w for w in line.split() if not (w.startswith("<@") and w.endswith(">"))]
    title = " ".join(words).strip("*_~` ")
    if len(title) <= TITLE_MAX_CHARS:
        return title
    cut = title.rfind(" ", 0, TITLE_MAX_CHARS - 1)
    return title[: cut if cut > TITLE_MAX_CHARS // 2 else TITLE_MAX_CHARS - 1].rstrip() + "…"


def first_in_thread(redis: Redis, channel_id: str, thread_ts: str) -> bool:
    """True once per thread: whether this question is the one that names the thread."""
    try:
        return bool(redis.set(keys.titled(channel_id, thread_ts), "1", nx=True, ex=TITLE_TTL_S))
    except RedisError:
        logger.warning("Redis unavailable: the thread keeps Slack's default title")
        return False


def first_visit(redis: Redis, user_id: str) -> bool:
    """True the first time a user opens the Messages tab (the greeting is posted once)."""
    try:
        return bool(redis.set(keys.greeted(user_id), "1", nx=True))
    except RedisError:
        logger.warning("Redis unavailable: not greeting %s this time", user_id)
        return False


def entities_from_assistant_context(context: dict[str, Any]) -> list[dict[str, Any]]:
    """The assistant experience's ``{"channel_id", "team_id"}`` context in the agent
    experience's entity form, so both are stored and described alike."""
    channel = context.get("channel_id")
    if not channel:
        return []
    return [{"type": CHANNEL, "value": channel, "team_id": context.get("team_id")}]


def remember_view(
    redis: Redis, owners: list[str | None], entities: list[dict[str, Any]], ttl_s: int
) -> None:
    """Store what a user is looking at (most relevant first) under their user id and
    their DM with the app, whichever the event names (Slack's examples of
    app_context_changed carry either); an empty context forgets it."""
    pipe = redis.pipeline()
    for owner in filter(None, owners):
        if entities:
            pipe.set(keys.viewing(owner), json.dumps(entities), ex=ttl_s)
        else:
            pipe.delete(keys.viewing(owner))
    pipe.execute()


def describe_view(entities: list[dict[str, Any]]) -> str | None:
    """One sentence for the system prompt naming what the user looks at, or None."""
    places: list[str] = []
    for entity in entities:
        kind, value = entity.get("type"), entity.get("value")
        if kind == CHANNEL and isinstance(value, str):
            places.append(messages.VIEWING_CHANNEL.format(channel=value))
        elif kind == MESSAGE and isinstance(value, dict) and value.get("channel_id"):
            places.append(
                messages.VIEWING_MESSAGE.format(
                    channel=value["channel_id"], ts=value.get("message_ts", "")
                )
            )
        elif kind == CANVAS and isinstance(value, str):
            places.append(messages.VIEWING_CANVAS.format(id=value))
        elif kind == LIST and isinstance(value, str):
            places.append(messages.VIEWING_LIST.format(id=value))
    if not places:
        return None
    return messages.VIEWING_NOTE.format(places=", ".join(places))


def view_keys(user_id: str, channel_id: str) -> list[str]:
    """Where what the user is looking at is kept, for a question asked in ``channel_id``:
    none outside DMs (in a channel, the channel itself is the context)."""
    if not channel_id.startswith("D"):
        return []
    return [keys.viewing(channel_id), keys.viewing(user_id)]


def with_view(base: str, views: list[bytes | str | None]) -> str:
    """The system prompt plus a note of what the user is looking at (``views``: the
    values of :func:`view_keys`, first found wins)."""
    raw = next(filter(None, map(text_or_none, views)), None)
    if not raw:
        return base
    try:
        entities = json.loads(raw)
    except ValueError:
        return base
    note = describe_view(entities if isinstance(entities, list) else [])
    return f"{base}\n\n{note}" if note else base


async def system_prompt(base: str, redis: AsyncRedis, user_id: str, channel_id: str) -> str:
    """The system prompt, plus what the user is looking at when they ask from the
    Messages tab."""
    names = view_keys(user_id, channel_id)
    if not names:
        return base
    try:
        return with_view(base, await redis.mget(names))
    except RedisError:
        logger.warning("Redis unavailable: answering without the user's active view")
        return base
