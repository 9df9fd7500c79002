"""Listeners of Slack's AI-app surfaces: the Messages tab and the user's active view.

Agent experience (``agent_view``): ``app_home_opened`` with ``tab == "messages"`` greets
and sets the suggested prompts for the DM; ``app_context_changed`` says what the user is
looking at. Assistant experience (``assistant_view``): ``assistant_thread_started`` and
``assistant_thread_context_changed`` do the same per assistant thread. Registered before
the App Home and catch-all listeners, since Bolt runs the first listener that matches.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from slack_bolt import App
from slack_sdk.errors import SlackApiError

from bot import agent
from bot.runtime import Services

logger = logging.getLogger(__name__)


def _messages_tab(event: dict[str, Any]) -> bool:
    return event.get("tab") == "messages"


def title_thread(services: Services, event: dict[str, Any]) -> None:
    """Name a Messages-tab thread after its first question (each message the user
    sends there may start its own thread: its ``thread_ts``, else its ``ts``)."""
    if event.get("channel_type") != "im":
        return
    thread_ts = event.get("thread_ts") or event["ts"]
    title = agent.thread_title(event.get("text") or "")
    if not title or not agent.first_in_thread(services.redis, event["channel"], thread_ts):
        return
    try:
        services.slack.assistant_threads_setTitle(
            channel_id=event["channel"], thread_ts=thread_ts, title=title
        )
    except SlackApiError as exc:
        logger.info("setTitle refused: %s", exc.response.get("error"))


def _remember(services: Services, owners: list[str | None], entities: list[dict[str, Any]]) -> None:
    """Keep what the user looks at, under their user id and DM (see agent.remember_view)."""
    try:
        agent.remember_view(
            services.redis, owners, entities, services.settings.agent.view_context_ttl_s
        )
    except RedisError:
        logger.warning("Redis unavailable: the active view of %s is not remembered", owners)


def register(app: App, services: Services) -> None:
    """Attach the agent / assistant listeners (before the App Home listener)."""
    settings = services.settings.agent

    def suggest(client: Any, channel_id: str, thread_ts: str | None) -> None:
        prompts = agent.prompts(settings)
        if not prompts:
            return
        args: dict[str, Any] = {"channel_id": channel_id, "prompts": prompts}
        if settings.prompts_title:
            args["title"] = settings.prompts_title
        if thread_ts:  # assistant experience only: agent apps must leave it out
            args["thread_ts"] = thread_ts
        client.assistant_threads_setSuggestedPrompts(**args)

    @app.event("app_home_opened", matchers=[_messages_tab])
    def on_messages_tab(event: dict[str, Any], client: Any) -> None:
        channel_id, user_id = event.get("channel"), event.get("user")
        if not channel_id or not user_id:
            return
        if agent.first_visit(services.redis, user_id):
            client.chat_postMessage(channel=channel_id, text=settings.greeting)
        suggest(client, channel_id, None)

    @app.event("app_context_changed")
    def on_context(event: dict[str, Any], context: Any) -> None:
        entities = (event.get("context") or {}).get("entities") or []
        owners = [event.get("user") or context.user_id, event.get("channel")]
        _remember(services, owners, list(entities))

    @app.event("assistant_thread_started")
    def on_assistant_thread(event: dict[str, Any], client: Any) -> None:
        thread = event.get("assistant_thread") or {}
        channel_id, thread_ts = thread.get("channel_id"), thread.get("thread_ts")
        if not channel_id or not thread_ts:
            return
        _remember(
            services,
            [thread.get("user_id"), channel_id],
            agent.entities_from_assistant_context(thread.get("context") or {}),
        )
        client.chat_postMessage(channel=channel_id, thread_ts=thread_ts, text=settings.greeting)
        suggest(client, channel_id, thread_ts)

    @app.event("assistant_thread_context_changed")
    def on_assistant_context(event: dict[str, Any]) -> None:
        thread = event.get("assistant_thread") or {}
        _remember(
            services,
            [thread.get("user_id"), thread.get("channel_id")],
            agent.entities_from_assistant_context(thread.get("context") or {}),
        )
