"""Answering one Slack message: history → prompt → streamed answer → stored transcript.

:func:`answer` is a coroutine. In the web process it runs on the answer engine's event
loop (:mod:`bot.engine`), hundreds at once, each journaled so a crash hands it to the
queue (see :mod:`bot.dispatch` and :mod:`bot.journal`); in an answer worker the RQ job
:func:`answer_job` runs the same coroutine when the web process had no free slot or died
while answering. When Redis is down the web process answers anyway: the user gets an
answer, unrecorded.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError

from bot import agent, attachments, blocks, messages, mrkdwn
from bot.engine import AsyncServices
from bot.runtime import make_slack_client, worker_services
from bot.streaming import AnswerWriter
from core import canary, logs, metrics
from core.conversation import PromptTooLong, Turn, build_prompt
from core.errors import ModelError, TuneloopError
from core.llm import stream_answer
from core.settings import Settings
from core.store import AnswerRecord, AnswerState, answer_id_for
from core.tokens import counter_for_model

logger = logging.getLogger(__name__)

JOB_FUNCTION = "bot.answering.answer_job"
MAX_HISTORY_PAGES = 20
SAVE_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0)  # an answer waits for Redis before going unrecorded
_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


class AnswerAlreadyReported(TuneloopError):
    """A retried answer job whose failure the user was already told about."""


@dataclass(frozen=True)
class Question:
    """A user message to answer, as plain values taken from the Slack event."""

    team_id: str
    channel_id: str
    user_id: str
    message_ts: str
    thread_ts: str
    text: str
    files: tuple[str, ...] = ()  # ids of the files attached to the message

    @property
    def reply_thread(self) -> str:
        """Answers go in the message's thread (a top-level message starts one)."""
        return self.thread_ts or self.message_ts

    @property
    def answer_id(self) -> str:
        """Stable per question, so a retried job does not create a second record."""
        return answer_id_for(self.channel_id, self.message_ts)


def answer_job(
    team_id: str,
    channel_id: str,
    user_id: str,
    message_ts: str,
    thread_ts: str,
    text: str,
    cut_off: list[str] | None = None,
    files: list[str] | None = None,
) -> str | None:
    """RQ entry point: answer one message; logs and re-raises so failures are visible.

    ``cut_off`` lists messages an earlier attempt showed before its process died: they
    are marked as cut off first, so the thread does not read as two answers. The answer
    is the web process's own coroutine, run on a loop of its own.
    """
    question = Question(
        team_id, channel_id, user_id, message_ts, thread_ts, text, tuple(files or ())
    )
    services = worker_services()
    store = services.store
    state = store.answer_state(channel_id, message_ts)
    if state is AnswerState.DONE:
        logger.info("%s was already answered", question.answer_id)
        return None
    if state is AnswerState.FAILED:
        raise AnswerAlreadyReported(f"{question.answer_id}: the failure was already reported")
    try:
        answer_id = asyncio.run(
            _answer_in_job(services.settings, services.bot_user_id, question, cut_off or [])
        )
    except Exception:
        logger.exception("answering %s failed", question.answer_id)
        store.finish_answering(channel_id, message_ts, AnswerState.FAILED)
        raise
    # Answered and shown: a rerun of this job must post nothing (waits out a short outage).
    for delay_s in (*SAVE_RETRY_DELAYS_S, None):
        try:
            store.finish_answering(channel_id, message_ts, AnswerState.DONE)
            break
        except RedisError:
            if delay_s is None:
                raise
            time.sleep(delay_s)
    return answer_id


async def _answer_in_job(
    settings: Settings, bot_user_id: str, question: Question, cut_off: list[str]
) -> str | None:
    services = await AsyncServices.open(settings, bot_user_id)
    try:
        for ts in cut_off:
            await _mark_cut_off(services, question.channel_id, ts)
        return await answer(services, question)
    finally:
        await services.close()


async def _mark_cut_off(services: AsyncServices, channel_id: str, ts: str) -> None:
    """End a dead attempt's message with a note: its stream if Slack still holds it open,
    else by replacing its text."""
    note = messages.CUT_OFF
    try:
        await services.slack.chat_stopStream(channel=channel_id, ts=ts, markdown_text="\n\n" + note)
        return
    except SlackApiError as exc:
        logger.info("cut-off message %s not streaming (%s)", ts, exc.response.get("error"))
    try:
        await services.slack.chat_update(channel=channel_id, ts=ts, text=note, blocks=[])
    except SlackApiError as exc:
        logger.warning("could not mark message %s as cut off: %s", ts, exc.response.get("error"))


def clean_text(text: str, bot_user_id: str) -> str:
    """The message as the model should read it: the bot's own mention removed."""
    text = _MENTION.sub(lambda m: "" if m.group(1) == bot_user_id else m.group(0), text)
    return mrkdwn.to_model_text(text).strip()


