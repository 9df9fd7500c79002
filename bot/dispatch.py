"""Taking a question in and handing it over for answering: once per message, durable
before Slack hears back.

:func:`intake` runs in Bolt's middleware, before the ack is sent (HTTP and Socket Mode
alike): one Lua script claims the message, writes its in-flight journal entry (owned by
this process) and marks its thread as one the bot speaks in. So whatever Slack got a 2xx
for is in Redis, and if this process dies before the answer is stored, the journal sweep
of a live process queues it again (see :mod:`bot.journal`).

:func:`hand_off` runs in the listener, after the ack: with a free slot the answer runs as
a coroutine on the answer engine (:mod:`bot.engine`); otherwise the job is queued for the
answer workers and the journal entry removed in the same transaction. If Redis is
unreachable the answer is produced here and now (unrecorded, de-duplicated in memory).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Retry
from slack_sdk.errors import SlackApiError

from bot import blocks
from bot.answering import JOB_FUNCTION, Question, answer
from bot.engine import AsyncServices
from bot.journal import Entry
from bot.reporting import post_run_events_soon
from bot.runtime import Services
from bot.streaming import CLOSE_RESERVE, neutralise, split_point
from core.replies import text
from core.run_control import LoopContext, supervise_active
from core.store import AnswerState

logger = logging.getLogger(__name__)

ANSWER_JOB_TIMEOUT_S = 600


@dataclass(frozen=True)
class Intake:
    """A question taken in: recorded with its journal entry and the current model, or
    (``entry`` None) unrecorded because Redis was unreachable."""

    question: Question
    model: str
    entry: Entry | None


def intake(services: Services, question: Question) -> Intake | None:
    """Record ``question`` durably (claim, journal entry, thread flag: one script) unless
    another delivery already took it (then None).

    The claim derives from the message, so Slack's retries, and the app_mention + message
    pair Slack sends for one mention, give one answer.
    """
    journal = services.journal
    entry = journal.entry(question.answer_id, dataclasses.asdict(question))
    base_model = services.settings.model.base_model
    try:
        model = services.store.claim_message(
            question.channel_id,
            question.message_ts,
            journal_entry=entry.dumps(),
            thread_ts=question.reply_thread,
        )
    except RedisError:
        logger.exception("Redis unavailable: %s will be answered unrecorded", question.answer_id)
        if not services.local_claims.claim(question.answer_id):
            return None
        return Intake(question, base_model, None)
    if model is None:
        logger.info("message %s already taken, not answering again", question.answer_id)
        return None
    return Intake(question, model or base_model, entry)


def hand_off(services: Services, taken: Intake) -> None:
    """Answer a question taken in: on the answer engine if a slot is free, else through
    the queue (or in-process anyway when Redis refuses the hand-over: the entry stays
    journaled, so a crash still recovers it)."""
    journal = services.journal
    question, entry = taken.question, taken.entry
    if entry is None:
        services.engine.submit(lambda aservices: _answer_unrecorded(aservices, question))
        return
    if not journal.acquire():
        try:
            services.store.hand_to_queue(
                question.answer_id, lambda pipe: enqueue_answer(services, question, pipeline=pipe)
            )
            return
        except RedisError:
            logger.exception("queueing %s failed: answering it here", question.answer_id)
        slot = False
    else:
        slot = True
    services.engine.submit(
        lambda aservices: _answer_journaled(services, aservices, taken, entry, slot)
    )


async def _answer_unrecorded(services: AsyncServices, question: Question) -> None:
    try:
        await answer(services, question, model=services.settings.model.base_model)
    except Exception:
        logger.exception("answering %s in-process failed", question.answer_id)


async def _answer_journaled(
    services: Services, aservices: AsyncServices, taken: Intake, entry: Entry, slot: bool
) -> None:
    journal, question = services.journal, taken.question

    async def shown(ts: str) -> None:
        entry.shown.append(ts)
        try:
            await aservices.store.put_inflight(entry.answer_id, entry.dumps())
        except RedisError:
            logger.warning("Redis unavailable: message %s not journaled", ts)

    try:
        try:
            await answer(aservices, question, model=taken.model, on_shown=shown)
        except Exception:
            logger.exception("answering %s failed", question.answer_id)
            await _finish(journal, aservices, question, AnswerState.FAILED)
            return
        await _finish(journal, aservices, question, AnswerState.DONE)
    finally:
        if slot:
            journal.release()


async def _finish(
    journal: Any, aservices: AsyncServices, question: Question, state: AnswerState
) -> None:
    """Record how answering ended; while Redis is away the journal retries it (an entry
    left behind would make another process answer again once this one is gone)."""
    try:
        await aservices.store.finish_answering(question.channel_id, question.message_ts, state)
    except RedisError:
        journal.finish_later(question.channel_id, question.message_ts, state)


def enqueue_answer(
    services: Services,
    question: Question,
    cut_off: Sequence[str] = (),
    pipeline: Pipeline | None = None,
) -> None:
    """Queue ``question`` for the answer workers (its message already claimed); ``cut_off``
    lists messages of an unfinished earlier attempt, which the job marks as cut off. With
    ``pipeline`` the job's writes join it (the caller executes it).

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
        pipeline=pipeline,
    )


