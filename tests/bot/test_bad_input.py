"""Malformed, hostile or odd requests get a clear answer and change nothing."""

from __future__ import annotations

import socket

import pytest

from tests import payloads
from tests.bot.conftest import SIGNING_SECRET, Bot
from tests.bot.test_finetune import wait


def _post(bot: Bot, body: bytes, content_type: str) -> payloads.Response:
    return payloads.post(bot.url, body, content_type, secret=SIGNING_SECRET)


def _nothing_happened(bot: Bot) -> None:
    bot.run_worker()
    assert [c.method for c in bot.slack.calls() if c.method != "auth.test"] == []
    assert bot.openai.completions() == []
    assert bot.redis.keys("tl:answer:*") == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"type": "event_callback", "event": ', "application/json"),
        (b"\xff\xfe not utf-8", "application/json"),
        (b"payload=%7Bnot-json", "application/x-www-form-urlencoded"),
        (b"payload=", "application/x-www-form-urlencoded"),
        (b"", "application/json"),
        (b'["a", "list"]', "application/json"),
    ],
    ids=["truncated-json", "binary", "bad-payload-json", "empty-payload", "empty", "json-list"],
)
def test_malformed_bodies_are_refused_without_side_effects(
    bot: Bot, body: bytes, content_type: str
) -> None:
    response = _post(bot, body, content_type)
    assert 400 <= response.status < 500
    _nothing_happened(bot)


def test_an_unknown_event_type_is_acknowledged_and_ignored(bot: Bot) -> None:
    response = bot.event({"type": "emoji_changed", "subtype": "add", "name": "party"})
    assert response.status == 200
    _nothing_happened(bot)


def test_a_replayed_request_within_the_window_answers_once(bot: Bot) -> None:
    event = bot.says("replay me", mention=True)
    body = payloads.json_body(payloads.event_envelope(event))
    for _ in range(3):
        assert _post(bot, body, "application/json").status == 200
    bot.listeners.wait_idle()
    bot.run_worker()
    answers = [m for m in bot.slack.messages("C1", event["ts"]) if m.get("user") == "UBOT"]
    assert len(answers) == 1


def test_unicode_and_control_characters_reach_the_model_intact(bot: Bot) -> None:
    text = "Grüße 👋🏽 — 日本語 \u200b\x07 <script>alert(1)</script>"
    event = bot.says(text, mention=True)
    ts = bot.ask(event)
    assert bot.openai.completions()[-1]["messages"][-1]["content"] == text
    # Slack shows the text as written: its control characters are escaped as entities.
    shown = text.replace("<", "&lt;").replace(">", "&gt;")
    assert bot.slack.message("C1", ts)["text"] == f"Echo: {shown}"


def test_a_vote_on_a_message_that_is_not_an_answer_is_answered_politely(bot: Bot) -> None:
    response = bot.interact(
        payloads.feedback_click("up", user="U2", channel="C1", message_ts="123.456")
    )
    assert response.status == 200
    ephemeral = bot.slack.wait_for("chat.postEphemeral")[0]
    assert "no longer in my records" in ephemeral.args["text"]
    assert bot.redis.keys("tl:votes:*") == []


def test_a_feedback_click_with_a_forged_value_changes_nothing(bot: Bot) -> None:
    event = bot.says("forge", mention=True)
    ts = bot.ask(event)
    response = bot.interact(
        payloads.feedback_click("approve", user="U2", channel="C1", message_ts=ts)
    )
    assert response.status == 200
    assert bot.redis.keys("tl:votes:*") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dance", "Unknown command `dance`"),
        ('retrain "unclosed', "Could not read that command"),
        ("promote", "Usage"),
        ("promote a b", "Usage"),
        ("retrain --bogus", "Usage"),
        ("forget-me now", "Usage"),
        ("export a b", "Usage"),
    ],
)
def test_finetune_with_unknown_or_malformed_arguments_explains_and_runs_nothing(
    bot: Bot, text: str, expected: str
) -> None:
    response, url = bot.command(text)
    assert response.status == 200
    reply = wait(lambda: bot.slack.responses(url), what="a reply")[0]
    assert expected in reply["text"]
    assert reply["response_type"] == "ephemeral"
    assert bot.redis.keys("tl:run*") == []
    assert bot.redis.llen("rq:queue:training") == 0


def test_a_body_over_the_limit_is_refused_before_it_is_read(bot: Bot) -> None:
    # The headers announce 50 MB; only a few bytes follow. The server must answer from
    # the announced size, not wait to buffer the body (a slow client could hold it).
    host, port = bot.url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n{}"
        )
        status_line = conn.makefile("rb").readline()
    assert status_line.split()[1] == b"413", status_line
    _nothing_happened(bot)


def test_a_signed_but_deeply_nested_body_is_a_clear_400(bot: Bot) -> None:
    depth = 100_000
    body = b'{"type": "event_callback", "event": ' + b"[" * depth + b"]" * depth + b"}"
    response = _post(bot, body, "application/json")
    assert response.status == 400
    assert b"nested" in response.body
    _nothing_happened(bot)
