"""Events API listeners: messages, mentions, reactions, App Home, assistant threads."""

from __future__ import annotations

import logging
import re
from typing import Any

from redis.exceptions import RedisError
from slack_bolt import App

from bot import blocks, learning, messages
from bot.answering import Question
from bot.dispatch import Intake, hand_off
from bot.feedback import cast_vote, vote_for_reaction
from bot.finetune import is_admin
from bot.listeners.events import agent
from bot.runtime import Services
from core import approved
from core.store import VoteSource

logger = logging.getLogger(__name__)

IGNORED_SUBTYPES = {
    "message_changed",
    "message_deleted",
    "message_replied",
    "bot_message",
    "channel_join",
    "channel_leave",
    "thread_broadcast",
    "assistant_app_thread",
}


def _question(event: dict[str, Any], team_id: str | None) -> Question:
    return Question(
        team_id=event.get("team") or team_id or "",
        channel_id=event["channel"],
        user_id=event.get("user", ""),
        message_ts=event["ts"],
        thread_ts=event.get("thread_ts") or "",
        text=event.get("text") or "",
        files=tuple(f["id"] for f in event.get("files") or () if f.get("id")),
    )


def _from_a_person(event: dict[str, Any]) -> bool:
    return (
        bool(event.get("user"))
        and not event.get("bot_id")
        and (event.get("subtype") not in IGNORED_SUBTYPES)
    )


INTAKE = "tuneloop_intake"
"""Where :func:`question_to_answer`'s intake, done before the ack, waits in Bolt's context."""


def question_to_answer(
    services: Services, event: dict[str, Any], team_id: str | None
) -> Question | None:
    """The question an event asks the bot, or None: a person's mention, direct message,
    or follow-up in a thread the bot speaks in."""
    if not _from_a_person(event):
        return None
    kind = event.get("type")
    if kind == "app_mention" or (
        kind == "message"
        and (event.get("channel_type") in ("im", "mpim") or _follows_bot_thread(services, event))
    ):
        return _question(event, team_id)
    return None


def _follows_bot_thread(services: Services, event: dict[str, Any]) -> bool:
    """A channel message in a thread the bot answered in, without mentioning it."""
    thread_ts = event.get("thread_ts")
    if not thread_ts or f"<@{services.bot_user_id}" in (event.get("text") or ""):
        return False
    try:
        return services.store.in_bot_thread(event["channel"], thread_ts)
    except RedisError:
        logger.warning("Redis unavailable: thread follow-ups need a mention meanwhile")
        return False


def register(app: App, services: Services) -> None:
    """Attach the event listeners."""
    agent.register(app, services)  # first: it takes app_home_opened for the Messages tab

    def on_question(event: dict[str, Any], context: Any) -> None:
        """The question was taken in before the ack (bot/app.py); answer it now."""
        taken: Intake | None = context.get(INTAKE)
        if taken is not None:
            if event.get("type") == "message":
                agent.title_thread(services, event)  # a Messages-tab thread's first question
            hand_off(services, taken)

    app.event("app_mention")(on_question)
    app.event("message")(on_question)

    @app.event(re.compile(r"^reaction_(added|removed)$"))
    def on_reaction(event: dict[str, Any], client: Any) -> None:
        item = event.get("item") or {}
        vote = vote_for_reaction(event.get("reaction", ""))
        if vote is None or item.get("type") != "message" or not event.get("user"):
            return
        added = event["type"] == "reaction_added"
        try:
            cast_vote(
                services,
                channel_id=item["channel"],
                message_ts=item["ts"],
                user_id=event["user"],
                vote=vote if added else None,
                source=VoteSource.REACTION,
            )
        except RedisError:
            logger.exception("recording a reaction vote failed")
            client.chat_postEphemeral(
                channel=item["channel"], user=event["user"], text=messages.VOTE_UNAVAILABLE
            )

    @app.event("app_home_opened")
    def on_home(event: dict[str, Any], client: Any) -> None:
        if event.get("tab", "home") != "home":
            return
        user_id = event["user"]
        admin = is_admin(services, user_id)
        model = services.settings.model.base_model
        stats: dict[str, int] | None = None
        pending: int | None = None
        admin_lines: list[str] | None = None
        chart: str | None = None
        try:
            model = services.store.current_model(model)
            stats = services.store.weekly_stats()
            pending = approved.pending_count(services.redis) if admin else None
            if admin:
                admin_lines, chart = (
                    learning.home_lines(services, model),
                    learning.chart_file_id(services),
                )
        except RedisError:
            logger.exception("App Home statistics unavailable")
        client.views_publish(
            user_id=user_id,
            view=blocks.home_view(
                model=model,
                stats=stats,
                pending=pending,
                is_admin=admin,
                admin_lines=admin_lines,
                chart_file_id=chart,
            ),
        )

    @app.event(re.compile(".*"))
    def on_other_event(event: dict[str, Any]) -> None:
        logger.debug("ignoring event %s", event.get("type"))