def post_unposted(services: Services) -> int:
    """Post the answers Slack refused with 429 for longer than the client retries; returns
    how many were posted. Taking each one is atomic (one live process posts it) and it
    leaves the unposted hash only with the record of its messages, so a process killed
    while posting leaves it to the next; one Slack still refuses is given back for the
    next beat, and the others wait with it."""
    posted = 0
    owner = services.journal.owner
    for answer_id, raw in services.store.unposted().items():
        if not services.store.take_unposted(answer_id, raw, owner):
            continue
        try:
            item = json.loads(raw)
            message_ts = _post_whole(services, item["channel_id"], item["thread_ts"], item["text"])
        except SlackApiError as exc:
            services.store.release_unposted(answer_id)
            logger.warning("answer %s still not posted: %s", answer_id, exc.response.get("error"))
            return posted
        except (ValueError, KeyError):
            logger.exception("dropping a malformed unposted answer %s", answer_id)
            services.store.drop_unposted(answer_id)
            continue
        services.store.posted_later(answer_id, item["channel_id"], message_ts)
        logger.info("answer %s posted after Slack's rate limit", answer_id)
        posted += 1
    return posted


def _post_whole(services: Services, channel_id: str, thread_ts: str, text: str) -> list[str]:
    """Post a whole answer, continued over messages as the writer would, its feedback row
    on the last one; returns the messages' ts."""
    limit = services.settings.slack.max_message_chars - CLOSE_RESERVE
    rest, message_ts = neutralise(text), []
    while rest:
        split = split_point(rest, limit)
        part = rest[: split.cut] + split.close
        rest = split.reopen + rest[split.cut :] if split.cut < len(rest) else ""
        content = blocks.markdown_blocks(part) + ([] if rest else blocks.feedback_blocks())
        response = services.slack.chat_postMessage(
            channel=channel_id, thread_ts=thread_ts, text=part, blocks=content
        )
        message_ts.append(str(response["ts"]))
    return message_ts


class StuckJobs:
    """Answer jobs a worker took from the queue but never started, put back in the queue.

    rq's worker moves a job from the queue to an intermediate list (``BLMOVE``) and only
    then registers it as started. A worker killed, or cut off by a Redis restart, between
    the two leaves the job in neither the queue nor a registry; rq's own maintenance
    requeues it only after two sightings ten minutes apart. A job seen in the list
    without being started for ``after_s`` (far longer than the step takes) goes back to
    the queue, by exactly one process.
    """

    def __init__(self, services: Services, after_s: float) -> None:
        self.services = services
        self.after_s = after_s
        self._seen: dict[str, float] = {}

    def __call__(self) -> int:
        """Requeue the jobs stuck for ``after_s``; returns how many."""
        queue = self.services.answers_queue
        now = time.monotonic()
        listed = [
            text(job_id)
            for job_id in self.services.redis.lrange(queue.intermediate_queue_key, 0, -1)
        ]
        started = set(queue.started_job_registry.get_job_ids(cleanup=False))
        stuck = {job_id for job_id in listed if job_id not in started}
        self._seen = {job_id: self._seen.get(job_id, now) for job_id in stuck}
        moved = 0
        for job_id, since in self._seen.items():
            if now - since >= self.after_s and self.services.store.requeue_stuck_job(
                queue.intermediate_queue_key, queue.key, job_id
            ):
                logger.warning("answer job %s was taken but never started: queued again", job_id)
                moved += 1
        return moved


def start_journal(services: Services) -> None:
    """Start this web process's heartbeat, recovery sweep and periodic checks (answers
    in-process from then): the training run going is supervised, its events posted to
    Slack, and answers Slack rate-limited away are posted, on the same beat."""

    def requeue(question: dict[str, Any], shown: list[str], pipeline: Pipeline) -> None:
        enqueue_answer(services, Question(**question), cut_off=shown, pipeline=pipeline)

    every_s = services.journal.interval_s
    ctx = LoopContext(services.settings, services.redis, services.llm)
    services.journal.start(
        requeue,
        chores=[
            lambda: supervise_active(ctx, every_s),
            lambda: post_run_events_soon(services),
            lambda: post_unposted(services),
            StuckJobs(services, services.journal.recover_after_s),
        ],
    )
