"""Turning tables that predate the bot into fine-tuning examples.

Two shapes of table are common in teams: transcripts of conversations (one column per
actor, one row per exchange, a marker row between conversations) and Q&A lists (a
question column and an answer column, sometimes several numbered pairs per cell).
Both importers are generators over a :class:`~workers.datasets.readers.Table`, so a
table of any length is converted with constant memory, and they yield the table's
line with each example so every later message can point back to the spreadsheet row.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from workers.datasets.readers import DatasetFileError, Table, find_column

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation: its table line, actor (0 or 1) and text."""

    line: int
    speaker: int
    text: str


def actors(table: Table) -> tuple[str, str]:
    """The two actor names of a conversation table's header (e.g. Human, AI)."""
    names = [name for name in table.columns if name]
    if len(names) != 2 or len(table.columns) != 2:
        raise DatasetFileError(
            table.path,
            table.header_line,
            f"expected a header with the two actors' names (like Human;AI), found "
            f"{len(table.columns)} columns: {', '.join(table.columns) or '(none)'}",
        )
    return names[0], names[1]


def conversations(table: Table, delimiter: str = "###") -> Iterator[list[Turn]]:
    """Conversations of the table: runs of rows between delimiter rows.

    A row whose non-empty cells all equal ``delimiter`` ends a conversation. An empty
    cell means that actor said nothing in that exchange.
    """
    current: list[Turn] = []
    for line, cells in table:
        filled = [cell for cell in cells if cell]
        if filled and all(cell == delimiter for cell in filled):
            if current:
                yield current
            current = []
            continue
        for speaker, text in enumerate(cells[:2]):
            if text:
                current.append(Turn(line, speaker, text))
    if current:
        yield current


def completion_examples(
    turns: list[Turn], names: tuple[str, str], buffer_size: int, include_stop: bool
) -> Iterator[tuple[int, Message]]:
    """Prompt/completion examples, one per message of the second actor.

    The prompt is the last ``buffer_size`` messages as ``Name: text`` lines followed by
    the second actor's ``Name:``; the completion is a space, the reply and, with
    ``include_stop``, the stop sequence ``\\n<first actor>: `` so the model learns to
    end its turn. ``buffer_size`` 0 gives empty prompts: the model learns a voice.
    """
    history: deque[str] = deque(maxlen=buffer_size)
    first, second = names
    stop = f"\n{first}: " if include_stop else ""
    for turn in turns:
        if turn.speaker == 1:
            prompt = "\n".join([*history, f"{second}:"]) if buffer_size else ""
            yield turn.line, {"prompt": prompt, "completion": f" {turn.text}{stop}"}
        history.append(f"{names[turn.speaker]}: {turn.text}")


def chat_examples(
    turns: list[Turn], buffer_size: int, system: str | None
) -> Iterator[tuple[int, Message]]:
    """Chat examples, one per message of the second actor (the assistant).

    The first actor becomes ``user``, the second ``assistant``; the last
    ``buffer_size`` messages come before the reply, after the system prompt if any.
    """
    history: deque[Message] = deque(maxlen=buffer_size)
    head = [{"role": "system", "content": system}] if system else []
    for turn in turns:
        role = "assistant" if turn.speaker == 1 else "user"
        if turn.speaker == 1:
            yield turn.line, {"messages": [*head, *history, {"role": role, "content": turn.text}]}
        history.append({"role": role, "content": turn.text})


_NUMBERED = re.compile(r"^\s*(\d{1,4})\s*[.)]\s*")


def numbered_items(text: str) -> dict[int, str] | None:
    """``{1: "...", 2: "..."}`` for a cell like ``"1. a\\n2. b"``; None when it is not a
    numbered list of at least two items (the cell is then one question or answer)."""
    items: dict[int, str] = {}
    current: int | None = None
    for raw in text.splitlines():
        match = _NUMBERED.match(raw)
        if match:
            current = int(match.group(1))
            if current in items:
                return None
            items[current] = raw[match.end() :].strip()
        elif current is None:
            if raw.strip():
                return None
        elif raw.strip():
            items[current] = f"{items[current]}\n{raw.strip()}".strip()
    return items if len(items) >= 2 else None


@dataclass
class QaStats:
    """What the Q&A import left out, with the first lines of each kind."""

    too_short: int = 0
    too_short_lines: list[int] = field(default_factory=list)
    unpaired: int = 0
    unpaired_lines: list[int] = field(default_factory=list)


def qa_pairs(
    table: Table,
    question_column: str,
    answer_column: str,
    split_numbered: bool,
    min_length: int,
    stats: QaStats,
) -> Iterator[tuple[int, str, str]]:
    """(line, question, answer) for every pair of the table long enough to keep.

    When both cells of a row are numbered lists, items with the same number pair up;
    numbers present on one side only are counted in ``stats.unpaired``.
    """
    q_at = find_column(table, question_column, "--question-column")
    a_at = find_column(table, answer_column, "--answer-column")
    for line, cells in table:
        question, answer = cells[q_at].strip(), cells[a_at].strip()
        pairs: list[tuple[str, str]] = [(question, answer)]
        if split_numbered:
            questions, answers = numbered_items(question), numbered_items(answer)
            if questions is not None and answers is not None:
                common = [n for n in questions if n in answers]
                pairs = [(questions[n], answers[n]) for n in common]
                lost = len(questions) + len(answers) - 2 * len(common)
                if lost:
                    stats.unpaired += lost
                    if len(stats.unpaired_lines) < 3:
                        stats.unpaired_lines.append(line)
        for q, a in pairs:
            if len(q) < min_length or len(a) < min_length:
                stats.too_short += 1
                if len(stats.too_short_lines) < 3:
                    stats.too_short_lines.append(line)
                continue
            yield line, q, a


def qa_example(question: str, answer: str, system: str | None, stop: str) -> Message:
    """A chat example for one Q&A pair (system prompt first when given)."""
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    messages.append({"role": "assistant", "content": answer + stop})
    return {"messages": messages}


def completion_to_messages(
    prompt: str, completion: str, system: str | None, separator: str, stop: str
) -> list[Message]:
    """A prompt/completion pair as chat messages for the approved-example log.

    The separator and stop sequence are markers for completion models, not content,
    so they are removed, as is the completion's leading space. An empty prompt (open
    ended generation) gives no user message.
    """
    if separator and prompt.endswith(separator):
        prompt = prompt[: -len(separator)]
    if stop and completion.endswith(stop):
        completion = completion[: -len(stop)]
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    if prompt.strip():
        messages.append({"role": "user", "content": prompt.strip()})
    messages.append({"role": "assistant", "content": completion.strip()})
    return messages
