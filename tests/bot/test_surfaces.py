"""Every Slack surface of the real bot against the strict emulator: Slack would accept
every call the bot makes (arguments, blocks, markdown, stream recipients)."""

from __future__ import annotations

from bot import agent
from core.store import answer_id_for
from tests import payloads
from tests.bot.conftest import ADMIN, Bot


def _refused(bot: Bot) -> list[str]:
    """Calls Slack would refuse (besides the streams refused on purpose below)."""
    calls = [
        f"{c.method}: {c.error} {c.args}"
        for c in bot.slack.calls()
        if c.error and c.error != "feature_not_enabled"
    ]
    return calls + [f"response_url: {p}" for _, p in bot.slack.rejected_responses()]


def test_every_surface_makes_only_calls_slack_accepts(bot: Bot) -> None:
    # A slow, long answer to a mention: status, stream with recipients, feedback row.
    bot.openai.script_answer("A long answer. " * 80, first_token_delay_s=0.5)
    mention = bot.says("explain our deploys", mention=True)
    answer_ts = bot.ask(mention)
    assert bot.slack.calls("chat.startStream") and bot.slack.calls("assistant.threads.setStatus")
    # A follow-up in the thread without a mention.
    bot.ask(bot.says("and rollbacks?", thread_ts=mention["ts"]))
    # Where Slack refuses streaming: a posted message with a markdown block, then updated.
    bot.slack.refuse_streaming = True
    bot.openai.script_answer("Fallback answer with a table:\n| a | b |\n|---|---|\n" * 30)
    bot.ask(bot.says("fallback please", mention=True))
    assert bot.slack.calls("chat.update")
    bot.slack.refuse_streaming = False

    # Votes: buttons (thumbs-down opens the correction modal) and a reaction.
    bot.interact(payloads.feedback_click("up", user="U2", channel="C1", message_ts=answer_ts))
    bot.interact(payloads.feedback_click("down", user="U3", channel="C1", message_ts=answer_ts))
    assert bot.slack.calls("views.open")
    bot.event(payloads.reaction("+1", user="U4", channel="C1", message_ts=answer_ts))
    assert len(bot.services.store.votes(answer_id_for("C1", mention["ts"]))) == 3

    # App Home, the Messages tab, the user's view, a DM, a group DM, a file.
    bot.event({"type": "app_home_opened", "user": ADMIN, "channel": "D0", "tab": "home"})
    bot.event(bot.slack.messages_tab_opened("U1"))
    bot.event(bot.slack.app_context_changed("U1", [{"type": agent.CHANNEL, "value": "C1"}]))
    bot.ask(bot.says("hi in a DM", channel="D1", channel_type="im"))
    bot.ask(bot.says("hi all", channel="G1", channel_type="mpim"))
    doc = bot.slack.add_file("notes.txt", b"release on friday")
    ts = bot.slack.add_message("D1", "when?", "U1", files=[doc])
    bot.event(payloads.message("when?", channel="D1", channel_type="im", ts=ts, files=[doc]))
    bot.run_worker()
    # The older assistant experience.
    bot.slack.experience = "assistant"
    bot.event(bot.slack.assistant_thread_started("U1", context_channel="C1"))

    # /finetune for everyone and for admins (replies through the response URL).
    for text in ("help", "status", "review", "models"):
        response, url = bot.command(text)
        assert response.status == 200
        assert bot.slack.responses(url), text

    assert _refused(bot) == []
