"""Votes and corrections, from buttons, reactions and the correction modal."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from bot.runtime import Services
from core import approval, metrics
from core.store import Vote, VoteResult, VoteSource

logger = logging.getLogger(__name__)

_REACTIONS = {"+1": Vote.UP, "thumbsup": Vote.UP, "-1": Vote.DOWN, "thumbsdown": Vote.DOWN}


def vote_for_reaction(reaction: str) -> Vote | None:
    """:+1: / :-1: (any skin tone) as a vote; None for every other emoji."""
    return _REACTIONS.get(reaction.split("::", 1)[0])


def cast_vote(
    services: Services,
    *,
    channel_id: str,
    message_ts: str,
    user_id: str,
    vote: Vote | None,
    source: VoteSource,
) -> tuple[VoteResult, str | None]:
    """Record (or withdraw, with ``vote=None``) a vote on the answer a message belongs to.

    Returns the result and the answer id; raises RedisError when storage is down so the
    caller can tell the voter their vote was not recorded.
    """
    answer_id = services.store.answer_for_message(channel_id, message_ts)
    if answer_id is None:
        return VoteResult.NO_SUCH_ANSWER, None
    result = services.store.record_vote(answer_id, user_id, vote, source)
    logger.info("vote %s by %s on %s: %s", vote, user_id, answer_id, result.value)
    if vote is not None and result in (VoteResult.RECORDED, VoteResult.CHANGED):
        metrics.incr(services.redis, "tuneloop_votes", vote=vote.value, source=source.value)
        _auto_approve(services, answer_id)
    return result, answer_id


def _auto_approve(services: Services, answer_id: str) -> None:
    """Apply the approval policy after a vote; a failure here never loses the vote."""
    try:
        if approval.auto_approve(services.store, services.settings.approval, answer_id):
            logger.info("%s approved automatically", answer_id)
    except RedisError:
        logger.exception("auto-approval of %s failed; an admin can approve it", answer_id)


def save_correction(services: Services, *, answer_id: str, user_id: str, text: str) -> bool:
    """Store a correction with the user's thumbs-down; False if the answer no longer exists."""
    stored = services.store.add_correction(answer_id, user_id, text)
    if stored:
        services.store.record_vote(answer_id, user_id, Vote.DOWN, VoteSource.BUTTON)
    return stored


__all__ = ["RedisError", "cast_vote", "save_correction", "vote_for_reaction"]
