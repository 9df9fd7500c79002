"""Seeing whether learning works, through the real bot (HTTP, real Redis, RQ workers in
burst mode, the Slack and OpenAI emulators): satisfaction and cost per model version in
/finetune, App Home and Prometheus, and the canary simulation.

The simulation: an emulated model whose answers to a known set of questions are right
with a probability set per model version, and simulated users who vote by a rule (a
right answer gets a thumbs-up, a wrong one a thumbs-down). A better candidate is promoted
by the canary and a worse one rolled back, with no admin action.
"""

from __future__ import annotations

import json
import random
import urllib.request
from typing import Any

import pytest

from bot import messages
from core import audit, canary, keys, runs, satisfaction
from core.runs import RunStatus
from tests import payloads
from tests.bot.conftest import ADMIN, Bot
from tests.bot.test_finetune import BASE, command, seed, train, work

QUESTIONS = [f"What is the door code of building {n}?" for n in range(400)]
LIVE = frozenset(QUESTIONS)
# With these qualities (base 0.3, better 0.95, worse 0.2) and 20 votes a side, the wrong
# decision has a chance below 1 in 20,000 (simulated with the same test and rule).
CANARY = {"enabled": True, "share": 0.5, "min_votes": 20, "margin": 0.05, "confidence": 0.9}


@pytest.fixture
def bot_settings(tmp_path: Any) -> dict[str, Any]:
    return {
        "training": {
            "sets_dir": str(tmp_path / "sets"),
            "poll_interval_s": 0.01,
            "progress_post_interval_s": 0,
            "replay_fraction": 0.0,
        },
        "slack": {"recover_after_s": 3},  # the periodic check runs every second
        "approval": {"mode": "admin"},  # training data: the seeded examples only
        "canary": CANARY,
    }


def _answered(bot: Bot, text: str, user: str = "U1") -> str:
    return bot.ask(bot.says(text, user=user, mention=True))


def test_status_models_and_metrics_show_satisfaction_and_cost_per_model(bot: Bot) -> None:
    for n, vote in enumerate(["up", "up", "down"]):
        ts = _answered(bot, f"question {n}?")
        bot.interact(payloads.feedback_click(vote, user="U2", channel="C1", message_ts=ts))
    ts = _answered(bot, "changed my mind?")
    bot.interact(payloads.feedback_click("down", user="U2", channel="C1", message_ts=ts))
    bot.interact(payloads.feedback_click("up", user="U2", channel="C1", message_ts=ts))

    total = satisfaction.totals(bot.redis, BASE)
    assert (total.answers, total.up, total.down) == (4, 3, 1)
    assert total.cost > 0 and total.unpriced == 0

    status = command(bot, "status", user="U2")["text"]
    assert "4 answers, 3 :+1: 1 :-1: → 75% (30%–95%)" in status  # Wilson 3 of 4
    assert messages.CANARY_NONE in status
    assert messages.COST_HEADER not in status, "cost is for admins"
    admin_status = command(bot, "status")["text"]
    assert messages.COST_HEADER in admin_status
    assert f"<#C1> ${total.cost:.2f} (4)" in admin_status

    models = command(bot, "models")["text"]
    assert messages.SAT_HEADER in models
    assert f"`{BASE}` _(current)_: 4 answers" in models
    assert f"${total.cost_per_answer:.5f} per answer" in models

    url = bot.url.replace("/slack/events", "/metrics")
    with urllib.request.urlopen(url, timeout=5) as resp:
        scraped = resp.read().decode()
    assert f'tuneloop_model_answers_total{{model="{BASE}"}} 4.0' in scraped
    assert f'tuneloop_model_votes{{model="{BASE}",vote="up"}} 3.0' in scraped
    assert f'tuneloop_model_up_rate{{model="{BASE}"}} 0.75' in scraped
    assert f'tuneloop_channel_cost_usd_total{{channel="C1",model="{BASE}"}}' in scraped


