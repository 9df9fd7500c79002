"""Votes from buttons and reactions, corrections from the modal, stored in real Redis."""

from __future__ import annotations

import json

from bot import ids, messages
from core import keys
from core.store import Vote, answer_id_for
from tests import payloads
from tests.bot.conftest import Bot


def _answered(bot: Bot) -> tuple[str, str]:
    """Ask a question; return (answer id, answer message ts)."""
    event = bot.says("How do I reset my password?", mention=True)
    answer_ts = bot.ask(event)
    return answer_id_for("C1", event["ts"]), answer_ts


def test_thumbs_up_is_recorded_acknowledged_and_keeps_the_transcript(bot: Bot) -> None:
    answer_id, ts = _answered(bot)
    response = bot.interact(payloads.feedback_click("up", user="U2", channel="C1", message_ts=ts))
    assert response.status == 200

    assert bot.services.store.votes(answer_id) == {"U2": Vote.UP}
    ephemeral = bot.slack.wait_for("chat.postEphemeral")[0]
    assert ephemeral.args["user"] == "U2"
    assert ephemeral.args["text"] == messages.VOTE_THANKS["up"]
    # A rated answer is kept for good, with its message index.
    assert bot.redis.ttl(keys.answer(answer_id)) == -1
    assert bot.redis.ttl(keys.message_answer("C1", ts)) == -1
    assert bot.redis.zscore(keys.RATED, answer_id) is not None


def test_clicking_again_changes_the_vote_and_thumbs_down_opens_the_correction_modal(
    bot: Bot,
) -> None:
    answer_id, ts = _answered(bot)
    bot.interact(payloads.feedback_click("up", user="U2", channel="C1", message_ts=ts))
    bot.slack.wait_for("chat.postEphemeral")
    click = payloads.feedback_click("down", user="U2", channel="C1", message_ts=ts)
    bot.interact(click)

    assert bot.services.store.votes(answer_id) == {"U2": Vote.DOWN}, "one vote per user"
    opened = bot.slack.wait_for("views.open")[0]
    assert opened.args["trigger_id"] == click["trigger_id"]
    view = opened.args["view"]
    assert view["callback_id"] == ids.CORRECTION_VIEW
    assert view["blocks"][0]["label"]["text"] == "What should the answer have been?"
    assert (
        bot.slack.wait_for("chat.postEphemeral", 2)[1].args["text"] == messages.VOTE_CHANGED["down"]
    )

    submission = payloads.view_submission(
        ids.CORRECTION_VIEW,
        user="U2",
        private_metadata=view["private_metadata"],
        values={
            ids.CORRECTION_BLOCK: {
                ids.CORRECTION_INPUT: {
                    "type": "plain_text_input",
                    "value": "Use the self-service page.",
                }
            }
        },
    )
    response = bot.interact(submission)
    assert response.status == 200
    assert json.loads(response.body)["response_action"] == "update"
    assert bot.services.store.corrections(answer_id) == {"U2": "Use the self-service page."}
    assert bot.services.store.votes(answer_id) == {"U2": Vote.DOWN}


def test_an_empty_correction_is_refused_in_the_modal(bot: Bot) -> None:
    answer_id, _ = _answered(bot)
    submission = payloads.view_submission(
        ids.CORRECTION_VIEW,
        user="U2",
        private_metadata=json.dumps({"answer_id": answer_id}),
        values={ids.CORRECTION_BLOCK: {ids.CORRECTION_INPUT: {"value": "   "}}},
    )
    response = bot.interact(submission)
    body = json.loads(response.body)
    assert body["response_action"] == "errors"
    assert ids.CORRECTION_BLOCK in body["errors"]
    assert bot.services.store.corrections(answer_id) == {}


def test_votes_of_different_users_are_kept_apart(bot: Bot) -> None:
    answer_id, ts = _answered(bot)
    for user, value in (("U2", "up"), ("U3", "down"), ("U4", "up")):
        bot.interact(payloads.feedback_click(value, user=user, channel="C1", message_ts=ts))
    assert bot.services.store.votes(answer_id) == {"U2": Vote.UP, "U3": Vote.DOWN, "U4": Vote.UP}
    assert bot.services.store.weekly_stats() == {"answers": 1, "up": 2, "down": 1}


def test_reactions_count_as_votes_and_removing_one_withdraws_it(bot: Bot) -> None:
    answer_id, ts = _answered(bot)
    bot.event(payloads.reaction("+1", user="U2", channel="C1", message_ts=ts))
    bot.event(payloads.reaction("-1::skin-tone-3", user="U3", channel="C1", message_ts=ts))
    assert bot.services.store.votes(answer_id) == {"U2": Vote.UP, "U3": Vote.DOWN}

    bot.event(payloads.reaction("+1", user="U2", channel="C1", message_ts=ts, added=False))
    assert bot.services.store.votes(answer_id) == {"U3": Vote.DOWN}


def test_other_reactions_and_reactions_on_other_messages_change_nothing(bot: Bot) -> None:
    answer_id, ts = _answered(bot)
    other = bot.slack.add_message("C1", "someone else's message", "U9")
    bot.event(payloads.reaction("tada", user="U2", channel="C1", message_ts=ts))
    bot.event(payloads.reaction("+1", user="U2", channel="C1", message_ts=other))
    bot.interact(payloads.feedback_click("up", user="U5", channel="C1", message_ts=other))
    assert bot.slack.wait_for("chat.postEphemeral")[0].args["text"] == messages.VOTE_NO_ANSWER
    assert bot.services.store.votes(answer_id) == {}
    assert bot.redis.zcard(keys.RATED) == 0


def test_app_home_shows_model_weekly_stats_and_pending_examples_for_admins(bot: Bot) -> None:
    _, ts = _answered(bot)
    bot.interact(payloads.feedback_click("up", user="U2", channel="C1", message_ts=ts))
    bot.event(
        {
            "type": "app_home_opened",
            "user": "UADMIN",
            "channel": "D9",
            "tab": "home",
            "event_ts": payloads.new_ts(),
        }
    )
    view = bot.slack.wait_for("views.publish")[0].args
    assert view["user_id"] == "UADMIN"
    text = json.dumps(view["view"])
    assert bot.settings.model.base_model in text
    assert "1 answers, 1 :+1:, 0 :-1:" in text
    assert "waiting for the next training run" in text

    bot.event(
        {
            "type": "app_home_opened",
            "user": "U2",
            "channel": "D8",
            "tab": "home",
            "event_ts": payloads.new_ts(),
        }
    )
    view = bot.slack.wait_for("views.publish", 2)[1].args
    assert "waiting for the next training run" not in json.dumps(view["view"])
