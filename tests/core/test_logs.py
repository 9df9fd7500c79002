"""Log lines are JSON with their context, and never contain a secret."""

from __future__ import annotations

import io
import json
import logging

import pytest

from core import logs


@pytest.fixture
def captured():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    logs.configure("INFO", ["s3cret-signing-value", "sk-abcdefgh12345678"], stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def test_a_line_is_one_json_object_with_context_and_extras(captured) -> None:
    with logs.context(request_id="C1-1.2", team="T1", channel="C1"):
        logging.getLogger("tuneloop.test").info("answered", extra={"latency_ms": 42})
    (line,) = captured()
    assert line["msg"] == "answered"
    assert line["level"] == "INFO"
    assert (line["request_id"], line["team"], line["channel"]) == ("C1-1.2", "T1", "C1")
    assert line["latency_ms"] == 42


def test_secrets_are_redacted_from_messages_extras_and_tracebacks(captured) -> None:
    log = logging.getLogger("tuneloop.test")
    log.warning("token xoxb-1234-5678-abcdef and s3cret-signing-value leaked")
    log.info("calling", extra={"auth": "Bearer sk-abcdefgh12345678"})
    try:
        raise RuntimeError("bad key xapp-1-A0-secret")
    except RuntimeError:
        log.exception("failed")
    text = json.dumps(captured())
    for secret in ("xoxb-1234", "s3cret-signing-value", "sk-abcdefgh", "xapp-1-A0"):
        assert secret not in text
    assert text.count(logs.REDACTED) >= 4
