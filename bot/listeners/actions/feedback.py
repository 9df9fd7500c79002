"""The feedback buttons under every answer."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from slack_bolt import Ack, App

from bot import blocks, ids, messages
from bot.feedback import cast_vote
from bot.runtime import Services
from core.store import Vote, VoteResult, VoteSource

logger = logging.getLogger(__name__)


def _reply_text(result: VoteResult, vote: Vote) -> str:
    if result is VoteResult.NO_SUCH_ANSWER:
        return messages.VOTE_NO_ANSWER
    if result is VoteResult.CHANGED:
        return messages.VOTE_CHANGED[vote.value]
    if result is VoteResult.UNCHANGED:
        return messages.VOTE_UNCHANGED
    return messages.VOTE_THANKS[vote.value]


def register(app: App, services: Services) -> None:
    """Attach the feedback button listener."""

    @app.action(ids.FEEDBACK)
    def on_feedback(ack: Ack, body: dict[str, Any], client: Any) -> None:
        """The vote is recorded (one script, about a millisecond) before Slack gets its
        ack: an acknowledged vote is never lost to a crash."""
        action = body["actions"][0]
        user_id = body["user"]["id"]
        channel_id = (body.get("channel") or {}).get("id") or body["container"]["channel_id"]
        message = body.get("message") or {}
        message_ts = body.get("container", {}).get("message_ts") or message["ts"]
        try:
            vote = Vote(action.get("value"))
        except ValueError:
            ack()
            logger.warning("feedback with unknown value %r ignored", action.get("value"))
            return
        try:
            result, answer_id = cast_vote(
                services,
                channel_id=channel_id,
                message_ts=message_ts,
                user_id=user_id,
                vote=vote,
                source=VoteSource.BUTTON,
            )
            text = _reply_text(result, vote)
        except RedisError:
            logger.exception("recording a vote failed")
            result, answer_id, text = VoteResult.NO_SUCH_ANSWER, None, messages.VOTE_UNAVAILABLE
        ack()
        if vote is Vote.DOWN and answer_id and result is not VoteResult.NO_SUCH_ANSWER:
            client.views_open(
                trigger_id=body["trigger_id"], view=blocks.correction_modal(answer_id)
            )
        client.chat_postEphemeral(
            channel=channel_id,
            user=user_id,
            thread_ts=message.get("thread_ts") or message_ts,
            text=text,
        )