def test_admin_app_home_shows_the_models_and_an_uploaded_up_rate_chart(bot: Bot) -> None:
    ts = _answered(bot, "chart me?")
    bot.interact(payloads.feedback_click("up", user="U2", channel="C1", message_ts=ts))
    home = {"type": "app_home_opened", "user": ADMIN, "channel": "D9", "tab": "home"}
    bot.event({**home, "event_ts": payloads.new_ts()})
    view = bot.slack.wait_for("views.publish")[0].args["view"]
    images = [b for b in view["blocks"] if b["type"] == "image"]
    assert len(images) == 1
    uploaded = bot.slack.uploaded_files()
    assert len(uploaded) == 1 and uploaded[0]["content"].startswith(b"\x89PNG")
    assert images[0]["slack_file"] == {"id": uploaded[0]["id"]}
    assert messages.HOME_ADMIN_HEADER in json.dumps(view)
    assert f"`{BASE}` _(current)_: 1 answers, 1 :+1: 0 :-1:" in json.dumps(view)

    bot.event({**home, "event_ts": payloads.new_ts()})  # same numbers: the same file
    view = bot.slack.wait_for("views.publish", 2)[1].args["view"]
    assert len(bot.slack.uploaded_files()) == 1
    assert [b for b in view["blocks"] if b["type"] == "image"] == images

    bot.event({**home, "user": "U2", "event_ts": payloads.new_ts()})
    member = bot.slack.wait_for("views.publish", 3)[2].args["view"]
    assert not [b for b in member["blocks"] if b["type"] == "image"]
    assert messages.HOME_ADMIN_HEADER not in json.dumps(member)


# --- the simulation --------------------------------------------------------------------------
class World:
    """The emulated model: how often each version answers the users' questions right.

    Every version answers the offline questions (held-out examples, golden set) alike,
    so the offline gate passes each candidate and only the users' votes can tell them
    apart. A version gets the quality ``upcoming`` holds when it first answers.
    """

    def __init__(self) -> None:
        self.quality: dict[str, float] = {BASE: 0.3}
        self.upcoming = 0.5

    def right(self, model: str, question: str) -> bool:
        """Whether ``model`` answers ``question`` right (fixed per model and question)."""
        return random.Random(f"{model}|{question}").random() < self.quality[model]

    def answer(self, body: dict[str, Any]) -> str:
        question = str(body["messages"][-1]["content"]).replace("<@UBOT>", "").strip()
        self.quality.setdefault(str(body["model"]), self.upcoming)
        if question not in LIVE:
            return f"Echo: {question}"
        if self.right(str(body["model"]), question):
            return f"Right: the answer to '{question}'."
        return f"Wrong: no idea about '{question}'."


def simulate_until_decided(bot: Bot, world: World, start: int, limit: int = 300) -> int:
    """New threads by simulated users, each voted on by its asker, until the canary is
    decided by the periodic check and the training worker; the next question's index."""
    n = start
    while canary.active(bot.redis) is not None:
        assert n < start + limit, f"no decision after {limit} questions"
        question = QUESTIONS[n % len(QUESTIONS)]
        user = f"U{n % 7}"
        event = bot.says(question, user=user, mention=True)
        ts = bot.ask(event)
        answer = bot.openai.completions()[-1]
        vote = "up" if answer["answer"].startswith("Right") else "down"
        bot.interact(payloads.feedback_click(vote, user=user, channel="C1", message_ts=ts))
        if n % 10 == 0:  # a follow-up: the thread keeps its model
            follow = bot.says("And the back door?", user=user, thread_ts=event["ts"])
            bot.ask(follow)
            assert bot.openai.completions()[-1]["model"] == answer["model"]
        work(bot)
        n += 1
    return n


def new_candidate(bot: Bot, world: World, quality: float, start: int) -> runs.Run:
    """A training run whose model passes the offline gate and enters the canary."""
    world.upcoming = quality
    seed(bot, 12, start=start)
    assert "started" in command(bot, "retrain")["text"]
    work(bot)
    run = train(bot)
    assert run.status is RunStatus.CANARY, run
    assert world.quality[run.candidate_model] == quality
    return run


