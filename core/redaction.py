"""Token shapes that must never leave the process: in logs, Slack messages or datasets."""

from __future__ import annotations

import re

SECRET_SHAPES = re.compile(
    r"(xox[abposr]-[A-Za-z0-9-]{4,}|xapp-[A-Za-z0-9-]{4,}|sk-[A-Za-z0-9_-]{8,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,})"
)
"""Slack tokens (xoxb-, xoxp-, xapp-...), OpenAI-style keys (sk-...) and bearer headers."""
REDACTED = "[redacted]"
_HINTS = ("xox", "xapp-", "sk-", "earer")


def might_hold_secret(text: str) -> bool:
    """A C-speed test: could :data:`SECRET_SHAPES` match anywhere in ``text``?"""
    return any(hint in text for hint in _HINTS)


def redact_secrets(text: str) -> tuple[str, int]:
    """``text`` with every secret-shaped token replaced, and how many were."""
    if not might_hold_secret(text):
        return text, 0
    return SECRET_SHAPES.subn(REDACTED, text)
