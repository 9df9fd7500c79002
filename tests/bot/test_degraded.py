"""With Redis down the bot still answers, says votes cannot be recorded, and reports it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from bot import ids, messages
from tests import payloads
from tests.bot.conftest import Bot


@pytest.fixture
def bot_redis_url() -> str:
    return f"redis://127.0.0.1:{payloads.free_port()}/0"


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_answers_still_arrive_when_redis_is_down(bot: Bot) -> None:
    event = bot.says("are you there?", mention=True)
    assert bot.event(event).status == 200
    post = bot.slack.wait_for("chat.postMessage", timeout=10)[0]
    assert post.args["text"] == "Echo: are you there?"
    assert post.args["thread_ts"] == event["ts"]
    # Slack's retry of the same message still gets no second answer.
    bot.event(event)
    bot.event(payloads.message(event["text"], ts=event["ts"]))
    with pytest.raises(AssertionError):
        bot.slack.wait_for("chat.postMessage", 2, timeout=1.0)


def test_a_vote_while_redis_is_down_is_answered_with_an_apology(bot: Bot) -> None:
    event = bot.says("vote on me", mention=True)
    bot.event(event)
    bot.slack.wait_for("chat.postMessage", timeout=10)
    ts = bot.last_answer_ts("C1", event["ts"])
    bot.interact(payloads.feedback_click("down", user="U2", channel="C1", message_ts=ts))
    ephemeral = bot.slack.wait_for("chat.postEphemeral")[0]
    assert ephemeral.args["text"] == messages.VOTE_UNAVAILABLE
    assert bot.slack.calls("views.open") == []

    submission = payloads.view_submission(
        ids.CORRECTION_VIEW,
        user="U2",
        private_metadata=json.dumps({"answer_id": "C1-1.1"}),
        values={ids.CORRECTION_BLOCK: {ids.CORRECTION_INPUT: {"value": "better answer"}}},
    )
    body = json.loads(bot.interact(submission).body)
    assert body["errors"][ids.CORRECTION_BLOCK] == messages.VOTE_UNAVAILABLE


def test_healthz_reports_the_redis_failure(bot: Bot) -> None:
    status, body = _get(bot.url.replace("/slack/events", "/healthz"))
    assert status == 503
    assert body["status"] == "degraded" and "unreachable" in body["redis"]


def test_healthz_is_ok_when_redis_answers(bot: Bot, redis_url: str, monkeypatch) -> None:
    from redis import Redis

    object.__setattr__(bot.services, "redis", Redis.from_url(redis_url))
    status, body = _get(bot.url.replace("/slack/events", "/healthz"))
    assert (status, body) == (200, {"status": "ok", "redis": "ok"})
