"""Writing an answer into a Slack thread while the model generates it.

Preferred: Slack's streaming messages (chat.startStream / appendStream / stopStream
through slack_sdk's ``chat_stream``), started once the answer outgrows one buffer or takes
longer than a moment; an answer that arrives whole is posted as one message. Where Slack refuses streaming, or ends a long
stream early, the writer falls back to posting a message and updating it at most once
per interval. Answers longer than one message continue in a new message, never cut.

Everything the model wrote goes through :func:`neutralise` first: model output is shown
as written and can never ping a channel or a person, or hide a link behind other words.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks, messages

logger = logging.getLogger(__name__)

STREAM_LOST = {"message_not_in_streaming_state", "message_not_found", "streaming_state_conflict"}


def neutralise(text: str) -> str:
    """Model text made inert for Slack: shown as written, never acted on.

    Slack reads ``<!channel>``, ``<!here>``, ``<!everyone>``, ``<@U…>``, ``<!subteam^…>``
    and ``<url|label>`` as control sequences; its formatting rules say to escape ``&``,
    ``<`` and ``>`` as HTML entities so they show as text (entities also render as the
    characters in markdown). A markdown link ``[label](url)`` would show words that hide
    where it goes: a space between ``]`` and ``(`` makes it plain text, its address in
    view. Pure, so every path that posts model text (stream, post, update) applies the
    same rule; :class:`AnswerWriter` holds back a trailing ``]`` until the next piece, so
    a link split between pieces is caught too.
    """
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace("](", "] (")


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})([^`]*)$")
CLOSE_RESERVE = 8
"""Room a message keeps for the line that closes a code block cut in two."""


@dataclass(frozen=True)
class Split:
    """Where to cut an answer: ``text[:cut] + close`` is this message, ``reopen +
    text[cut:]`` the next; ``close`` / ``reopen`` are set when the cut is inside a code
    block, so both halves render as code."""

    cut: int
    close: str = ""
    reopen: str = ""


class _Block(NamedTuple):
    start: int  # where its opening line starts
    stop: int  # where its closing line ends (len(text) while still open)
    opening: str  # the opening line, e.g. "```python"
    closed: bool


def _fences(text: str) -> list[_Block]:
    """Fenced code blocks of ``text``, per CommonMark's fence rules."""
    blocks: list[_Block] = []
    opened: tuple[int, str, str] | None = None  # (start, marker, opening line)
    pos = 0
    for line in text.split("\n"):
        end = pos + len(line)
        if opened is None:
            match = _FENCE.match(line)
            if match:
                opened = (pos, match.group(1), line)
        else:
            marker = opened[1]
            stripped = line.strip()
            if stripped and set(stripped) == {marker[0]} and len(stripped) >= len(marker):
                blocks.append(_Block(opened[0], end, opened[2], True))
                opened = None
        pos = end + 1
    if opened is not None:
        blocks.append(_Block(opened[0], len(text), opened[2], False))
    return blocks


def open_fence(text: str) -> str | None:
    """The opening line of the code block ``text`` ends inside, or None."""
    blocks = _fences(text)
    return blocks[-1].opening if blocks and not blocks[-1].closed else None


def _close_for(head: str, opening: str) -> str:
    marker = _FENCE.match(opening).group(1)  # type: ignore[union-attr]
    return ("" if head.endswith("\n") else "\n") + marker


