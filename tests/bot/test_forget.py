"""A user's data can be deleted: by themselves (forget-me) or by an admin (forget @user)."""

from __future__ import annotations

from core import approved, keys
from core.store import Vote, answer_id_for
from tests import payloads
from tests.bot.conftest import ADMIN, Bot
from tests.bot.test_finetune import command


def _ask(bot: Bot, user: str, text: str) -> tuple[str, str]:
    event = bot.says(text, user=user, mention=True)
    ts = bot.ask(event)
    return answer_id_for("C1", event["ts"]), ts


def _vote(bot: Bot, user: str, ts: str, value: str) -> None:
    before = len(bot.slack.calls("chat.postEphemeral"))
    bot.interact(payloads.feedback_click(value, user=user, channel="C1", message_ts=ts))
    bot.slack.wait_for("chat.postEphemeral", before + 1)


def test_forget_me_deletes_my_transcripts_votes_and_pending_examples_only(bot: Bot) -> None:
    mine, mine_ts = _ask(bot, "U1", "my private question")
    theirs, theirs_ts = _ask(bot, "U2", "their question")
    _vote(bot, "U1", mine_ts, "up")  # the asker's thumbs-up approves it automatically
    _vote(bot, "U2", theirs_ts, "up")
    _vote(bot, "U1", theirs_ts, "down")
    _vote(bot, "U2", mine_ts, "up")
    pending_before = [e.answer_id for _, e in approved.read_after(bot.redis)]
    assert set(pending_before) == {mine, theirs}

    reply = command(bot, "forget-me", user="U1")
    assert "1 answered questions" in reply["text"] and "1 votes" in reply["text"]

    store = bot.services.store
    assert store.get_answer(mine) is None
    assert store.answer_for_message("C1", mine_ts) is None
    assert bot.redis.exists(keys.votes(mine)) == 0
    assert store.get_answer(theirs) is not None, "other people's answers stay"
    assert store.votes(theirs) == {"U2": Vote.UP}, "only my vote on their answer went"
    assert [e.answer_id for _, e in approved.read_after(bot.redis)] == [theirs]
    assert bot.redis.zscore(keys.RATED, mine) is None
    assert bot.redis.exists(keys.user_answers("U1")) == 0


def test_admins_can_forget_a_user_and_others_cannot(bot: Bot) -> None:
    answer, _ = _ask(bot, "U2", "forget this")
    refused = command(bot, "forget <@U2|someone>", user="U3")
    assert refused["text"].startswith("Sorry, only tuneloop admins")
    assert bot.services.store.get_answer(answer) is not None

    done = command(bot, "forget <@U2|someone>", user=ADMIN)
    assert "<@U2>" in done["text"]
    assert bot.services.store.get_answer(answer) is None
    usage = command(bot, "forget everyone", user=ADMIN)
    assert "Usage" in usage["text"]
