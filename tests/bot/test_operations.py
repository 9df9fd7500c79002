"""What operators watch: /metrics for Prometheus, /healthz."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from tests import payloads
from tests.bot.conftest import Bot


@pytest.fixture
def bot_settings(tmp_path: Path) -> dict:
    return {"training": {"sets_dir": str(tmp_path / "sets"), "replay_fraction": 0.0}}


def _metrics(bot: Bot) -> str:
    url = bot.url.replace("/slack/events", "/metrics")
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        return resp.read().decode()


def test_metrics_count_answers_votes_errors_latency_and_queue_depth(bot: Bot) -> None:
    bot.openai.script_answer("in flight while metrics are scraped", first_token_delay_s=2)
    in_flight = bot.says("still being answered", mention=True)
    bot.post_event(in_flight)
    bot.openai.wait_for_request("/v1/chat/completions")
    assert "tuneloop_answers_in_flight 1.0" in _metrics(bot)
    bot.listeners.wait_idle()
    bot.openai.reset()

    ts = bot.ask(bot.says("count me", mention=True))
    bot.interact(payloads.feedback_click("up", user="U2", channel="C1", message_ts=ts))
    bot.slack.wait_for("chat.postEphemeral")
    bot.openai.fail_next(status=400, error_code="context_length_exceeded")
    bot.ask(bot.says("fail me", mention=True))
    bot.services.journal.stop()  # no in-process answers: the next question is queued
    bot.event(bot.says("queued, not yet answered", mention=True))

    text = _metrics(bot)
    model = bot.settings.model.base_model
    assert f'tuneloop_answers_total{{model="{model}"}} 2.0' in text
    assert 'tuneloop_votes_total{source="button",vote="up"} 1.0' in text
    assert 'tuneloop_errors_total{kind="context_too_long"} 1.0' in text
    assert "tuneloop_answer_latency_seconds_count 2.0" in text
    assert 'tuneloop_answer_latency_seconds_bucket{le="+Inf"} 2.0' in text
    assert "tuneloop_answers_in_flight 0.0" in text
    assert 'tuneloop_queue_depth{queue="answers"} 1.0' in text


def test_metrics_count_training_runs_by_final_status(bot: Bot) -> None:
    from tests.bot.test_finetune import command, seed, train, work

    seed(bot, 12)
    command(bot, "retrain")
    work(bot)
    train(bot)
    work(bot)
    assert 'tuneloop_training_runs_total{status="promoted"} 1.0' in _metrics(bot)