def split_point(text: str, limit: int) -> Split:
    """Where to cut ``text`` so the first message has at most ``limit`` characters.

    Prefers, in the last fifth of the allowed length, a paragraph break, then a line
    break, then a space outside code blocks, so a continued answer splits neither a
    word nor a code block. Else a code block that fits in one message moves whole to the
    next; a longer one is cut at a line break, closed, and reopened with its language.
    """
    if len(text) <= limit:
        return Split(len(text))
    blocks = _fences(text)

    def inside(cut: int) -> _Block | None:
        return next((b for b in blocks if b.start < cut < b.stop), None)

    floor = int(limit * 0.8)
    for sep in ("\n\n", "\n", " "):
        end = limit
        while (found := text.rfind(sep, floor, end)) > 0:
            cut = found + len(sep)
            if cut <= limit and inside(cut) is None:
                return Split(cut)
            end = found + len(sep) - 1
    block = inside(limit)
    if block is None:
        return Split(limit)
    start, stop, opening, _ = block
    if start > 0 and (stop - start <= limit or start >= floor):
        return Split(start)
    budget = limit - CLOSE_RESERVE
    body = start + len(opening) + 1
    line = text.rfind("\n", body, budget)
    cut = line + 1 if line >= body else max(budget, body)
    return Split(cut, _close_for(text[:cut], opening), opening + "\n")


CODE_LINE_SLACK = 200
"""Inside a code block, a message this close to full ends at the next line break, so
no code line is cut in two across messages (only lines longer than this are)."""


def _code_line_end(written: str, piece: str, room: int, slack: int) -> int | None:
    """Where in ``piece`` a nearly full message inside a code block should end (just
    after a line break), or None to go on as usual."""
    line = piece.rfind("\n", 0, room + 1)
    if line < 0 or room - line > slack or open_fence(written + piece[: line + 1]) is None:
        return None
    return line + 1


