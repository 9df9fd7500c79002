"""Slack's message text as a model should read it.

Slack escapes ``&``, ``<`` and ``>`` in message text and wraps links, channels and
special mentions in angle brackets (docs.slack.dev/messaging/formatting-message-text).
Pasted code such as ``if a < b && c`` arrives as ``if a &lt; b &amp;&amp; c``: sent on
like that, the model reads (and may answer with) entities instead of code. User mentions
stay as they are: the bot's own is removed elsewhere, others name people.
"""

from __future__ import annotations

import re

_ANGLED = re.compile(r"<([^<>]+)>")
_LINK = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|mailto:|tel:)", re.IGNORECASE)


def _readable(match: re.Match[str]) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        return match.group(0)
    if target.startswith("#"):
        return "#" + label if label else match.group(0)
    if target.startswith("!"):
        name = target[1:].split("^", 1)[0]
        if name.startswith("subteam"):
            return label or "@group"
        if name.startswith("date"):
            return label or match.group(0)
        return "@" + name
    if not _LINK.match(target):
        return match.group(0)  # not Slack markup (Slack escapes a literal "<")
    if label:
        return f"{label} ({target})"
    return target.removeprefix("mailto:")


def to_model_text(text: str) -> str:
    """Links, channels and special mentions readable, Slack's escapes undone."""
    text = _ANGLED.sub(_readable, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
