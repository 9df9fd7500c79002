"""The admin's edit-before-approve modal of ``/finetune review``."""

from __future__ import annotations

import json
import logging
from typing import Any

from redis.exceptions import RedisError
from slack_bolt import Ack, App
from slack_sdk.webhook import WebhookClient

from bot import blocks, ids, messages
from bot.finetune import is_admin, review_reply
from bot.listeners.actions.review import outcome_text
from bot.runtime import Services
from core import approval, audit
from core.approval import Decision

logger = logging.getLogger(__name__)


def register(app: App, services: Services) -> None:
    """Attach the edit modal's submission listener."""

    @app.view(ids.REVIEW_EDIT_VIEW)
    def on_edit_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        user_id = body["user"]["id"]
        if not is_admin(services, user_id):
            logger.warning("non-admin %s submitted the review edit modal", user_id)
            ack(response_action="errors", errors={ids.REVIEW_EDIT_BLOCK: messages.NOT_ADMIN})
            return
        text = (
            (
                view.get("state", {})
                .get("values", {})
                .get(ids.REVIEW_EDIT_BLOCK, {})
                .get(ids.REVIEW_EDIT_INPUT, {})
                .get("value")
            )
            or ""
        ).strip()
        if not text:
            ack(
                response_action="errors",
                errors={ids.REVIEW_EDIT_BLOCK: messages.REVIEW_EDIT_EMPTY},
            )
            return
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            answer_id = str(meta["answer_id"])
        except (ValueError, KeyError, TypeError):
            logger.warning("review edit modal without an answer id ignored")
            ack()
            return
        try:
            result = approval.decide(
                services.store, answer_id, Decision.EDITED, by=user_id, text=text
            )
            audit.audit(services.redis, user_id, "review edited", answer_id)
        except RedisError:
            logger.exception("recording an edited approval failed")
            ack(response_action="errors", errors={ids.REVIEW_EDIT_BLOCK: messages.STORAGE_DOWN})
            return
        ack(response_action="clear")
        response_url = meta.get("response_url")
        if response_url:
            note = outcome_text(result)
            reply = review_reply(services)
            note_block = {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}
            try:
                WebhookClient(response_url).send(
                    text=f"{note}\n{reply.text}",
                    blocks=[note_block, *(reply.blocks or blocks.text_blocks(reply.text))],
                    replace_original=True,
                    response_type="ephemeral",
                )
            except Exception:  # noqa: BLE001 - the decision is recorded; the list just stays
                logger.exception("refreshing the review list failed")
