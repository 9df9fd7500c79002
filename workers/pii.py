"""Scrubbing secrets and personal data out of training text.

Approved examples are what people typed into Slack: before they go into a training
file, secrets (always) and the configured kinds of PII (emails, Slack mentions, card
and phone numbers) are replaced by placeholders. Only training-set builds use this,
so it lives with the workers; the web process redacts secrets with
:mod:`core.redaction`, which this module builds on.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from core.redaction import might_hold_secret, redact_secrets
from core.settings import PiiSettings

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)*\.[A-Za-z]{2,}+"
)
_MENTION = re.compile(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_PHONE = re.compile(
    r"(?<![\w+])(?<!\d[\s.-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)|\d{2,4})[\s.-]\d{3,4}"
    r"[\s.-]\d{3,4}(?!\w)(?![\s.-]\d)"
)
MIN_PHONE_DIGITS = 7
EMAIL_MASK = "[email]"
PHONE_MASK = "[phone]"
CARD_MASK = "[card]"
MENTION_MASK = "@someone"


def _luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _mask_cards(text: str, tally: Counter[str] | None) -> str:
    """Card-like digit runs that pass the Luhn check become a placeholder."""
    masked = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal masked
        if _luhn_ok(match.group(0)):
            masked += 1
            return CARD_MASK
        return match.group(0)

    text = _CARD.sub(replace, text)
    if masked and tally is not None:
        tally["cards"] += masked
    return text


def _digits(text: str) -> int:
    """How many ASCII digits ``text`` has (bytes.translate runs in C: ~1 ns a character)."""
    raw = text.encode("utf-8", "replace")
    return len(raw) - len(raw.translate(None, b"0123456789"))


def scrub(text: str, pii: PiiSettings, tally: Counter[str] | None = None) -> str:
    """``text`` with secrets (always) and the configured kinds of PII replaced by placeholders.

    Python's regex engine costs ~15 ns a character for these patterns, so each runs only
    when a C-speed test says it could match: an "@" that is not a Slack mention for
    emails, "<@" for mentions, seven digits or more for phone and card numbers.
    """
    text, n = redact_secrets(text)
    if n and tally is not None:
        tally["secrets"] += n
    if "@" in text:
        mentions = text.count("<@")
        if pii.emails and text.count("@") > mentions:
            text, n = _EMAIL.subn(EMAIL_MASK, text)
            if n and tally is not None:
                tally["emails"] += n
        if pii.slack_mentions and mentions:
            text, n = _MENTION.subn(MENTION_MASK, text)
            if n and tally is not None:
                tally["slack_mentions"] += n
    if (pii.cards or pii.phones) and _digits(text) >= MIN_PHONE_DIGITS:
        if pii.cards:
            text = _mask_cards(text, tally)
        if pii.phones:
            text, n = _PHONE.subn(PHONE_MASK, text)
            if n and tally is not None:
                tally["phones"] += n
    return text


def scrub_parts(parts: list[Any], pii: PiiSettings, tally: Counter[str] | None = None) -> list[Any]:
    """A list content (OpenAI content parts) with its text parts scrubbed like any text.

    Images stay as they are (embedded data URLs): what a picture shows is not text this
    module can read; whoever asked can have it removed with forget-me like their words.
    """
    return [
        {**part, "text": scrub(part["text"], pii, tally)}
        if isinstance(part, dict) and part.get("type") == "text" and type(part.get("text")) is str
        else part
        for part in parts
    ]


_DIGIT_BYTES = b"0123456789"


def might_hold_pii(text: str, normalised: bytes, pii: PiiSettings) -> bool:
    """A C-speed test of a whole example: could any scrubber match anywhere in it?

    ``normalised`` is the example's text with punctuation and spaces removed (as
    :func:`workers.trainset.normalise` makes it): it keeps every digit, so counting them
    there saves encoding the text again.
    """
    if might_hold_secret(text) or ("@" in text and (pii.emails or pii.slack_mentions)):
        return True
    if pii.cards or pii.phones:
        return len(normalised) - len(normalised.translate(None, _DIGIT_BYTES)) >= MIN_PHONE_DIGITS
    return False