class AnswerWriter:
    """One answer, possibly over several Slack messages; ``posted`` lists their ts."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        channel_id: str,
        thread_ts: str,
        team_id: str,
        user_id: str,
        buffer_chars: int,
        max_chars: int,
        update_interval_s: float,
        stream_after_s: float,
        on_shown: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """``on_shown`` is told the ts of each message that becomes visible before the
        answer is finished (a stream, or a posted message still being updated)."""
        self.client = client
        self.on_shown = on_shown
        self.channel_id = channel_id
        self.thread_ts = thread_ts
        self.team_id = team_id
        self.user_id = user_id
        self.buffer_chars = buffer_chars
        self.max_chars = max_chars
        self.update_interval_s = update_interval_s
        self.stream_after_s = stream_after_s
        self.posted: list[str] = []
        self.streaming = True
        self._part = ""
        self._stream: AsyncChatStream | None = None
        self._posted_ts: str | None = None
        self._last_update = 0.0
        self._first_piece_at: float | None = None
        self._shown: set[str] = set()
        self._held = ""
        self._before_feedback: Callable[[list[str]], Awaitable[None]] | None = None

    # --- public --------------------------------------------------------------------
    async def write(self, piece: str) -> None:
        """Add generated text (made inert, see :func:`neutralise`); starts a new message
        when the current one is full."""
        text, self._held = self._held + piece, ""
        if text.endswith("]"):  # a link's "(" may come with the next piece
            text, self._held = text[:-1], "]"
        await self._add(neutralise(text))

    async def write_trusted(self, text: str) -> None:
        """Add text of our own (notes from bot/messages.py), posted as it is."""
        held, self._held = self._held, ""
        await self._add(held + text)

    async def _add(self, piece: str) -> None:
        limit = self.max_chars - CLOSE_RESERVE  # room to close a code block cut in two
        while piece:
            room = limit - len(self._part)
            cut = _code_line_end(self._part, piece, room, min(CODE_LINE_SLACK, limit // 5))
            if cut is None and len(piece) <= room:
                await self._append(piece)
                return
            if cut is None:
                cut = split_point(self._part + piece, limit).cut - len(self._part)
            if cut > 0:
                await self._append(piece[:cut])
                piece = piece[cut:]
            opening = open_fence(self._part)
            if opening is not None:
                await self._append(_close_for(self._part, opening))
                piece = opening + "\n" + piece
            await self._close_part(final_blocks=None)

    async def finish(
        self,
        final_blocks: list[dict[str, Any]],
        before_feedback: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> list[str]:
        """End the answer, attaching ``final_blocks`` (the feedback row) to its last message.

        ``before_feedback`` is told the answer's messages just before the call that shows
        the row, when they are known by then (a stream, or a message being updated): the
        caller stores the answer there, so a click on the row always finds it.
        """
        self._before_feedback = before_feedback
        await self.write_trusted("")  # what a trailing "]" held back
        if not self._part and not self.posted:
            await self._append(messages.EMPTY_ANSWER)
        await self._close_part(final_blocks=final_blocks)
        return list(self.posted)

    @property
    def started(self) -> bool:
        """Whether any of the answer is written: visible in Slack, or held to post at once."""
        return bool(self.posted or self._part) or self._current_ts is not None

    # --- internals -----------------------------------------------------------------
    @property
    def _current_ts(self) -> str | None:
        if self._stream is not None and self._stream.ts:
            return self._stream.ts
        return self._posted_ts

    async def _append(self, text: str) -> None:
        await self._write(text)
        ts = self._current_ts
        if ts and ts not in self._shown:
            self._shown.add(ts)
            if self.on_shown is not None:
                await self.on_shown(ts)

    async def _write(self, text: str) -> None:
        self._part += text
        if self.streaming:
            try:
                if self._stream is None:
                    if self._first_piece_at is None:
                        self._first_piece_at = time.monotonic()
                    waited = time.monotonic() - self._first_piece_at
                    if len(self._part) < self.buffer_chars and waited < self.stream_after_s:
                        return  # the whole answer may arrive at once: then one message is enough
                    self._stream = await self.client.chat_stream(
                        channel=self.channel_id,
                        thread_ts=self.thread_ts,
                        recipient_team_id=self.team_id or None,
                        recipient_user_id=self.user_id or None,
                        buffer_size=self.buffer_chars,
                    )
                    text = self._part
                await self._stream.append(markdown_text=text)
                return
            except SlackApiError as exc:
                self._fall_back(exc)
        await self._post_or_update(final_blocks=None, force=False)

    def _fall_back(self, exc: SlackApiError) -> None:
        """Streaming refused or lost: continue this part as a posted-then-updated message."""
        error = exc.response.get("error") if exc.response is not None else str(exc)
        logger.warning("streaming unavailable (%s), falling back to chat.update", error)
        stream_ts = self._stream.ts if self._stream is not None else None
        self.streaming = False
        self._stream = None
        self._posted_ts = stream_ts if error in STREAM_LOST else None
        self._last_update = 0.0

    async def _post_or_update(self, final_blocks: list[dict[str, Any]] | None, force: bool) -> None:
        now = time.monotonic()
        if not force and self._posted_ts and now - self._last_update < self.update_interval_s:
            return
        content = blocks.markdown_blocks(self._part) + (final_blocks or [])
        if final_blocks and self._posted_ts is not None:
            await self._feedback_next([*self.posted, self._posted_ts])
        if self._posted_ts is None:
            response = await self.client.chat_postMessage(
                channel=self.channel_id, thread_ts=self.thread_ts, text=self._part, blocks=content
            )
            self._posted_ts = response["ts"]
        else:
            await self.client.chat_update(
                channel=self.channel_id, ts=self._posted_ts, text=self._part, blocks=content
            )
        self._last_update = now

    async def _close_part(self, final_blocks: list[dict[str, Any]] | None) -> None:
        if self.streaming and self._stream is not None:
            try:
                if final_blocks and self._stream.ts:
                    await self._feedback_next([*self.posted, self._stream.ts])
                await self._stream.stop(blocks=final_blocks)
                self.posted.append(str(self._stream.ts))
                self._reset_part()
                return
            except SlackApiError as exc:
                self._fall_back(exc)
        if self.streaming and self._stream is None and not self._part:
            return
        await self._post_or_update(final_blocks=final_blocks, force=True)
        if self._posted_ts:
            self.posted.append(self._posted_ts)
        self._reset_part()

    async def _feedback_next(self, posted: list[str]) -> None:
        hook, self._before_feedback = self._before_feedback, None
        if hook is not None:
            await hook(posted)

    def _reset_part(self) -> None:
        self._part = ""
        self._stream = None
        self._posted_ts = None
        self._last_update = 0.0
        self._first_piece_at = None