async def thread_turns(services: AsyncServices, question: Question) -> list[Turn]:
    """The conversation so far, oldest first, ending with the question itself.

    Only messages before the question count (a slow answer must not read later ones);
    other bots' messages are left out.
    """
    bot_id = services.bot_user_id
    turns: list[Turn] = []
    if question.thread_ts:
        history: list[dict] = []
        cursor = None
        for _ in range(MAX_HISTORY_PAGES):
            page = await services.slack.conversations_replies(
                channel=question.channel_id, ts=question.thread_ts, limit=200, cursor=cursor
            )
            history.extend(page.get("messages", []))
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        for message in history[-services.settings.slack.history_messages - 1 :]:
            if float(message.get("ts", "0")) >= float(question.message_ts):
                continue
            if message.get("user") == bot_id:
                turns.append(Turn("assistant", mrkdwn.to_model_text(message.get("text", ""))))
            elif not message.get("bot_id") and not message.get("subtype"):
                turns.append(Turn("user", clean_text(message.get("text", ""), bot_id)))
    turns.append(Turn("user", clean_text(question.text, bot_id)))
    return turns


class ThinkingStatus:
    """Shows "is thinking…" if the model has not started answering after a moment.

    A fast answer never pays for the extra Slack call (a sleeping task, cancelled);
    :meth:`settle` is awaited before the first part of the answer is posted, so a status
    can never land after it.
    """

    def __init__(self, services: AsyncServices, question: Question, delay_s: float) -> None:
        self._services = services
        self._question = question
        self._calling = False
        self._task = asyncio.create_task(self._show(delay_s))

    async def _show(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._calling = True
        try:
            await self._services.slack.assistant_threads_setStatus(
                channel_id=self._question.channel_id,
                thread_ts=self._question.reply_thread,
                status=messages.THINKING,
            )
        except SlackApiError as exc:
            logger.debug("setStatus refused: %s", exc.response.get("error"))
        except Exception:
            logger.exception("showing the thinking status failed")

    async def settle(self) -> None:
        """Cancel the status if it is not shown yet, or wait until its call is done."""
        if self._calling:
            await self._task
        else:
            self._task.cancel()


async def _post(services: AsyncServices, question: Question, text: str) -> None:
    await services.slack.chat_postMessage(
        channel=question.channel_id, thread_ts=question.reply_thread, text=text
    )


def _refused(exc: SlackApiError, question: Question) -> bool:
    """True when Slack is rate limiting us beyond the client's retries (the answer is then
    kept to post later); any other refusal is re-raised."""
    if exc.response is None or exc.response.status_code != 429:
        raise exc
    logger.warning("Slack keeps answering 429: %s is stored and posted later", question.answer_id)
    return True


async def _current_model(services: AsyncServices) -> str:
    default = services.settings.model.base_model
    try:
        return await services.store.current_model(default)
    except RedisError:
        logger.warning("Redis unavailable: answering with the configured base model")
        return default


async def answer(
    services: AsyncServices,
    question: Question,
    *,
    model: str | None = None,
    on_shown: Callable[[str], Awaitable[None]] | None = None,
) -> str | None:
    """Answer ``question`` in its thread; return the answer id if it was stored. The
    caller then marks the question answered (:meth:`Store.finish_answering`): an answer
    stored before its feedback row was shown keeps its claim and journal entry until
    then, so a process killed in between leaves it to be answered again.

    ``model`` is the current model when the caller has just read it (else it is read
    here); ``on_shown`` is told each message shown before the answer is finished. Model
    errors end in a short message in the thread (after the client's retries) and are
    re-raised; a Redis outage only costs the record.
    """
    with logs.context(
        request_id=question.answer_id,
        team=question.team_id,
        channel=question.channel_id,
        user=question.user_id,
    ):
        model = model or await _current_model(services)
        # canary: the thread's model (pinned; a canary candidate for its share of threads)
        model = await canary.model_for_thread_async(
            services.redis, services.settings, question.channel_id, question.reply_thread, model
        )
        return await _answer(services, question, model, on_shown)


async def _answer(
    services: AsyncServices,
    question: Question,
    model: str,
    on_shown: Callable[[str], Awaitable[None]] | None,
) -> str | None:
    settings = services.settings
    found = await _read_files(settings, question, model)
    has_text = bool(clean_text(question.text, services.bot_user_id))
    if found.notices and not found.any and not has_text:
        await _post(services, question, "\n".join(found.notices))
        return None
    if not has_text and not found.any:
        await _post(services, question, messages.NO_TEXT)
        return None
    counter = counter_for_model(model)
    try:
        prompt = build_prompt(
            await agent.system_prompt(
                settings.model.system_prompt, services.redis, question.user_id, question.channel_id
            ),
            attachments.question_with_documents(
                await thread_turns(services, question),
                found,
                attachments.budget(settings),
                counter,
            ),
            settings.model.context_token_budget,
            counter,
        )
    except PromptTooLong as exc:
        await _post(
            services, question, messages.TOO_LONG.format(tokens=exc.tokens, budget=exc.budget)
        )
        return None
    prompt = attachments.with_images(prompt, found)
    if found.notices:
        await _post(services, question, "\n".join(found.notices))
    writer = AnswerWriter(
        services.slack,
        channel_id=question.channel_id,
        thread_ts=question.reply_thread,
        team_id=question.team_id,
        user_id=question.user_id,
        buffer_chars=settings.slack.stream_buffer_chars,
        max_chars=settings.slack.max_message_chars,
        update_interval_s=settings.slack.fallback_update_interval_s,
        stream_after_s=settings.slack.stream_start_after_s,
        on_shown=on_shown,
    )
    created_at = time.time()
    status = ThinkingStatus(services, question, settings.slack.thinking_status_after_s)
    refused = False  # Slack kept answering 429: the answer is stored and posted later
    try:
        stream = await stream_answer(services.llm, settings.model, model, prompt)
        async for piece in stream:
            await status.settle()
            if not refused:
                try:
                    await writer.write(piece)
                except SlackApiError as exc:
                    refused = _refused(exc, question)
        await status.settle()
    except ModelError as exc:
        await status.settle()
        await services.store.add_metrics([metrics.counter_update("tuneloop_errors", kind=exc.kind)])
        text = messages.MODEL_ERRORS.get(exc.kind, messages.UNEXPECTED_ERROR)
        if writer.started and not refused:
            await writer.write_trusted("\n\n" + messages.MODEL_ERRORS["interrupted"])
            await writer.finish([])
        elif not refused:
            await _post(services, question, text)
        raise

    def record_of(posted: Sequence[str]) -> AnswerRecord:
        return AnswerRecord(
            answer_id=question.answer_id,
            team_id=question.team_id,
            channel_id=question.channel_id,
            thread_ts=question.reply_thread,
            question_ts=question.message_ts,
            user_id=question.user_id,
            messages=prompt,
            answer=stream.text,
            model=model,
            prompt_tokens=stream.prompt_tokens or counter.count_messages(prompt),
            completion_tokens=stream.completion_tokens or counter.count(stream.text),
            latency_ms=stream.latency_ms,
            created_at=created_at,
            message_ts=tuple(posted),
        )

    elapsed = time.time() - created_at
    updates = [
        metrics.counter_update("tuneloop_answers", model=model),
        *metrics.observation_updates("tuneloop_answer_latency_seconds", elapsed),
    ]
    saved: list[Sequence[str]] = []

    async def unfinished(record: AnswerRecord, updates: Sequence[tuple[str, float]]) -> None:
        # Until the row is shown the question stays claimed and journaled: a process
        # killed before that leaves it to be answered again (the caller finishes it).
        await services.store.save_answer(record, updates, finished=False)

    async def save_before_feedback(posted: Sequence[str]) -> None:
        """The feedback row is about to appear: store the answer first, so a click on it
        always finds the answer."""
        if await _save(unfinished, record_of(posted), updates):
            saved.append(list(posted))

    posted: list[str] = []
    if not refused:
        try:
            posted = await writer.finish(
                blocks.feedback_blocks(), before_feedback=save_before_feedback
            )
        except SlackApiError as exc:
            refused = _refused(exc, question)
    logger.info(
        "answered",
        extra={
            "model": model,
            "latency_ms": int(elapsed * 1000),
            "parts": len(posted),
            "stored_before_feedback": bool(saved),
        },
    )
    if saved and saved[0] == posted and not refused:
        return question.answer_id
    save = services.store.save_unposted if refused else services.store.save_answer
    # Stored again only when the messages changed since (a stream Slack cut short):
    # its metrics were counted the first time.
    if await _save(save, record_of(posted), [] if saved else updates):
        return question.answer_id
    return None


async def _read_files(
    settings: Settings, question: Question, model: str
) -> attachments.Attachments:
    """The question's files, read in a worker thread (downloads are rare and blocking;
    the loop keeps serving the other answers meanwhile)."""
    if not question.files:
        return attachments.Attachments()
    return await asyncio.to_thread(
        attachments.read, make_slack_client(settings), question.files, settings.files, model
    )


async def _save(
    save: Callable[[AnswerRecord, Sequence[tuple[str, float]]], Awaitable[None]],
    record: AnswerRecord,
    updates: Sequence[tuple[str, float]],
) -> bool:
    """Store an answer, waiting out a short Redis outage; False if it stays unrecorded."""
    for delay_s in (*SAVE_RETRY_DELAYS_S, None):
        try:
            await save(record, updates)
            return True
        except RedisError:
            if delay_s is None:
                logger.exception("storing answer %s failed: it stays unrecorded", record.answer_id)
                return False
            await asyncio.sleep(delay_s)  # a Redis restart or failover takes a moment
    return False
