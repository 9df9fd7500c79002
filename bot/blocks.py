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
    *,
    model: str,
    stats: dict[str, int] | None,
    pending: int | None,
    is_admin: bool,
    admin_lines: list[str] | None = None,
    chart_file_id: str | None = None,
) -> dict[str, Any]:
    """The App Home tab: current model, last week's activity, and the training backlog;
    admins also see satisfaction per model version, the canary and cost
    (``admin_lines``) and the up-rate chart (an image of an uploaded Slack file)."""
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
            *(_admin_home_blocks(admin_lines, chart_file_id) if is_admin and admin_lines else []),
            {"type": "context", "elements": [{"type": "mrkdwn", "text": messages.HOME_HELP}]},
        ],
    }


HOME_SECTION_MAX = 3000
"""Characters of one section block's text (Slack's limit)."""


def _admin_home_blocks(lines: list[str], chart_file_id: str | None) -> list[Block]:
    out: list[Block] = [
        {"type": "divider"},
        {"type": "header", "text": _plain(messages.HOME_ADMIN_HEADER)},
    ]
    chunk: list[str] = []
    for line in [*lines, ""]:
        if not line or len("\n".join([*chunk, line])) > HOME_SECTION_MAX:
            if chunk:
                out.append(
                    {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(chunk)}}
                )
            chunk = []
        if line:
            chunk.append(line[:HOME_SECTION_MAX])
    if chart_file_id:
        out.append(
            {
                "type": "image",
                "slack_file": {"id": chart_file_id},
                "alt_text": messages.CHART_ALT,
                "title": _plain(messages.CHART_TITLE),
            }
        )
    return out


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


# --- learning loop: review list, edit modal, run reports --------------------------------
REVIEW_TEXT_MAX = 1200
"""Longer questions, answers and corrections are cut in the review list (section ≤ 3000)."""
REVIEW_EDIT_MAX = 3000


def _cut(text: str, limit: int = REVIEW_TEXT_MAX) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _button(text: str, action_id: str, value: str, style: str | None = None) -> Block:
    button: Block = {"type": "button", "text": _plain(text), "action_id": action_id, "value": value}
    if style:
        button["style"] = style
    return button


def review_value(answer_id: str) -> str:
    """What every review button carries: the answer id (decisions are made on the server)."""
    return json.dumps({"answer_id": answer_id})


def review_blocks(items: list[Any], total: int) -> list[Block]:
    """Pending rated answers, each with Approve / Approve correction / Edit / Reject."""
    out: list[Block] = [
        {
            "type": "header",
            "text": _plain(messages.REVIEW_HEADER.format(shown=len(items), total=total)),
        }
    ]
    for item in items:
        value = review_value(item.answer_id)
        text = messages.REVIEW_ITEM.format(question=_cut(item.question), answer=_cut(item.answer))
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
        votes = messages.REVIEW_VOTES.format(
            up=item.up, down=item.down, asker=item.asker, model=item.model
        )
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": votes}]})
        latest = item.latest_correction
        buttons = [_button(messages.REVIEW_APPROVE, ids.REVIEW_APPROVE, value, "primary")]
        if latest is not None:
            correction = messages.REVIEW_CORRECTION.format(
                user=latest.user_id, text=_cut(latest.text)
            )
            out.append({"type": "section", "text": {"type": "mrkdwn", "text": correction}})
            buttons.append(
                _button(messages.REVIEW_APPROVE_CORRECTION, ids.REVIEW_APPROVE_CORRECTION, value)
            )
        buttons.append(_button(messages.REVIEW_EDIT, ids.REVIEW_EDIT, value))
        buttons.append(_button(messages.REVIEW_REJECT, ids.REVIEW_REJECT, value, "danger"))
        buttons.append(_button(messages.REVIEW_GOLDEN, ids.REVIEW_GOLDEN, value))
        out.append(
            {
                "type": "actions",
                "block_id": ids.REVIEW_BLOCK_PREFIX + item.answer_id,
                "elements": buttons,
            }
        )
        out.append({"type": "divider"})
    return out


def review_edit_modal(answer_id: str, text: str, response_url: str) -> dict[str, Any]:
    """The admin edits the answer to learn before approving it."""
    return {
        "type": "modal",
        "callback_id": ids.REVIEW_EDIT_VIEW,
        "private_metadata": json.dumps({"answer_id": answer_id, "response_url": response_url}),
        "title": _plain(messages.REVIEW_EDIT_TITLE),
        "submit": _plain(messages.REVIEW_EDIT_SUBMIT),
        "close": _plain(messages.CORRECTION_CANCEL),
        "blocks": [
            {
                "type": "input",
                "block_id": ids.REVIEW_EDIT_BLOCK,
                "label": _plain(messages.REVIEW_EDIT_LABEL),
                "element": {
                    "type": "plain_text_input",
                    "action_id": ids.REVIEW_EDIT_INPUT,
                    "multiline": True,
                    "max_length": REVIEW_EDIT_MAX,
                    "initial_value": text[:REVIEW_EDIT_MAX],
                },
            }
        ],
    }


def text_blocks(text: str) -> list[Block]:
    """A report as one mrkdwn section (Slack's section text limit is 3000 characters)."""
    return [{"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, 2900)}}]


def held_report_blocks(text: str, model: str, run_id: str) -> list[Block]:
    """The evaluation report of a model the gate refused, with "Promote anyway"."""
    value = json.dumps({"model": model, "run_id": run_id})
    return [
        *text_blocks(text),
        {
            "type": "actions",
            "block_id": f"tl_promote:{run_id}",
            "elements": [_button(messages.PROMOTE_BUTTON, ids.PROMOTE, value, "primary")],
        },
    ]
