"""Admin review of rated answers (approve / approve correction / reject / edit) and the
"Promote anyway" button under a refused model's evaluation report.

Every click is checked on the server: a non-admin (or anyone replaying a payload) is
told no and nothing changes. Decisions are logged in the admin log.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from redis.exceptions import RedisError
from slack_bolt import Ack, App, Respond

from bot import blocks, ids, messages
from bot.finetune import is_admin, promote, review_reply
from bot.runtime import Services
from core import approval, audit
from core.approval import Decision, Outcome
from workers import evaluation

logger = logging.getLogger(__name__)

_DECISIONS = {
    ids.REVIEW_APPROVE: Decision.APPROVED,
    ids.REVIEW_APPROVE_CORRECTION: Decision.CORRECTED,
    ids.REVIEW_REJECT: Decision.REJECTED,
}


def _value(body: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(body["actions"][0].get("value") or "{}")
    except (ValueError, KeyError, IndexError):
        return {}
    return value if isinstance(value, dict) else {}


def _refuse(client: Any, body: dict[str, Any], user_id: str) -> None:
    logger.warning("non-admin %s pressed %s", user_id, body["actions"][0].get("action_id"))
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    if channel:
        client.chat_postEphemeral(channel=channel, user=user_id, text=messages.NOT_ADMIN)


def outcome_text(result: approval.Result) -> str:
    """What the admin is told after a decision."""
    if result.outcome is Outcome.DONE and result.decision is not None:
        return messages.REVIEW_DONE[result.decision.value]
    if result.outcome is Outcome.ALREADY_DECIDED:
        previous = result.previous or {}
        return messages.REVIEW_ALREADY.format(
            decision=previous.get("decision", "?"), by=previous.get("by", "?")
        )
    if result.outcome is Outcome.NO_CORRECTION:
        return messages.REVIEW_NO_CORRECTION
    return messages.REVIEW_GONE


def refresh(services: Services, respond: Respond, note: str) -> None:
    """Replace the review message with the note and the answers still pending."""
    reply = review_reply(services)
    note_block = {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}
    respond(
        text=f"{note}\n{reply.text}",
        blocks=[note_block, *(reply.blocks or blocks.text_blocks(reply.text))],
        replace_original=True,
        response_type="ephemeral",
    )


def register(app: App, services: Services) -> None:
    """Attach the review and promote button listeners."""

    @app.action(ids.REVIEW_APPROVE)
    @app.action(ids.REVIEW_APPROVE_CORRECTION)
    @app.action(ids.REVIEW_REJECT)
    def on_decision(ack: Ack, body: dict[str, Any], client: Any, respond: Respond) -> None:
        ack()
        user_id = body["user"]["id"]
        action_id = body["actions"][0]["action_id"]
        if not is_admin(services, user_id):
            _refuse(client, body, user_id)
            return
        answer_id = _value(body).get("answer_id")
        if not answer_id:
            return
        try:
            result = approval.decide(
                services.store, str(answer_id), _DECISIONS[action_id], by=user_id
            )
            audit.audit(
                services.redis, user_id, f"review {_DECISIONS[action_id].value}", str(answer_id)
            )
            refresh(services, respond, outcome_text(result))
        except RedisError:
            logger.exception("recording a review decision failed")
            respond(text=messages.STORAGE_DOWN, response_type="ephemeral", replace_original=False)

    @app.action(ids.REVIEW_EDIT)
    def on_edit(ack: Ack, body: dict[str, Any], client: Any) -> None:
        ack()
        user_id = body["user"]["id"]
        if not is_admin(services, user_id):
            _refuse(client, body, user_id)
            return
        answer_id = str(_value(body).get("answer_id") or "")
        record = services.store.get_answer(answer_id) if answer_id else None
        if record is None:
            return
        found = approval.corrections(services.redis, answer_id)
        text = max(found, key=lambda c: c.at).text if found else record.answer
        client.views_open(
            trigger_id=body["trigger_id"],
            view=blocks.review_edit_modal(answer_id, text, body.get("response_url") or ""),
        )

    @app.action(ids.REVIEW_GOLDEN)
    def on_golden(ack: Ack, body: dict[str, Any], client: Any, respond: Respond) -> None:
        ack()
        user_id = body["user"]["id"]
        if not is_admin(services, user_id):
            _refuse(client, body, user_id)
            return
        answer_id = str(_value(body).get("answer_id") or "")
        try:
            record = services.store.get_answer(answer_id) if answer_id else None
            if record is None:
                refresh(services, respond, messages.REVIEW_GONE)
                return
            question = next(
                (
                    str(m.get("content") or "")
                    for m in reversed(record.messages)
                    if m.get("role") == "user"
                ),
                "",
            )
            added = evaluation.mark_golden(
                services.redis,
                answer_id=answer_id,
                question=question,
                expected=record.answer,
                by=user_id,
            )
            audit.audit(services.redis, user_id, "review golden", answer_id)
            refresh(
                services,
                respond,
                messages.REVIEW_GOLDEN_DONE if added else messages.REVIEW_GOLDEN_ALREADY,
            )
        except RedisError:
            logger.exception("adding a golden example failed")
            respond(text=messages.STORAGE_DOWN, response_type="ephemeral", replace_original=False)

    @app.action(ids.PROMOTE)
    def on_promote(ack: Ack, body: dict[str, Any], client: Any, respond: Respond) -> None:
        ack()
        user_id = body["user"]["id"]
        if not is_admin(services, user_id):
            _refuse(client, body, user_id)
            return
        model = str(_value(body).get("model") or "")
        if not model:
            return
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
            "channel_id", ""
        )
        audit.audit(services.redis, user_id, "promote (button)", model)
        reply = promote(services, model, user_id=user_id, channel_id=channel)
        client.chat_postEphemeral(channel=channel, user=user_id, text=reply.text)
