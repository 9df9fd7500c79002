"""Building the prompt: the system prompt plus as much recent history as the budget allows."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import TuneloopError
from core.tokens import REPLY_PRIMING, TOKENS_PER_MESSAGE, Tokenizer


class PromptTooLong(TuneloopError):
    """The newest message alone does not fit the context budget."""

    def __init__(self, tokens: int, budget: int) -> None:
        super().__init__(f"the message needs {tokens} tokens, the budget is {budget}")
        self.tokens = tokens
        self.budget = budget


@dataclass(frozen=True)
class Turn:
    """One message of the conversation, already attributed to user or assistant."""

    role: str
    content: str


def build_prompt(
    system_prompt: str, turns: list[Turn], budget: int, counter: Tokenizer
) -> list[dict[str, str]]:
    """System prompt + the newest turns that fit ``budget`` tokens, oldest dropped first.

    The newest turn (the question) is always kept; if it alone does not fit, raise
    PromptTooLong rather than send the model a question cut in half. Consecutive turns
    of the same role are merged so the model sees strictly alternating turns.
    """
    merged: list[Turn] = []
    for turn in turns:
        if not turn.content.strip():
            continue
        if merged and merged[-1].role == turn.role:
            merged[-1] = Turn(turn.role, merged[-1].content + "\n\n" + turn.content)
        else:
            merged.append(turn)
    system = {"role": "system", "content": system_prompt}
    used = REPLY_PRIMING + TOKENS_PER_MESSAGE + counter.message_content_tokens(system)
    kept: list[dict[str, str]] = []
    for turn in reversed(merged):
        message = {"role": turn.role, "content": turn.content}
        cost = TOKENS_PER_MESSAGE + counter.message_content_tokens(message)
        if used + cost > budget:
            if not kept:
                raise PromptTooLong(used + cost, budget)
            break
        kept.append(message)
        used += cost
    # A history that starts with the assistant reads oddly to most models; drop it.
    while kept and kept[-1]["role"] == "assistant":
        kept.pop()
    return [system, *reversed(kept)]
