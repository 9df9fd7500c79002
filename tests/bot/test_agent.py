"""Slack's AI-app surfaces through the real bot: the agent experience (Messages tab) and
the older assistant experience, group DMs, thread titles, the user's active view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot import agent
from core import keys
from core.errors import ConfigError
from core.settings import load_behaviour
from tests.bot.conftest import Bot, write_config


def _dm_question(bot: Bot, text: str, user: str = "U1", thread_ts: str | None = None) -> dict:
    return bot.says(
        text, user=user, channel=bot.slack.dm_channel(user), channel_type="im", thread_ts=thread_ts
    )


def _system_prompt(bot: Bot) -> str:
    return bot.openai.completions()[-1]["messages"][0]["content"]


def _prompts(bot: Bot) -> list[dict[str, str]]:
    return [{"title": p.title, "message": p.message} for p in bot.settings.agent.suggested_prompts]


def test_opening_the_messages_tab_greets_once_and_sets_the_suggested_prompts(bot: Bot) -> None:
    dm = bot.slack.dm_channel("U1")
    assert bot.event(bot.slack.messages_tab_opened("U1")).status == 200

    greeting = bot.slack.messages(dm)
    assert [m["text"] for m in greeting] == [bot.settings.agent.greeting]
    # Agent apps set prompts for the DM itself (thread_ts would make Slack drop them).
    assert bot.slack.suggested_prompts(dm) == {
        "title": bot.settings.agent.prompts_title,
        "prompts": _prompts(bot),
    }
    assert all(c.error is None for c in bot.slack.calls())

    bot.event(bot.slack.messages_tab_opened("U1"))
    assert len(bot.slack.messages(dm)) == 1, "reopening the tab does not greet again"
    assert len(bot.slack.calls("assistant.threads.setSuggestedPrompts")) == 2


def test_the_home_tab_still_publishes_the_home_view(bot: Bot) -> None:
    event = {"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "home"}
    bot.event(event)
    assert bot.slack.views()[0]["type"] == "home"
    assert not bot.slack.calls("chat.postMessage")


def test_a_messages_tab_question_is_answered_in_its_own_thread_with_a_title(bot: Bot) -> None:
    event = _dm_question(bot, "How do I rotate the *staging* API keys?\nWe use vault.")
    answer_ts = bot.ask(event)

    dm = bot.slack.dm_channel("U1")
    assert bot.slack.message(dm, answer_ts)["thread_ts"] == event["ts"]
    assert bot.slack.thread_title(dm, event["ts"]) == "How do I rotate the *staging* API keys?"
    # A follow-up in the same thread keeps the title.
    follow_up = _dm_question(bot, "And production?", thread_ts=event["ts"])
    bot.ask(follow_up)
    assert len(bot.slack.calls("assistant.threads.setTitle")) == 1
    # A new message in the Messages tab is a new thread with its own title.
    other = _dm_question(bot, "Something else entirely")
    bot.ask(other)
    assert bot.slack.thread_title(dm, other["ts"]) == "Something else entirely"


def test_the_loading_status_shows_in_the_messages_tab_thread(bot: Bot) -> None:
    bot.openai.script_answer("Slow but sure.", first_token_delay_s=0.6)
    event = _dm_question(bot, "take your time")
    bot.ask(event)
    status = bot.slack.calls("assistant.threads.setStatus")[0]
    assert status.error is None
    assert status.args["channel_id"] == bot.slack.dm_channel("U1")
    assert status.args["thread_ts"] == event["ts"]


def test_what_the_user_is_looking_at_goes_into_the_prompt_of_a_dm_question(bot: Bot) -> None:
    entities: list[dict[str, Any]] = [
        {"type": agent.CHANNEL, "value": "C0PROJECT", "team_id": "T1"},
        {"type": agent.MESSAGE, "value": {"channel_id": "C0PROJECT", "message_ts": "17.5"}},
    ]
    bot.event(bot.slack.app_context_changed("U1", entities))
    bot.ask(_dm_question(bot, "what is this channel about?"))
    system = _system_prompt(bot)
    assert system.startswith(bot.settings.model.system_prompt)
    assert "<#C0PROJECT>" in system and "17.5" in system

    # In a channel the channel itself is the context: no note.
    bot.ask(bot.says("and here?", mention=True))
    assert _system_prompt(bot) == bot.settings.model.system_prompt

    # An empty context (the user left every channel view) forgets it.
    bot.event(bot.slack.app_context_changed("U1", []))
    assert bot.redis.get(keys.viewing("U1")) is None
    bot.ask(_dm_question(bot, "and now?"))
    assert _system_prompt(bot) == bot.settings.model.system_prompt


def test_the_assistant_experience_still_works(bot: Bot) -> None:
    bot.slack.experience = "assistant"
    started = bot.slack.assistant_thread_started("U1", context_channel="C0OPS")
    bot.event(started)
    thread = started["assistant_thread"]
    replies = bot.slack.messages(thread["channel_id"], thread["thread_ts"])
    assert replies[-1]["text"] == bot.settings.agent.greeting
    assert bot.slack.suggested_prompts(thread["channel_id"], thread["thread_ts"])["prompts"] == (
        _prompts(bot)
    )

    question = _dm_question(bot, "what happens in ops?", thread_ts=thread["thread_ts"])
    bot.ask(question)
    assert "<#C0OPS>" in _system_prompt(bot)

    bot.event(bot.slack.assistant_thread_context_changed("U1", thread["thread_ts"], "C0DEV"))
    bot.ask(_dm_question(bot, "and dev?", thread_ts=thread["thread_ts"]))
    assert "<#C0DEV>" in _system_prompt(bot) and "<#C0OPS>" not in _system_prompt(bot)
    assert all(c.error is None for c in bot.slack.calls())


def test_group_dms_are_answered_like_dms(bot: Bot) -> None:
    event = bot.says("lunch options?", channel="G0GROUP", channel_type="mpim")
    answer_ts = bot.ask(event)
    assert bot.slack.message("G0GROUP", answer_ts)["text"] == "Echo: lunch options?"
    assert all(c.error is None for c in bot.slack.calls())


def test_thread_titles_are_one_clean_line() -> None:
    assert agent.thread_title("<@UBOT>   hello there\nsecond line") == "hello there"
    long = "word " * 40
    title = agent.thread_title(long)
    assert len(title) <= agent.TITLE_MAX_CHARS and title.endswith("…")
    assert agent.thread_title("   \n  ") == ""


def test_more_than_four_suggested_prompts_are_refused_with_the_key_named(tmp_path: Path) -> None:
    five = [{"title": f"t{i}", "message": f"m{i}"} for i in range(5)]
    with pytest.raises(ConfigError, match="agent.suggested_prompts"):
        load_behaviour(write_config(tmp_path / "a.yaml", {"agent": {"suggested_prompts": five}}))
    shipped = load_behaviour(write_config(tmp_path / "c.yaml"))
    assert 1 <= len(shipped.agent.suggested_prompts) <= 4


def test_a_context_event_naming_only_the_dm_still_reaches_the_prompt(bot: Bot) -> None:
    event = bot.slack.app_context_changed("U1", [{"type": agent.CANVAS, "value": "F0CANVAS"}])
    del event["user"]  # the reference page's example carries no user
    bot.event(event)
    bot.ask(_dm_question(bot, "summarise what I am looking at"))
    assert "canvas F0CANVAS" in _system_prompt(bot)
