"""Structured logs: one JSON object per line, with the request's context, secrets redacted.

Listeners and jobs bind context (request id, team, channel, model...) with
:func:`context`; every log line written inside carries it, so one answer can be followed
from the signed request to the posted message across processes.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from core.redaction import REDACTED, redact_secrets

__all__ = ["REDACTED", "JsonFormatter", "Redactor", "configure", "context"]

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "log_context", default=None
)

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log line written inside the block (threads see their own)."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


class Redactor:
    """Removes secrets from text: known token shapes and the configured secret values."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._values = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, REDACTED)
        return redact_secrets(text)[0]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context and extras."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **(_context.get() or {}),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(entry, ensure_ascii=False, default=str))


def configure(
    level: str = "INFO", secrets: Iterable[str | None] = (), stream: TextIO | None = None
) -> None:
    """Send this process's logs to stderr (or ``stream``) as JSON lines, secrets redacted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(Redactor(secrets)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
