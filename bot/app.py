"""Building the Bolt app: middleware, then the listeners of every Slack surface."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from slack_bolt import App, BoltResponse

from bot.listeners import actions, commands, events, views
from bot.runtime import Services

logger = logging.getLogger(__name__)


def build_app(services: Services) -> App:
    """The Bolt app for HTTP or Socket Mode, with its listeners registered."""
    app = App(
        signing_secret=services.settings.secrets.slack_signing_secret,
        client=services.slack,
        process_before_response=False,
        ignoring_self_events_enabled=True,
    )

    @app.middleware
    def drop_redelivered_events(body: dict[str, Any], next: Any) -> BoltResponse | None:  # noqa: A002
        """Slack redelivers an event it thinks we missed; handle each event id once."""
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if event_id:
            try:
                first = services.store.first_delivery(event_id)
            except RedisError:
                first = True  # the per-message claim still guards against double answers
            if not first:
                logger.info("event %s redelivered, already handled", event_id)
                return BoltResponse(status=200, body="", headers={"X-Slack-No-Retry": "1"})
        return next()

    events.register(app, services)
    actions.register(app, services)
    commands.register(app, services)
    views.register(app, services)
    return app
