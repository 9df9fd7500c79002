"""Applying canary decisions: promotion, rollback, a decider that died, two processes at
once (real Redis, the OpenAI emulator, real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai import OpenAI
from redis import Redis
from rq import Queue

from core import canary, keys, model_registry, replies, run_control, runs
from core.canary import CanaryState, Outcome
from core.run_control import LoopContext
from core.runs import Run, RunStatus
from core.settings import ROOT, CanarySettings, Settings, load_behaviour
from core.store import AnswerRecord, Store, Vote, VoteSource
from tests.bot.conftest import write_config
from tests.emulators.openai import OpenAIEmulator
from workers import rollout

INC = "gpt-4o-mini-2024-07-18"
CAND = "ft:gpt-4o-mini-2024-07-18:org:tuneloop:cand"
RULES = {"enabled": True, "share": 0.5, "min_votes": 20, "margin": 0.05, "confidence": 0.9}


@pytest.fixture
def ctx(tmp_path: Path, redis_conn: Redis, openai_api: OpenAIEmulator) -> LoopContext:
    base = load_behaviour()
    settings: Settings = base.model_copy(update={"canary": CanarySettings(**RULES)})
    openai_api.add_model(CAND)
    client = OpenAI(api_key="sk-test", base_url=openai_api.url, max_retries=0)
    return LoopContext(settings, redis_conn, client)


def votes(redis: Redis, model: str, up: int, down: int, *, tag: str) -> None:
    """``up + down`` answers of ``model``, each rated once, through the real store."""
    store = Store(redis, retention_s=3600)
    for n in range(up + down):
        answer_id = f"C1-{tag}{n}"
        store.save_answer(
            AnswerRecord(
                answer_id=answer_id,
                team_id="T1",
                channel_id="C1",
                thread_ts=f"{tag}{n}",
                question_ts=f"{tag}{n}",
                user_id="UASK",
                messages=[],
                answer="a",
                model=model,
                prompt_tokens=10,
                completion_tokens=5,
                latency_ms=1,
                created_at=time.time(),
                message_ts=(f"{tag}{n}.5",),
            )
        )
        vote = Vote.UP if n < up else Vote.DOWN
        store.record_vote(answer_id, "UVOTER", vote, VoteSource.BUTTON)


def start_canary(ctx: LoopContext) -> canary.Canary:
    """A run that passed the gate and a canary of its model, as the loop leaves them."""
    now = time.time()
    run = Run("run-1", RunStatus.CANARY, "UADMIN", "C1", now, now, candidate_model=CAND)
    ctx.redis.hset(keys.run("run-1"), mapping=run.to_hash())
    going = canary.start(
        ctx.redis, ctx.settings.canary, candidate=CAND, incumbent=INC, run_id="run-1", by="gate"
    )
    assert going is not None
    return going


def reports(redis: Redis) -> list[tuple[str, str]]:
    """(run id, kind) of what the loop recorded for Slack, oldest first."""
    return [(f["run_id"], f["kind"]) for _, f in replies.entries(redis.xrange(keys.RUN_EVENTS))]


def test_votes_before_the_canary_do_not_count(ctx: LoopContext) -> None:
    votes(ctx.redis, INC, 5, 95, tag="old")  # a bad past does not make the candidate look good
    start_canary(ctx)
    votes(ctx.redis, CAND, 10, 10, tag="c")
    votes(ctx.redis, INC, 18, 2, tag="i")
    seen = canary.progress(ctx.redis, canary.active(ctx.redis))
    assert (seen.incumbent_up, seen.incumbent_votes) == (18, 20)
    assert run_control.canary_tick(ctx)
    assert rollout.decide(ctx).outcome is Outcome.ROLLBACK
    assert ctx.current_model() == INC


def test_a_good_candidate_is_promoted_with_the_numbers(ctx: LoopContext) -> None:
    start_canary(ctx)
    votes(ctx.redis, CAND, 5, 1, tag="c")
    assert not run_control.canary_tick(ctx)  # too few votes: nothing happens
    assert rollout.decide(ctx).outcome is Outcome.CONTINUE
    votes(ctx.redis, CAND, 15, 0, tag="c2")
    votes(ctx.redis, INC, 14, 6, tag="i")
    assert run_control.canary_tick(ctx)
    decision = rollout.decide(ctx)
    assert decision is not None and decision.outcome is Outcome.PROMOTE
    assert (decision.candidate_up, decision.candidate_votes) == (20, 21)
    assert (decision.incumbent_up, decision.incumbent_votes) == (14, 20)
    # se = sqrt(20/21 * 1/21 / 21 + 0.7 * 0.3 / 20) = 0.112515; z = (0.252381 + 0.05) / se
    assert decision.z == pytest.approx(2.68748, abs=1e-4)
    assert decision.p_value == pytest.approx(0.003600, abs=2e-5)
    assert ctx.current_model() == CAND
    assert model_registry.history(ctx.redis, 1)[0]["by"] == "canary (canary)"
    assert runs.load_run(ctx.redis, "run-1").status is RunStatus.PROMOTED
    assert canary.active(ctx.redis) is None
    assert canary.history(ctx.redis)[0]["outcome"] == "promote"
    assert ("run-1", "canary_decided") in reports(ctx.redis)
    assert rollout.decide(ctx) is None  # decided once


def test_a_worse_candidate_is_rolled_back(ctx: LoopContext) -> None:
    start_canary(ctx)
    votes(ctx.redis, CAND, 10, 12, tag="c")
    votes(ctx.redis, INC, 18, 2, tag="i")
    decision = rollout.decide(ctx)
    assert decision is not None and decision.outcome is Outcome.ROLLBACK
    assert ctx.current_model() == INC
    assert runs.load_run(ctx.redis, "run-1").status is RunStatus.HELD
    assert canary.history(ctx.redis)[0]["outcome"] == "rollback"


def test_an_admin_ends_the_canary_early(ctx: LoopContext) -> None:
    start_canary(ctx)
    votes(ctx.redis, CAND, 1, 0, tag="c")
    decision = rollout.decide(ctx, force=Outcome.ROLLBACK, by="UADMIN")
    assert decision is not None and (decision.outcome, decision.by) == (Outcome.ROLLBACK, "UADMIN")
    assert canary.active(ctx.redis) is None


def test_a_decision_whose_decider_died_is_finished_as_recorded(ctx: LoopContext) -> None:
    going = start_canary(ctx)
    votes(ctx.redis, CAND, 20, 1, tag="c")
    votes(ctx.redis, INC, 15, 5, tag="i")
    decision = canary.verdict(canary.progress(ctx.redis, going), ctx.settings.canary)
    assert decision.outcome is Outcome.PROMOTE
    assert canary.begin_decision(ctx.redis, going.canary_id, decision) is not None
    ctx.redis.delete(keys.CANARY_LOCK)  # the decider died; its lock expired
    votes(ctx.redis, CAND, 0, 30, tag="late")  # later votes do not change a decision taken
    assert canary.active(ctx.redis).state is CanaryState.DECIDING
    assert run_control.canary_tick(ctx)
    assert rollout.decide(ctx).outcome is Outcome.PROMOTE
    assert ctx.current_model() == CAND
    assert len(canary.history(ctx.redis)) == 1


def test_two_processes_deciding_at_once_decide_once(
    ctx: LoopContext, tmp_path: Path, redis_url: str, openai_api: OpenAIEmulator
) -> None:
    start_canary(ctx)
    votes(ctx.redis, CAND, 20, 0, tag="c")
    votes(ctx.redis, INC, 15, 5, tag="i")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": "s",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": openai_api.url,
        "REDIS_URL": redis_url,
        "CONFIG_FILE": str(write_config(tmp_path / "settings.yaml", {"canary": RULES})),
    }
    code = "from workers.jobs import decide_canary_job; decide_canary_job()"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert ctx.current_model() == CAND
    promotions = [h for h in model_registry.history(ctx.redis, 10) if h["action"] == "promote"]
    assert len(promotions) == 1
    assert len(canary.history(ctx.redis)) == 1


def test_the_periodic_check_queues_one_decision_at_a_time(ctx: LoopContext) -> None:
    start_canary(ctx)
    votes(ctx.redis, CAND, 20, 0, tag="c")
    votes(ctx.redis, INC, 20, 0, tag="i")
    for _ in range(3):  # the training worker is busy: checks keep coming
        assert run_control.canary_tick(ctx)
    queued = [j for j in Queue(keys.QUEUE_TRAINING, connection=ctx.redis).get_jobs()]
    assert [j.func_name for j in queued] == [run_control.DECIDE_CANARY_JOB]
