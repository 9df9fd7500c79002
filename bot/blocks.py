"""Block Kit payloads the bot sends: answers' feedback row, the correction modal, App Home."""

from __future__ import annotations

import json
from typing import Any

from bot import ids, messages

Block = dict[str, Any]
CORRECTION_MAX_CHARS = 3000


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def feedback_blocks() -> list[Block]:
    """The thumbs-up / thumbs-down row that ends every answer."""
    return [
        {
            "type": "context_actions",
            "block_id": ids.FEEDBACK_BLOCK,
            "elements": [
                {
                    "type": "feedback_buttons",
                    "action_id": ids.FEEDBACK,
                    "positive_button": {
                        "text": _plain("Good"),
                        "accessibility_label": messages.FEEDBACK_GOOD,
                        "value": "up",
                    },
                    "negative_button": {
                        "text": _plain("Bad"),
                        "accessibility_label": messages.FEEDBACK_BAD,
                        "value": "down",
                    },
                }
            ],
        }
    ]


def markdown_blocks(text: str) -> list[Block]:
    """An answer as a markdown block (used when the message is posted, not streamed)."""
    return [{"type": "markdown", "text": text}]


def correction_modal(answer_id: str) -> dict[str, Any]:
    """The modal a thumbs-down opens: "What should the answer have been?"."""
    return {
        "type": "modal",
        "callback_id": ids.CORRECTION_VIEW,
        "private_metadata": json.dumps({"answer_id": answer_id}),
        "title": _plain(messages.CORRECTION_TITLE),
        "submit": _plain(messages.CORRECTION_SUBMIT),
        "close": _plain(messages.CORRECTION_CANCEL),
        "blocks": [
            {
                "type": "input",
                "block_id": ids.CORRECTION_BLOCK,
                "label": _plain(messages.CORRECTION_LABEL),
                "hint": _plain(messages.CORRECTION_HINT),
                "element": {
                    "type": "plain_text_input",
                    "action_id": ids.CORRECTION_INPUT,
                    "multiline": True,
                    "max_length": CORRECTION_MAX_CHARS,
                },
            }
        ],
    }


def home_view(
    *, model: str, stats: dict[str, int] | None, pending: int | None, is_admin: bool
) -> dict[str, Any]:
    """The App Home tab: current model, last week's activity, and the training backlog."""
    lines = [messages.HOME_MODEL.format(model=model)]
    if stats is None:
        lines.append(messages.HOME_STORAGE_DOWN)
    else:
        lines.append(messages.HOME_STATS.format(**stats))
        if is_admin and pending is not None:
            lines.append(messages.HOME_PENDING.format(count=pending))
    return {
        "type": "home",
        "blocks": [
            {"type": "header", "text": _plain(messages.HOME_TITLE)},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": messages.HOME_HELP}]},
        ],
    }


def thanks_modal() -> dict[str, Any]:
    """What the correction modal turns into once submitted."""
    return {
        "type": "modal",
        "title": _plain(messages.CORRECTION_TITLE),
        "close": _plain("Close"),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": messages.CORRECTION_THANKS}}
        ],
    }
