"""The correction modal a thumbs-down opens."""

from __future__ import annotations

import json
import logging
from typing import Any

from redis.exceptions import RedisError
from slack_bolt import Ack, App

from bot import blocks, ids, messages
from bot.feedback import save_correction
from bot.runtime import Services

logger = logging.getLogger(__name__)


def register(app: App, services: Services) -> None:
    """Attach the correction modal listener."""

    @app.view(ids.CORRECTION_VIEW)
    def on_correction(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        value = (
            view.get("state", {})
            .get("values", {})
            .get(ids.CORRECTION_BLOCK, {})
            .get(ids.CORRECTION_INPUT, {})
            .get("value")
        ) or ""
        text = value.strip()
        if not text:
            ack(response_action="errors", errors={ids.CORRECTION_BLOCK: messages.CORRECTION_EMPTY})
            return
        if len(text) > blocks.CORRECTION_MAX_CHARS:
            limit = blocks.CORRECTION_MAX_CHARS
            ack(
                response_action="errors",
                errors={ids.CORRECTION_BLOCK: messages.CORRECTION_TOO_LONG.format(limit=limit)},
            )
            return
        try:
            answer_id = json.loads(view.get("private_metadata") or "{}")["answer_id"]
        except (ValueError, KeyError, TypeError):
            logger.warning("correction modal without an answer id ignored")
            ack()
            return
        try:
            stored = save_correction(
                services, answer_id=answer_id, user_id=body["user"]["id"], text=text
            )
        except RedisError:
            logger.exception("storing a correction failed")
            ack(response_action="errors", errors={ids.CORRECTION_BLOCK: messages.VOTE_UNAVAILABLE})
            return
        if not stored:
            ack(response_action="errors", errors={ids.CORRECTION_BLOCK: messages.VOTE_NO_ANSWER})
            return
        ack(response_action="update", view=blocks.thanks_modal())