def test_simulation_the_canary_promotes_a_better_model_and_rolls_back_a_worse_one(
    bot: Bot,
) -> None:
    world = World()
    bot.openai.answer_fn = world.answer

    better = new_candidate(bot, world, quality=0.95, start=0)
    going = canary.active(bot.redis)
    assert going is not None and going.candidate == better.candidate_model
    assert going.incumbent == BASE
    status = command(bot, "status")["text"]
    assert f"*Canary:* `{better.candidate_model}` answers 50% of new threads" in status

    n = simulate_until_decided(bot, world, 0)
    assert bot.services.store.current_model(BASE) == better.candidate_model
    assert runs.load_run(bot.redis, better.run_id).status is RunStatus.PROMOTED
    decided = canary.history(bot.redis)[0]
    assert decided["outcome"] == "promote" and decided["by"] == "canary"
    assert decided["candidate_votes"] >= 20 and decided["incumbent_votes"] >= 20
    assert decided["p_value"] < 0.1
    thread = [m["text"] for m in bot.slack.messages(better.channel, better.thread_ts)]
    assert any("now answers 50% of new threads as a canary" in t for t in thread)
    cost = next(t for t in thread if f"*Training cost of `{better.run_id}`:*" in t)
    tokens = runs.load_run(bot.redis, better.run_id).trained_tokens
    assert tokens > 0 and f"after ({tokens:,} trained tokens)" in cost
    assert f"${tokens / 1e6 * 3.00:,.2f} after" in cost  # gpt-4o-mini trains at $3 / 1M
    assert "Per question: 0 better, 0 worse" in "\n".join(thread)
    assert any("ended: *promoted*" in t and "z = " in t for t in thread), thread

    worse = new_candidate(bot, world, quality=0.2, start=100)
    assert canary.active(bot.redis).incumbent == better.candidate_model
    simulate_until_decided(bot, world, n)
    assert bot.services.store.current_model(BASE) == better.candidate_model
    assert runs.load_run(bot.redis, worse.run_id).status is RunStatus.HELD
    decided = canary.history(bot.redis)[0]
    assert decided["outcome"] == "rollback" and decided["by"] == "canary"
    thread = [m["text"] for m in bot.slack.messages(worse.channel, worse.thread_ts)]
    assert any("ended: *rolled back*" in t for t in thread), thread

    models = command(bot, "models")["text"]
    assert f"continued from `{better.candidate_model}` by run `{worse.run_id}`" in models
    # no admin acted on either canary
    assert not [e for e in audit.audit_entries(bot.redis, 100) if "canary" in e["action"]]
    assert bot.redis.exists(keys.CANARY) == 0


def test_an_admin_follows_and_ends_the_canary(bot: Bot) -> None:
    world = World()
    bot.openai.answer_fn = world.answer
    assert command(bot, "canary")["text"] == messages.CANARY_NONE
    run = new_candidate(bot, world, quality=0.5, start=0)
    progress = command(bot, "canary")["text"]
    assert f"`{run.candidate_model}` answers 50% of new threads against `{BASE}`" in progress
    assert "candidate: 0/0 :+1: (no votes yet)" in progress
    assert command(bot, "canary maybe")["text"] == messages.FINETUNE_USAGE.format(
        usage="canary [promote|rollback]"
    )
    assert command(bot, "canary promote", user="U2")["text"] == messages.NOT_ADMIN
    reply = command(bot, "canary rollback")["text"]
    assert reply.startswith(f"Ending the canary of `{run.candidate_model}`: rolled back.")
    work(bot)
    assert canary.active(bot.redis) is None
    assert bot.services.store.current_model(BASE) == BASE
    thread = [m["text"] for m in bot.slack.messages(run.channel, run.thread_ts)]
    assert any("ended: *rolled back* (ended early, decided by <@UADMIN>)" in t for t in thread)
    assert runs.load_run(bot.redis, run.run_id).status is RunStatus.HELD
