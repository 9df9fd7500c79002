"""Handing a question over for answering: once per message, as a job when Redis is up."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from rq import Retry

from bot.answering import JOB_FUNCTION, Question, answer
from bot.runtime import Services

logger = logging.getLogger(__name__)

ANSWER_JOB_TIMEOUT_S = 600


def submit_question(services: Services, question: Question) -> bool:
    """Queue an answer for ``question`` unless another delivery already did; True if queued.

    The claim and the job id both derive from the message, so Slack's retries, and the
    app_mention + message pair Slack sends for one mention, give one answer. If Redis is
    unreachable the answer is produced here and now instead (unrecorded).
    """
    try:
        if not services.store.claim_message(question.channel_id, question.message_ts):
            logger.info("message %s already taken, not answering again", question.answer_id)
            return False
        services.answers_queue.enqueue(
            JOB_FUNCTION,
            kwargs={
                "team_id": question.team_id,
                "channel_id": question.channel_id,
                "user_id": question.user_id,
                "message_ts": question.message_ts,
                "thread_ts": question.thread_ts,
                "text": question.text,
            },
            job_id="answer-" + question.answer_id.replace(".", "_"),
            job_timeout=ANSWER_JOB_TIMEOUT_S,
            retry=Retry(max=1),
            result_ttl=3600,
            failure_ttl=7 * 86400,
        )
        return True
    except RedisError:
        logger.exception("Redis unavailable: answering %s in-process", question.answer_id)
    if not services.local_claims.claim(question.answer_id):
        return False
    try:
        answer(services, question)
    except Exception:
        logger.exception("answering %s in-process failed", question.answer_id)
    return True
