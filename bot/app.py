"""Building the Bolt app: middleware, then the listeners of every Slack surface."""

from __future__ import annotations

import logging
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from redis.exceptions import RedisError
from slack_bolt import App, BoltContext, BoltResponse

from bot.dispatch import intake
from bot.listeners import actions, commands, events, views
from bot.runtime import Services

logger = logging.getLogger(__name__)

LISTENER_THREADS = 32
QUESTION_EVENTS = frozenset({"app_mention", "message"})


class _SameTokenNotice(logging.Filter):
    """Drops Bolt's start-up warning that the token "will be unused": Bolt reads
    SLACK_BOT_TOKEN from the environment and warns because we also give it a client, but
    that client carries the very same token."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be unused" not in record.getMessage()


def build_app(services: Services, listener_executor: Executor | None = None) -> App:
    """The Bolt app for HTTP or Socket Mode, with its listeners registered.

    Listeners run on ``listener_executor`` after the ack; the process shuts it down
    (waiting) on SIGTERM so work already acknowledged is not cut off.
    """
    bolt_logger = logging.getLogger("slack_bolt.App")
    if not any(isinstance(f, _SameTokenNotice) for f in bolt_logger.filters):
        bolt_logger.addFilter(_SameTokenNotice())
    app = App(
        signing_secret=services.settings.secrets.slack_signing_secret,
        client=services.slack,
        process_before_response=False,
        ignoring_self_events_enabled=True,
        listener_executor=listener_executor or ThreadPoolExecutor(max_workers=LISTENER_THREADS),
    )

    @app.middleware
    def drop_redelivered_events(body: dict[str, Any], next: Any) -> BoltResponse | None:  # noqa: A002
        """Slack redelivers an event it thinks we missed; handle each event id once.

        Messages and mentions skip this round trip: the claim on the message (which
        also catches the mention + message pair, two event ids) makes them answered once.
        """
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if event_id and (body.get("event") or {}).get("type") not in QUESTION_EVENTS:
            try:
                first = services.store.first_delivery(event_id)
            except RedisError:
                first = True  # the per-message claim still guards against double answers
            if not first:
                logger.info("event %s redelivered, already handled", event_id)
                return BoltResponse(status=200, body="", headers={"X-Slack-No-Retry": "1"})
        return next()

    @app.middleware
    def take_questions_in(
        body: dict[str, Any],
        context: BoltContext,
        next: Any,  # noqa: A002
    ) -> BoltResponse | None:
        """Record a question durably before Bolt acks it (see bot/dispatch.py): the ack
        is sent after the middleware, so an acknowledged question is never lost."""
        event = body.get("event") or {}
        if body.get("type") == "event_callback" and event.get("type") in QUESTION_EVENTS:
            question = events.question_to_answer(services, event, context.team_id)
            if question is not None:
                context[events.INTAKE] = intake(services, question)
        return next()

    events.register(app, services)
    actions.register(app, services)
    commands.register(app, services)
    views.register(app, services)
    return app
