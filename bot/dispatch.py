"""Handing a question over for answering: once per message, here or through the queue.

A web process with a free slot answers in the listener thread itself, its claim
journaled so a crash hands the answer to the queue (see :mod:`bot.journal`); when its
slots are full, the question is queued for the answer workers. If Redis is unreachable
the answer is produced here and now (unrecorded).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError
from rq import Retry

from bot.answering import JOB_FUNCTION, Question, answer
from bot.reporting import post_run_events_soon
from bot.runtime import Services
from core.run_control import LoopContext, supervise_active
from core.store import AnswerState

logger = logging.getLogger(__name__)

ANSWER_JOB_TIMEOUT_S = 600


def submit_question(services: Services, question: Question) -> bool:
    """Answer ``question`` unless another delivery already took it; True if it is ours.

    The claim derives from the message, so Slack's retries, and the app_mention + message
    pair Slack sends for one mention, give one answer.
    """
    journal = services.journal
    try:
        if journal.acquire():
            try:
                return _answer_here(services, question)
            finally:
                journal.release()
        if services.store.claim_message(question.channel_id, question.message_ts) is None:
            logger.info("message %s already taken, not answering again", question.answer_id)
            return False
        enqueue_answer(services, question)
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


def _answer_here(services: Services, question: Question) -> bool:
    journal = services.journal
    entry = journal.entry(question.answer_id, dataclasses.asdict(question))
    model = services.store.claim_message(
        question.channel_id, question.message_ts, journal_entry=entry.dumps()
    )
    if model is None:
        logger.info("message %s already taken, not answering again", question.answer_id)
        return False
    try:
        stored = answer(
            services,
            question,
            model=model or services.settings.model.base_model,
            on_shown=lambda ts: journal.shown(entry, ts),
        )
    except Exception:
        logger.exception("answering %s failed", question.answer_id)
        journal.finish(question.channel_id, question.message_ts, AnswerState.FAILED)
        return True
    if stored is None:  # a stored answer's record already ended its journal entry
        journal.finish(question.channel_id, question.message_ts, AnswerState.DONE)
    return True


def enqueue_answer(services: Services, question: Question, cut_off: Sequence[str] = ()) -> None:
    """Queue ``question`` for the answer workers (its message already claimed); ``cut_off``
    lists messages of an unfinished earlier attempt, which the job marks as cut off.

    The job id derives from the message, and the job checks how answering the message
    stands before it starts, so a second run posts nothing.
    """
    services.answers_queue.enqueue(
        JOB_FUNCTION,
        kwargs={**dataclasses.asdict(question), "cut_off": list(cut_off)},
        job_id="answer-" + question.answer_id.replace(".", "_"),
        job_timeout=ANSWER_JOB_TIMEOUT_S,
        retry=Retry(max=1),
        result_ttl=3600,
        failure_ttl=7 * 86400,
    )


def start_journal(services: Services) -> None:
    """Start this web process's heartbeat, recovery sweep and periodic checks (answers
        in-process from then): the training run going is supervised, and its events posted
    to Slack, on the same beat."""

    def requeue(question: dict[str, Any], shown: list[str]) -> None:
        enqueue_answer(services, Question(**question), cut_off=shown)

    every_s = services.journal.interval_s
    ctx = LoopContext(services.settings, services.redis, services.llm)
    chores = [lambda: supervise_active(ctx, every_s), lambda: post_run_events_soon(services)]
    services.journal.start(requeue, chores=chores)
