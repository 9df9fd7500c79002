"""``/finetune review``: admins approve, correct, edit or reject rated answers; the
approval policy approves some on its own. Real bot, real Redis, the Slack emulator."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot import ids, messages
from core import approval, approved, audit, keys
from core.store import answer_id_for
from tests import payloads
from tests.bot.conftest import ADMIN, Bot
from tests.bot.test_finetune import command, seed, training_lines, wait, work
from workers import evaluation


@pytest.fixture
def bot_settings(tmp_path: Any) -> dict[str, Any]:
    return {"training": {"sets_dir": str(tmp_path / "sets"), "poll_interval_s": 0.01}}


def _answer(bot: Bot, question: str) -> tuple[str, str]:
    """Ask; return (answer id, answer message ts)."""
    event = bot.says(question, mention=True)
    ts = bot.ask(event)
    return answer_id_for("C1", event["ts"]), ts


def _vote(bot: Bot, ts: str, value: str, user: str) -> None:
    bot.interact(payloads.feedback_click(value, user=user, channel="C1", message_ts=ts))


def _correct(bot: Bot, answer_id: str, ts: str, user: str, text: str) -> None:
    _vote(bot, ts, "down", user)
    submission = payloads.view_submission(
        ids.CORRECTION_VIEW,
        user=user,
        private_metadata=json.dumps({"answer_id": answer_id}),
        values={ids.CORRECTION_BLOCK: {ids.CORRECTION_INPUT: {"value": text}}},
    )
    assert json.loads(bot.interact(submission).body)["response_action"] == "update"


def _click(bot: Bot, action_id: str, answer_id: str, user: str = ADMIN) -> str:
    """Press a review button; returns the response URL the bot answers on."""
    url = bot.slack.new_response_url()
    bot.interact(
        {
            "type": "block_actions",
            "user": {"id": user, "username": user, "team_id": "T1"},
            "api_app_id": "A1",
            "team": {"id": "T1", "domain": "example"},
            "container": {"type": "message", "message_ts": "1.000001", "channel_id": "C1"},
            "channel": {"id": "C1", "name": "general"},
            "trigger_id": f"trigger-{action_id}",
            "response_url": url,
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": ids.REVIEW_BLOCK_PREFIX + answer_id,
                    "value": json.dumps({"answer_id": answer_id}),
                    "action_ts": "1.1",
                }
            ],
        }
    )
    return url


def _logged(bot: Bot) -> list[approved.Example]:
    return [example for _, example in approved.read_after(bot.redis)]


def test_the_askers_thumbs_up_approves_the_answer_automatically(bot: Bot) -> None:
    answer_id, ts = _answer(bot, "How do I book a meeting room?")
    _vote(bot, ts, "up", "U1")  # U1 asked
    wait(lambda: _logged(bot), what="the approved example")
    example = _logged(bot)[0]
    record = bot.services.store.get_answer(answer_id)
    assert example.messages == [*record.messages, {"role": "assistant", "content": record.answer}]
    assert example.approved_by == approval.AUTO_APPROVER and example.rejected is None
    assert command(bot, "review")["text"] == messages.REVIEW_EMPTY


def test_review_lists_pending_answers_with_votes_corrections_and_buttons(bot: Bot) -> None:
    liked, liked_ts = _answer(bot, "Where is the VPN guide?")
    _vote(bot, liked_ts, "up", "U2")  # one up-vote from someone else: not enough alone
    wrong, wrong_ts = _answer(bot, "Who approves expenses?")
    _correct(bot, wrong, wrong_ts, "U3", "Your manager approves expenses in the HR tool.")
    wait(lambda: approval.pending_count(bot.redis) == 2, what="two rated answers")

    reply = command(bot, "review")
    assert reply["response_type"] == "ephemeral"
    body = json.dumps(reply["blocks"])
    assert "Where is the VPN guide?" in body and "Who approves expenses?" in body
    assert ":+1: 1" in body and ":-1: 1" in body
    assert "Your manager approves expenses in the HR tool." in body
    actions = {b["block_id"]: b for b in reply["blocks"] if b["type"] == "actions"}
    liked_buttons = [e["action_id"] for e in actions[ids.REVIEW_BLOCK_PREFIX + liked]["elements"]]
    wrong_buttons = [e["action_id"] for e in actions[ids.REVIEW_BLOCK_PREFIX + wrong]["elements"]]
    assert liked_buttons == [
        ids.REVIEW_APPROVE,
        ids.REVIEW_EDIT,
        ids.REVIEW_REJECT,
        ids.REVIEW_GOLDEN,
    ]
    assert wrong_buttons == [
        ids.REVIEW_APPROVE,
        ids.REVIEW_APPROVE_CORRECTION,
        ids.REVIEW_EDIT,
        ids.REVIEW_REJECT,
        ids.REVIEW_GOLDEN,
    ]
    assert _logged(bot) == [], "nothing is approved before an admin decides"


def test_approving_logs_the_example_once_and_refreshes_the_list(bot: Bot) -> None:
    answer_id, ts = _answer(bot, "Where is the VPN guide?")
    _vote(bot, ts, "up", "U2")
    wait(lambda: approval.pending_count(bot.redis) == 1)

    url = _click(bot, ids.REVIEW_APPROVE, answer_id)
    refreshed = wait(lambda: bot.slack.responses(url), what="the refreshed list")[0]
    assert refreshed["replace_original"] is True
    assert messages.REVIEW_DONE["approved"] in refreshed["text"]
    assert messages.REVIEW_EMPTY in refreshed["text"]
    [example] = _logged(bot)
    assert example.approved_by == ADMIN and example.answer_id == answer_id
    assert approval.decision_of(bot.redis, answer_id)["decision"] == "approved"
    assert audit.audit_entries(bot.redis)[0]["action"] == "review approved"

    again = _click(bot, ids.REVIEW_REJECT, answer_id)
    assert "already decided" in wait(lambda: bot.slack.responses(again))[0]["text"]
    assert len(_logged(bot)) == 1


def test_a_correction_is_learned_only_once_an_admin_approves_it(bot: Bot) -> None:
    answer_id, ts = _answer(bot, "Who approves expenses?")
    _correct(bot, answer_id, ts, "U3", "Your manager approves expenses in the HR tool.")
    wait(lambda: approval.pending_count(bot.redis) == 1)
    assert _logged(bot) == []

    url = _click(bot, ids.REVIEW_APPROVE_CORRECTION, answer_id)
    wait(lambda: bot.slack.responses(url))
    [example] = _logged(bot)
    record = bot.services.store.get_answer(answer_id)
    assert example.messages[-1] == {
        "role": "assistant",
        "content": "Your manager approves expenses in the HR tool.",
    }
    assert example.messages[:-1] == record.messages, "the prompt exactly as the bot used it"
    assert example.rejected == record.answer, "kept for a preference pair"


def test_a_rejected_correction_is_never_trained(bot: Bot) -> None:
    answer_id, ts = _answer(bot, "Who approves expenses?")
    _correct(bot, answer_id, ts, "U3", "Bob from accounting, always.")
    wait(lambda: approval.pending_count(bot.redis) == 1)
    url = _click(bot, ids.REVIEW_REJECT, answer_id)
    assert messages.REVIEW_DONE["rejected"] in wait(lambda: bot.slack.responses(url))[0]["text"]
    assert _logged(bot) == []

    seed(bot, 12)
    command(bot, "retrain")
    work(bot)
    job = bot.openai.jobs()[0]
    everything = json.dumps(training_lines(bot, job) + training_lines(bot, job, "validation_file"))
    assert "Bob from accounting" not in everything
    assert "Who approves expenses?" not in everything


def test_edit_opens_a_modal_and_the_edited_answer_is_approved(bot: Bot) -> None:
    answer_id, ts = _answer(bot, "Who approves expenses?")
    _correct(bot, answer_id, ts, "U3", "your manager")
    wait(lambda: approval.pending_count(bot.redis) == 1)

    url = _click(bot, ids.REVIEW_EDIT, answer_id)
    opened = wait(
        lambda: [
            c
            for c in bot.slack.calls("views.open")
            if c.args["trigger_id"].startswith("trigger-review")
        ]
    )[0].args["view"]
    assert opened["callback_id"] == ids.REVIEW_EDIT_VIEW
    assert opened["blocks"][0]["element"]["initial_value"] == "your manager"

    edited = "Your manager approves expenses in the HR tool, within two working days."
    submission = payloads.view_submission(
        ids.REVIEW_EDIT_VIEW,
        user=ADMIN,
        private_metadata=opened["private_metadata"],
        values={ids.REVIEW_EDIT_BLOCK: {ids.REVIEW_EDIT_INPUT: {"value": edited}}},
    )
    response = bot.interact(submission)
    assert json.loads(response.body)["response_action"] == "clear"
    [example] = _logged(bot)
    assert example.messages[-1]["content"] == edited
    assert example.rejected == bot.services.store.get_answer(answer_id).answer
    refreshed = wait(lambda: bot.slack.responses(url))[0]
    assert messages.REVIEW_DONE["edited"] in refreshed["text"]


def test_a_non_admin_sending_review_payloads_changes_nothing(bot: Bot) -> None:
    answer_id, ts = _answer(bot, "Who approves expenses?")
    _correct(bot, answer_id, ts, "U3", "Bob from accounting, always.")
    wait(lambda: approval.pending_count(bot.redis) == 1)
    opened_before = len(bot.slack.calls("views.open"))

    for action_id in (
        ids.REVIEW_APPROVE,
        ids.REVIEW_APPROVE_CORRECTION,
        ids.REVIEW_REJECT,
        ids.REVIEW_EDIT,
    ):
        _click(bot, action_id, answer_id, user="U3")
    wait(lambda: len([e for e in bot.slack.ephemerals() if e["text"] == messages.NOT_ADMIN]) == 4)
    submission = payloads.view_submission(
        ids.REVIEW_EDIT_VIEW,
        user="U3",
        private_metadata=json.dumps({"answer_id": answer_id}),
        values={ids.REVIEW_EDIT_BLOCK: {ids.REVIEW_EDIT_INPUT: {"value": "Bob, obviously."}}},
    )
    body = json.loads(bot.interact(submission).body)
    assert body["response_action"] == "errors"

    assert bot.redis.hlen(keys.REVIEWED) == 0
    assert _logged(bot) == []
    assert len(bot.slack.calls("views.open")) == opened_before
    assert approval.pending_count(bot.redis) == 1


def test_an_admin_adds_an_answer_to_the_golden_set(bot: Bot) -> None:
    answer_id, ts = _answer(bot, "Where is the VPN guide?")
    _vote(bot, ts, "up", "U2")
    wait(lambda: approval.pending_count(bot.redis) == 1, what="a rated answer")
    _click(bot, ids.REVIEW_GOLDEN, answer_id, user="U2")  # not an admin: nothing happens
    assert evaluation.stored_golden(bot.redis, "s") == []

    url = _click(bot, ids.REVIEW_GOLDEN, answer_id)
    reply = wait(lambda: bot.slack.responses(url), what="the refreshed review")[0]
    assert messages.REVIEW_GOLDEN_DONE in reply["text"]
    golden = evaluation.stored_golden(bot.redis, "s")
    assert [(g.question, g.expected) for g in golden] == [
        ("Where is the VPN guide?", "Echo: Where is the VPN guide?")
    ]
    again = _click(bot, ids.REVIEW_GOLDEN, answer_id)
    reply = wait(lambda: bot.slack.responses(again), what="the second reply")[0]
    assert messages.REVIEW_GOLDEN_ALREADY in reply["text"]
    assert approval.pending_count(bot.redis) == 1, "marking golden is not a review decision"
