"""A user's data can be deleted: by themselves (forget-me) or by an admin (forget @user)."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from bot import ids
from core import approval, approved, audit, forget, keys
from core.store import Vote, answer_id_for
from tests import payloads
from tests.bot.conftest import ADMIN, Bot
from tests.bot.test_attachments import _png
from tests.bot.test_finetune import command, seed, work


@pytest.fixture
def bot_settings(tmp_path: Path) -> dict[str, Any]:
    """Every answer through the answers queue (RQ keeps the finished job, question and
    asker included), training sets in the test's folder, polls due at once."""
    return {
        "slack": {"inline_answers": 0},
        "training": {
            "sets_dir": str(tmp_path / "sets"),
            "poll_interval_s": 0.01,
            "progress_post_interval_s": 0,
            "replay_fraction": 0.0,
        },
    }


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
    log = audit.audit_entries(bot.redis)
    assert not [e for e in log if "U2" in json.dumps(e)], "the admin log forgets them too"
    assert (log[0]["user"], log[0]["detail"]) == (ADMIN, forget.FORGOTTEN_USER)
    usage = command(bot, "forget everyone", user=ADMIN)
    assert "Usage" in usage["text"]


FORGOTTEN = "UFORGETME7"
QUESTION = "Where is the FORGETME-QUESTION handbook?"
SCREEN_QUESTION = "What does my FORGETME-SCREEN show?"
SCREENSHOT = _png()
CORRECTION = "The FORGETME-CORRECTION says: ask the helpdesk."


def _everything(redis: Redis) -> str:
    """Every key and every value of every type in the db (RQ's compressed job data
    decompressed), as one text."""
    parts: list[bytes] = []
    for key in redis.scan_iter(count=1000):
        parts.append(key)
        kind = redis.type(key).decode()
        if kind == "string":
            values = [redis.get(key) or b""]
        elif kind == "hash":
            values = [item for pair in redis.hgetall(key).items() for item in pair]
        elif kind == "list":
            values = redis.lrange(key, 0, -1)
        elif kind == "set":
            values = list(redis.smembers(key))
        elif kind == "zset":
            values = [member for member, _ in redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [x for _, fields in redis.xrange(key) for pair in fields.items() for x in pair]
        else:
            raise AssertionError(f"{key!r}: a {kind} this test cannot read")
        for value in values:
            try:
                parts.append(zlib.decompress(value))
            except zlib.error:
                parts.append(value)
    return b"\n".join(parts).decode("utf-8", "replace")


def test_after_forget_me_no_key_or_value_holds_the_user_and_training_files_are_deleted(
    bot: Bot,
) -> None:
    sets_dir = Path(bot.settings.training.sets_dir)
    seed(bot, 12)  # other people's examples, so a run trains
    # The user asks and approves the answer (an example of theirs).
    mine = bot.says(QUESTION, user=FORGOTTEN, mention=True)
    mine_ts = bot.ask(mine)
    _vote(bot, FORGOTTEN, mine_ts, "up")
    # Someone follows up in the user's thread: their transcript holds the user's question.
    follow_ts = bot.ask(bot.says("And where is the index?", user="U2", thread_ts=mine["ts"]))
    _vote(bot, "U2", follow_ts, "up")
    # The user corrects someone else's answer and an admin approves the correction.
    theirs = bot.says("Who runs the helpdesk?", user="U3", mention=True)
    theirs_id, theirs_ts = answer_id_for("C1", theirs["ts"]), bot.ask(theirs)
    _vote(bot, FORGOTTEN, theirs_ts, "down")
    submission = payloads.view_submission(
        ids.CORRECTION_VIEW,
        user=FORGOTTEN,
        private_metadata=json.dumps({"answer_id": theirs_id}),
        values={ids.CORRECTION_BLOCK: {ids.CORRECTION_INPUT: {"value": CORRECTION}}},
    )
    bot.interact(submission)
    assert approval.decide(
        bot.services.store, theirs_id, approval.Decision.CORRECTED, by=ADMIN
    ).stream_id
    command(bot, "retrain", user=FORGOTTEN)  # refused, and the refusal is logged
    # In the Messages tab (greeted once, their view remembered under their id and their
    # DM) they ask about a screenshot: its image is embedded in the transcript, then in
    # the approved example, the training set and the uploaded file.
    dm = bot.slack.dm_channel(FORGOTTEN)
    bot.event(bot.slack.messages_tab_opened(FORGOTTEN))
    view = [{"type": "channel", "value": "C0VIEW", "team_id": "T1"}]
    bot.event(bot.slack.app_context_changed(FORGOTTEN, view))
    image = bot.slack.add_file("screen.png", SCREENSHOT)
    shot_ts = bot.slack.add_message(
        dm, SCREEN_QUESTION, FORGOTTEN, files=[image], subtype="file_share"
    )
    shot = payloads.message(
        SCREEN_QUESTION,
        user=FORGOTTEN,
        channel=dm,
        channel_type="im",
        ts=shot_ts,
        files=[image],
        subtype="file_share",
    )
    shot_answer_ts = bot.ask(shot)
    before = len(bot.slack.calls("chat.postEphemeral"))
    bot.interact(
        payloads.feedback_click("up", user=FORGOTTEN, channel=dm, message_ts=shot_answer_ts)
    )
    bot.slack.wait_for("chat.postEphemeral", before + 1)
    embedded = base64.b64encode(SCREENSHOT).decode()
    everything = _everything(bot.redis)
    assert FORGOTTEN in everything and QUESTION in everything and CORRECTION in everything
    assert embedded in everything and bot.redis.exists(keys.viewing(dm), keys.greeted(FORGOTTEN))
    assert bot.redis.keys("rq:job:answer-*"), "finished answer jobs (with the question) kept"

    # A training run consumes all of it and uploads it to the provider.
    command(bot, "retrain")
    work(bot)
    [job] = bot.openai.jobs()
    uploaded = {job["training_file"], job.get("validation_file")} - {None}
    assert any(QUESTION.encode() in bot.openai.file_bytes(f) for f in uploaded)
    assert any(embedded.encode() in bot.openai.file_bytes(f) for f in uploaded)

    reply = command(bot, "forget-me", user=FORGOTTEN)["text"]

    everything = _everything(bot.redis)
    for trace in (FORGOTTEN, QUESTION, CORRECTION, "FORGETME", embedded, "C0VIEW"):
        assert trace not in everything, f"{trace!r} is still in Redis"
    assert not uploaded & {f["id"] for f in bot.openai.files()}, "provider copies deleted"
    assert all(f in reply for f in uploaded)
    leftovers = [
        p
        for p in sets_dir.rglob("*")
        if p.is_file() and (b"FORGETME" in p.read_bytes() or embedded.encode() in p.read_bytes())
    ]
    assert leftovers == [], "training-set files holding their data are deleted"
    # Other people's data stays.
    assert bot.services.store.get_answer(theirs_id) is not None
    assert approved.pending_count(bot.redis) == 0 and bot.redis.xlen(keys.APPROVED_LOG) >= 12
