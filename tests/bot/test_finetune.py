"""``/finetune`` and the learning loop end to end: the real bot over HTTP, real Redis, real
RQ workers (burst mode), the Slack and OpenAI emulators with fine-tuning jobs moved on
by the test."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from bot import ids, messages, reporting
from core import approved, audit, exports, keys, model_registry, run_control, runs
from core.runs import RunStatus
from core.settings import TrainingMethod
from tests import payloads
from tests.bot.conftest import ADMIN, SIGNING_SECRET, Bot
from workers.training import base
from workers.training.base import TrainingFiles

BASE = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def bot_settings(tmp_path: Any, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Sets in the test's folder, polls due at once, every event reported (plus any
    overrides a test passes with ``indirect`` parametrisation)."""
    return {
        "training": {
            "sets_dir": str(tmp_path / "sets"),
            "poll_interval_s": 0.01,
            "progress_post_interval_s": 0,
            "replay_fraction": 0.0,
        },
        **getattr(request, "param", {}),
    }


# --- helpers (also used by test_review.py) -----------------------------------------------
def wait(predicate: Any, timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy (Bolt runs listeners after acking)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def command(bot: Bot, text: str, user: str = ADMIN, channel: str = "C1") -> dict[str, Any]:
    """Run ``/finetune text`` and return the reply the bot sent to the response URL."""
    response, url = bot.command(text, user=user, channel=channel)
    assert response.status == 200
    return wait(lambda: bot.slack.responses(url), what=f"a reply to /finetune {text}")[0]


def work(bot: Bot) -> None:
    """Run every training job that is due, scheduled polls included, as a worker would,
    then post the run events as the web process's periodic chore does."""
    queue = Queue(keys.QUEUE_TRAINING, connection=bot.redis)
    registry = ScheduledJobRegistry(queue=queue)
    for job_id in registry.get_job_ids():
        registry.remove(job_id)
        queue.enqueue_job(Job.fetch(job_id, connection=bot.redis))
    SimpleWorker([queue], connection=bot.redis).work(burst=True)
    reporting.consume_run_events(bot.services)


def seed(bot: Bot, n: int, *, start: int = 0, rejected: str | None = None) -> None:
    """Append ``n`` approved examples shaped exactly like the bot's transcripts."""
    system = bot.settings.model.system_prompt
    for i in range(start, start + n):
        example = approved.Example(
            messages=[
                {"role": "system", "content": system},
                {"role": "user", "content": f"How do I configure service {i}?"},
                {"role": "assistant", "content": f"Echo: How do I configure service {i}?"},
            ],
            source="slack",
            approved_by="auto",
            answer_id=f"C1-{i}",
            rejected=rejected,
        )
        assert approved.append(bot.redis, example)


def only_run(bot: Bot) -> runs.Run:
    recent = runs.recent_runs(bot.redis, 1)
    assert recent, "no run was created"
    return recent[0]


def train(bot: Bot, steps: int | None = None) -> runs.Run:
    """Advance the newest emulated job (all the way, or ``steps`` stages) and poll."""
    run = only_run(bot)
    for _ in range(steps or 20):
        if run.status is not RunStatus.TRAINING:
            break
        bot.openai.advance_job(run.job_id)
        work(bot)
        run = runs.load_run(bot.redis, run.run_id)
    return run


def thread_texts(bot: Bot, run: runs.Run) -> list[str]:
    return [m["text"] for m in bot.slack.messages(run.channel, run.thread_ts)]


def training_lines(bot: Bot, job: dict[str, Any], key: str = "training_file") -> list[dict]:
    raw = bot.openai.file_bytes(job[key]).decode()
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


# --- tests ---------------------------------------------------------------------------------
def test_help_and_status_are_for_everyone(bot: Bot) -> None:
    seed(bot, 3)
    help_reply = command(bot, "help", user="U2")
    assert "retrain [--dry-run]" in help_reply["text"]
    assert help_reply["response_type"] == "ephemeral"
    status = command(bot, "status", user="U2")["text"]
    assert f"`{BASE}`" in status
    assert "waiting for the next run:* 3" in status
    assert messages.STATUS_NO_RUN in status


@pytest.mark.parametrize(
    "text",
    [
        "review",
        "retrain",
        "retrain --dry-run",
        "cancel",
        "models",
        f"promote {BASE}",
        "rollback",
        "export",
    ],
)
def test_non_admins_are_refused_and_nothing_runs(bot: Bot, text: str) -> None:
    seed(bot, 12)
    reply = command(bot, text, user="U2")
    assert reply["text"] == messages.NOT_ADMIN
    assert reply["response_type"] == "ephemeral"
    assert Queue(keys.QUEUE_TRAINING, connection=bot.redis).count == 0
    assert bot.redis.get(keys.RUN_LOCK) is None
    assert runs.recent_runs(bot.redis) == []
    refused = audit.audit_entries(bot.redis)[0]
    assert refused["user"] == "U2" and refused["action"].startswith("refused /finetune")


@pytest.mark.parametrize(
    "bot_settings", [{"slack": {"admins": [], "workspace_admins_are_admins": True}}], indirect=True
)
def test_workspace_admins_are_admins_when_configured(bot: Bot) -> None:
    bot.slack.set_user("UOWNER", is_owner=True)
    bot.slack.set_user("UMEMBER")
    assert command(bot, "models", user="UMEMBER")["text"] == messages.NOT_ADMIN
    assert command(bot, "models", user="UOWNER")["text"].startswith("*Current model:*")


def test_full_loop_from_votes_to_a_promoted_model_the_next_answer_uses(bot: Bot) -> None:
    for i in range(12):
        event = bot.says(f"How do I reset the password of account {i}?", mention=True)
        ts = bot.ask(event)
        bot.interact(payloads.feedback_click("up", user="U1", channel="C1", message_ts=ts))
    wait(lambda: approved.pending_count(bot.redis) == 12, what="12 auto-approved answers")

    reply = command(bot, "retrain")
    assert "started" in reply["text"]
    work(bot)

    run = only_run(bot)
    assert run.status is RunStatus.TRAINING
    job = bot.openai.job(run.job_id)
    request = job["request"]
    assert request["model"] == BASE, "the first run starts from the configured base model"
    assert request["method"]["type"] == "supervised"
    assert "hyperparameters" in request["method"]["supervised"]
    assert "hyperparameters" not in request, "the deprecated top-level argument is not used"
    assert request["suffix"] == "tuneloop"
    assert request["metadata"]["tuneloop_run"] == run.run_id
    assert request["metadata"]["tuneloop_set"] == run.set_id
    assert all(f["purpose"] == "fine-tune" for f in bot.openai.files())
    train_lines = training_lines(bot, job)
    valid_lines = training_lines(bot, job, "validation_file")
    assert len(train_lines) + len(valid_lines) == 12
    assert valid_lines and not {json.dumps(v) for v in valid_lines} & {
        json.dumps(t) for t in train_lines
    }
    first = train_lines[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    assert first[0]["content"] == bot.settings.model.system_prompt
    assert first[2]["content"].startswith("Echo: How do I reset the password")
    assert bot.redis.get(keys.APPROVED_CURSOR) is not None
    assert approved.pending_count(bot.redis) == 0, "consumed once the job exists"

    run = train(bot)
    assert run.status is RunStatus.PROMOTED
    model = bot.openai.job(run.job_id)["fine_tuned_model"]
    assert run.candidate_model == model
    assert bot.services.store.current_model(BASE) == model
    record = model_registry.history(bot.redis)[0]
    assert record["action"] == "promote" and record["model"] == model
    assert record["previous"] == BASE
    assert record["run_id"] == run.run_id and record["set_id"] == run.set_id
    assert record["job_id"] == run.job_id and "candidate" in record["metrics"]

    texts = thread_texts(bot, run)
    assert texts[0].startswith(":hammer_and_wrench: Training run")
    assert any(t.startswith(f"Fine-tuning job `{run.job_id}` created") for t in texts)
    assert any(t.startswith("Step 3/3: train loss") for t in texts), texts
    assert any("Promoted" in t for t in texts)
    png = [f for f in bot.slack.uploaded_files() if f["thread_ts"] == run.thread_ts]
    assert png and png[0]["content"].startswith(b"\x89PNG")

    event = bot.says("And one more question?", mention=True)
    bot.ask(event)
    assert bot.openai.completions()[-1]["model"] == model, "the next answer uses the new model"


def test_second_run_trains_only_the_new_examples_from_the_first_runs_model(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain")
    work(bot)
    first = train(bot)
    first_model = first.candidate_model
    assert first.status is RunStatus.PROMOTED

    seed(bot, 11, start=100)
    command(bot, "retrain")
    work(bot)
    second = only_run(bot)
    assert second.run_id != first.run_id
    job = bot.openai.job(second.job_id)
    assert job["request"]["model"] == first_model
    questions = {
        line["messages"][1]["content"]
        for key in ("training_file", "validation_file")
        for line in training_lines(bot, job, key)
    }
    assert questions == {f"How do I configure service {i}?" for i in range(100, 111)}
    second = train(bot)
    assert second.status is RunStatus.PROMOTED
    assert model_registry.model_info(bot.redis, second.candidate_model)["parent"] == first_model


def test_failed_job_creation_consumes_nothing_and_the_next_run_does(bot: Bot) -> None:
    seed(bot, 12)
    bot.openai.fail_next("/v1/fine_tuning/jobs", status=400, message="quota exceeded")
    command(bot, "retrain")
    work(bot)
    run = only_run(bot)
    assert run.status is RunStatus.FAILED
    assert "quota exceeded" in run.error
    assert bot.redis.get(keys.APPROVED_CURSOR) is None
    assert approved.pending_count(bot.redis) == 12
    assert bot.openai.files() == [], "uploaded files are deleted again"
    assert any("failed" in t for t in thread_texts(bot, run))
    assert bot.redis.get(keys.RUN_LOCK) is None

    command(bot, "retrain")
    work(bot)
    retry = only_run(bot)
    assert retry.status is RunStatus.TRAINING
    assert approved.pending_count(bot.redis) == 0


def test_a_job_that_fails_hands_its_examples_back(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain")
    work(bot)
    run = only_run(bot)
    assert approved.pending_count(bot.redis) == 0
    bot.openai.fail_job(run.job_id)
    work(bot)
    run = runs.load_run(bot.redis, run.run_id)
    assert run.status is RunStatus.FAILED
    assert approved.pending_count(bot.redis) == 12
    assert bot.services.store.current_model(BASE) == BASE


def test_two_retrains_at_once_start_one_run(bot: Bot) -> None:
    seed(bot, 12)
    urls = [bot.command("retrain")[1] for _ in range(2)]
    replies = [wait(lambda u=u: bot.slack.responses(u))[0]["text"] for u in urls]
    assert sum("already going" in r for r in replies) == 1
    busy = next(r for r in replies if "already going" in r)
    run = only_run(bot)
    assert f"`{run.run_id}`" in busy
    work(bot)
    assert len(bot.openai.jobs()) == 1
    assert len(runs.recent_runs(bot.redis)) == 1


def test_too_few_examples_starts_nothing_and_says_how_many_more(bot: Bot) -> None:
    seed(bot, 7)
    command(bot, "retrain")
    work(bot)
    run = only_run(bot)
    assert run.status is RunStatus.TOO_FEW
    assert bot.openai.jobs() == [] and bot.openai.files() == []
    told = thread_texts(bot, run)[-1]
    assert "7 usable new example(s)" in told and "Approve 3 more" in told
    assert approved.pending_count(bot.redis) == 7
    assert bot.redis.get(keys.RUN_LOCK) is None


def test_dry_run_uploads_nothing_and_reports_counts_tokens_and_cost(bot: Bot) -> None:
    seed(bot, 12)
    reply = command(bot, "retrain --dry-run")
    assert "Dry run" in reply["text"]
    work(bot)
    run = only_run(bot)
    assert run.status is RunStatus.DRY_RUN
    assert bot.openai.files() == [] and bot.openai.jobs() == []
    assert approved.pending_count(bot.redis) == 12
    report = bot.slack.wait_for("chat.postEphemeral")[-1].args
    assert report["user"] == ADMIN
    assert "nothing was uploaded" in report["text"]
    assert "11 training examples" in report["text"] and "1 validation" in report["text"]
    assert "*Tokens:*" in report["text"] and "$" in report["text"]


def test_evaluation_gate_refuses_a_worse_model_and_the_admin_can_promote_it(bot: Bot) -> None:
    seed(bot, 12)

    def answer(body: dict[str, Any]) -> str:
        question = body["messages"][-1]["content"]
        return "I have no idea." if body["model"].startswith("ft:") else f"Echo: {question}"

    bot.openai.answer_fn = answer
    command(bot, "retrain")
    work(bot)
    run = train(bot)
    assert run.status is RunStatus.HELD
    assert bot.services.store.current_model(BASE) == BASE
    report = run.report
    assert report is not None and not report.passed
    assert report.candidate.score < report.current.score
    held = bot.slack.messages(run.channel, run.thread_ts)[-1]
    assert "Not promoted" in held["text"]
    button = held["blocks"][-1]["elements"][0]
    assert button["action_id"] == ids.PROMOTE

    click = {
        "type": "block_actions",
        "user": {"id": ADMIN},
        "channel": {"id": run.channel},
        "container": {"type": "message", "channel_id": run.channel},
        "trigger_id": "t1",
        "response_url": bot.slack.new_response_url(),
        "actions": [{"action_id": ids.PROMOTE, "value": button["value"], "type": "button"}],
    }
    stranger = {**click, "user": {"id": "U2"}}
    bot.interact(stranger)
    wait(lambda: any(e["user"] == "U2" for e in bot.slack.ephemerals()), what="a refusal")
    work(bot)
    assert bot.services.store.current_model(BASE) == BASE, "a non-admin's click changes nothing"

    bot.interact(click)
    wait(lambda: Queue(keys.QUEUE_TRAINING, connection=bot.redis).count, what="a promote job")
    work(bot)
    assert bot.services.store.current_model(BASE) == run.candidate_model
    assert runs.load_run(bot.redis, run.run_id).status is RunStatus.PROMOTED


def test_promote_and_rollback_by_command(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain")
    work(bot)
    run = train(bot)
    model = run.candidate_model
    assert bot.services.store.current_model(BASE) == model

    reply = command(bot, "rollback")["text"]
    assert f"answers with `{BASE}` again" in reply
    assert bot.services.store.current_model(BASE) == BASE, "at once, no job needed"
    assert command(bot, "rollback")["text"].startswith("Nothing to roll back to")

    assert "Promoting" in command(bot, f"promote {model}")["text"]
    work(bot)
    assert bot.services.store.current_model(BASE) == model
    assert "neither the base model" in command(bot, "promote ft:made-up:model")["text"]
    actions = [h["action"] for h in model_registry.history(bot.redis)]
    assert actions == ["promote", "rollback", "promote"]
    models = command(bot, "models")["text"]
    assert f"`{model}`" in models and "rollback" in models


def test_cancel_stops_the_job_and_hands_the_examples_back(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain")
    work(bot)
    run = only_run(bot)
    status = command(bot, "status")["text"]
    assert f"`{run.run_id}`" in status and f"`{run.job_id}`" in status
    assert "Cancelling" in command(bot, "cancel")["text"]
    work(bot)
    run = runs.load_run(bot.redis, run.run_id)
    assert run.status is RunStatus.CANCELLED
    assert bot.openai.job(run.job_id)["status"] == "cancelled"
    assert approved.pending_count(bot.redis) == 12
    assert command(bot, "cancel")["text"] == messages.CANCEL_NONE


def test_cancel_before_the_build_starts_builds_nothing(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain")
    run = only_run(bot)
    assert "Cancelling" in command(bot, "cancel")["text"]
    work(bot)
    run = runs.load_run(bot.redis, run.run_id)
    assert run.status is RunStatus.CANCELLED and run.set_id == ""
    assert bot.openai.jobs() == [] and bot.redis.get(keys.RUN_LOCK) is None
    assert any("was cancelled by <@UADMIN>" in t for t in thread_texts(bot, run))


@pytest.mark.parametrize(
    "bot_settings", [{"training": {"sets_dir": "/dev/null/sets"}}], indirect=True
)
def test_a_crash_while_building_fails_the_run_and_frees_the_lock(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain")
    work(bot)
    run = only_run(bot)
    assert run.status is RunStatus.FAILED and "Not a directory" in run.error
    assert bot.redis.get(keys.RUN_LOCK) is None
    assert approved.pending_count(bot.redis) == 12
    assert any("failed" in t for t in thread_texts(bot, run))


def test_following_the_job_survives_a_provider_error(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain")
    work(bot)
    run = only_run(bot)
    bot.openai.fail_next(f"/v1/fine_tuning/jobs/{run.job_id}", status=400, message="hiccup")
    work(bot)  # this poll fails (and is logged), the next one is already scheduled
    assert runs.load_run(bot.redis, run.run_id).status is RunStatus.TRAINING
    assert train(bot).status is RunStatus.PROMOTED


def test_progress_is_posted_to_the_thread_as_the_job_runs(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain")
    work(bot)
    run = train(bot, steps=2)  # files validated, job running
    run = train(bot, steps=2)  # steps 1 and 2
    assert run.status is RunStatus.TRAINING
    texts = thread_texts(bot, run)
    assert any(t.startswith("Step 1/3") for t in texts)
    assert any(t.startswith("Step 2/3") for t in texts)
    status = command(bot, "status")["text"]
    assert "Step 2/3" in status
    assert len(runs.run_metrics(bot.redis, run.run_id)) == 2


def test_export_typed_in_a_channel_goes_only_to_the_admins_dm(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain --dry-run")
    work(bot)
    run = only_run(bot)
    reply = command(bot, "export", channel="C1")["text"]
    assert run.set_id in reply and "direct message" in reply
    work(bot)
    dm = "D" + ADMIN[1:]
    assert {f["channel_id"] for f in bot.slack.uploaded_files()} == {dm}
    assert all(f["channels"] == [dm] for f in bot.slack.uploaded_files())
    assert not [m for m in bot.slack.messages("C1") if m.get("files")], "nothing in the channel"
    names = sorted(f["filename"] for f in bot.slack.uploaded_files())
    assert names == [f"{run.set_id}-{n}" for n in ("manifest.json", "train.jsonl", "valid.jsonl")]
    train_file = next(
        f for f in bot.slack.uploaded_files() if f["filename"].endswith("train.jsonl")
    )
    assert len(train_file["content"].splitlines()) == 11


def exports_in_redis(bot: Bot) -> list[bytes]:
    return list(bot.redis.scan_iter(match=keys.export("*", "*")))


def test_an_export_is_run_by_a_worker_entry_point_and_leaves_no_copy_in_redis(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain --dry-run")
    work(bot)
    set_id = only_run(bot).set_id
    command(bot, "export")
    queue = Queue(keys.QUEUE_TRAINING, connection=bot.redis)
    (queued,) = queue.get_jobs()
    assert queued.func_name == run_control.EXPORT_JOB == "workers.jobs.export_job"
    SimpleWorker([queue], connection=bot.redis).work(burst=True)
    assert bot.slack.uploaded_files() == [], "the worker talks to no Slack"
    assert len(exports_in_redis(bot)) == 1
    ttl = bot.redis.ttl(exports_in_redis(bot)[0])
    assert 0 < ttl <= exports.TTL_S, "a set's copy in Redis never outlives its TTL"

    reporting.consume_run_events(bot.services)
    assert len(bot.slack.uploaded_files()) == 3
    manifest = next(
        f for f in bot.slack.uploaded_files() if f["filename"] == f"{set_id}-manifest.json"
    )
    assert json.loads(manifest["content"])["set_id"] == set_id
    assert exports_in_redis(bot) == [], "deleted once uploaded"
    assert pending_reports(bot) == 0


def test_an_export_slack_refused_is_uploaded_once_slack_is_back(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain --dry-run")
    work(bot)
    command(bot, "export")
    bot.slack.fail_next("files.completeUploadExternal", status=200, error="internal_error")
    work(bot)
    assert bot.slack.uploaded_files() == []
    assert pending_reports(bot) == 1, "kept to be tried again"
    assert len(exports_in_redis(bot)) == 1, "the files wait for the retry"

    assert reporting.consume_run_events(bot.services, retry_idle_s=0) == 1
    dm = "D" + ADMIN[1:]
    assert len(bot.slack.uploaded_files()) == 3
    assert {f["channel_id"] for f in bot.slack.uploaded_files()} == {dm}
    assert exports_in_redis(bot) == [] and pending_reports(bot) == 0


def test_a_set_too_large_to_export_is_refused_in_the_dm_and_nothing_is_stored(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(bot, 12)
    command(bot, "retrain --dry-run")
    work(bot)
    set_id = only_run(bot).set_id
    monkeypatch.setattr(exports, "MAX_BYTES", 100)
    command(bot, "export")
    work(bot)
    assert bot.slack.uploaded_files() == []
    assert exports_in_redis(bot) == []
    dm = "D" + ADMIN[1:]
    (refusal,) = [e for e in bot.slack.ephemerals() if "nothing was sent" in e["text"]]
    assert refusal["channel"] == dm and refusal["user"] == ADMIN
    assert set_id in refusal["text"]


def test_an_export_whose_files_expired_tells_the_admin_to_ask_again(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain --dry-run")
    work(bot)
    set_id = only_run(bot).set_id
    command(bot, "export")
    queue = Queue(keys.QUEUE_TRAINING, connection=bot.redis)
    SimpleWorker([queue], connection=bot.redis).work(burst=True)
    (stored,) = exports_in_redis(bot)
    bot.redis.delete(stored)  # what the TTL does when no web process posted in time
    reporting.consume_run_events(bot.services)
    assert bot.slack.uploaded_files() == []
    (told,) = [e for e in bot.slack.ephemerals() if f"/finetune export {set_id}" in e["text"]]
    assert told["channel"] == "D" + ADMIN[1:]


def test_forgetting_a_user_drops_the_exports_waiting_for_upload(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain --dry-run")
    work(bot)
    command(bot, "export")
    queue = Queue(keys.QUEUE_TRAINING, connection=bot.redis)
    SimpleWorker([queue], connection=bot.redis).work(burst=True)
    assert len(exports_in_redis(bot)) == 1
    command(bot, "forget-me", user="U2")
    assert exports_in_redis(bot) == []
    reporting.consume_run_events(bot.services)
    assert bot.slack.uploaded_files() == [], "a set that may hold their data is not sent"


def test_a_run_whose_worker_died_is_cleaned_up_by_the_next_retrain(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain")
    dead = only_run(bot)
    # The worker died while building: its job is gone, the run still holds the lock.
    runs.update_run(bot.redis, dead.run_id, status=RunStatus.BUILDING)
    Job.fetch(f"build-{dead.run_id}", connection=bot.redis).delete()

    reply = command(bot, "retrain")["text"]
    assert "started" in reply
    assert runs.load_run(bot.redis, dead.run_id).status is RunStatus.FAILED
    work(bot)
    assert len(bot.openai.jobs()) == 1
    assert approved.pending_count(bot.redis) == 0


def test_a_run_that_died_after_creating_its_job_is_adopted_not_repeated(
    bot: Bot, tmp_path: Path
) -> None:
    seed(bot, 12)
    command(bot, "retrain")
    dead = only_run(bot)
    # The worker built the set and created the job, then died before recording it.
    Job.fetch(f"build-{dead.run_id}", connection=bot.redis).delete()
    orphan_set = tmp_path / "orphan.jsonl"
    line = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    orphan_set.write_text((json.dumps(line) + "\n") * 10)
    ctx = run_control.LoopContext(bot.settings, bot.redis, bot.services.llm)
    orphan = ctx.trainer.start(
        TrainingFiles("set-x", TrainingMethod.SUPERVISED, orphan_set, None, 10, 0),
        base_model=BASE,
        hyperparameters={},
        suffix="t",
        metadata={base.RUN_METADATA_KEY: dead.run_id},
    )
    newest = bot.redis.xrevrange(keys.APPROVED_LOG, count=1)[0][0].decode()
    runs.update_run(bot.redis, dead.run_id, status=RunStatus.STARTING, cursor_to=newest)

    reply = command(bot, "retrain")["text"]
    assert "already going" in reply and dead.run_id in reply
    adopted = runs.load_run(bot.redis, dead.run_id)
    assert adopted.status is RunStatus.TRAINING and adopted.job_id == orphan
    assert approved.pending_count(bot.redis) == 0
    work(bot)
    assert len(bot.openai.jobs()) == 1


def test_a_replayed_export_command_runs_once(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain --dry-run")
    work(bot)
    response_url = bot.slack.new_response_url()
    fields = payloads.command_form("export", user=ADMIN, response_url=response_url)
    body = payloads.form_body(fields)
    for _ in range(2):  # the same signed request, sent again within Slack's 5 minutes
        sent = payloads.post(
            bot.url, body, "application/x-www-form-urlencoded", secret=SIGNING_SECRET
        )
        assert sent.status == 200
        bot.listeners.wait_idle()
    replies = wait(lambda: bot.slack.responses(response_url)[1:], what="the replay's reply")
    assert "already run" in replies[0]["text"]
    work(bot)
    assert len(bot.slack.uploaded_files()) == 3, "one set's three files, uploaded once"
    fresh = command(bot, "export")["text"]
    assert "direct message" in fresh, "a new invocation (new trigger id) runs"


def pending_reports(bot: Bot) -> int:
    return bot.redis.xpending(keys.RUN_EVENTS, keys.RUN_EVENTS_GROUP)["pending"]


def test_a_broken_loss_curve_upload_never_holds_back_the_verdict_and_its_button(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(bot, 12)
    bot.openai.answer_fn = lambda body: (
        "I have no idea."
        if body["model"].startswith("ft:")
        else "Echo: " + body["messages"][-1]["content"]
    )

    def broken(points: list[dict[str, Any]], title: str) -> bytes:
        raise RuntimeError("the plotting backend is broken")

    monkeypatch.setattr(reporting, "loss_curve_png", broken)
    command(bot, "retrain")
    work(bot)
    run = train(bot)
    assert run.status is RunStatus.HELD
    held = bot.slack.messages(run.channel, run.thread_ts)[-1]
    assert "Not promoted" in held["text"]
    assert held["blocks"][-1]["elements"][0]["action_id"] == ids.PROMOTE
    assert bot.slack.uploaded_files() == []
    assert pending_reports(bot) == 1, "the loss curve is kept to be tried again"

    monkeypatch.undo()  # the plotting works again
    assert reporting.consume_run_events(bot.services, retry_idle_s=0) == 1
    (upload,) = bot.slack.uploaded_files()
    assert upload["thread_ts"] == run.thread_ts and upload["content"].startswith(b"\x89PNG")
    assert pending_reports(bot) == 0


def test_a_verdict_slack_refused_is_posted_once_slack_is_back(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain")
    work(bot)
    run = only_run(bot)
    while bot.openai.advance_job(run.job_id)["status"] != "succeeded":
        work(bot)
    # Slack is down while the run is evaluated: the "trained" note and the verdict fail.
    bot.slack.fail_next("chat.postMessage", status=503, error="service_unavailable", times=2)
    work(bot)
    run = runs.load_run(bot.redis, run.run_id)
    assert run.status is RunStatus.PROMOTED
    assert not any("Promoted" in text for text in thread_texts(bot, run))
    assert pending_reports(bot) == 2

    assert reporting.consume_run_events(bot.services) == 0, "not before they are due again"
    assert reporting.consume_run_events(bot.services, retry_idle_s=0) == 2
    texts = thread_texts(bot, run)
    assert texts[-2].startswith("Training finished") and "Promoted" in texts[-1]
    assert pending_reports(bot) == 0
    assert reporting.consume_run_events(bot.services, retry_idle_s=0) == 0, "posted once"


@pytest.mark.parametrize("bot_settings", [{"slack": {"recover_after_s": 3}}], indirect=True)
def test_the_web_process_posts_what_the_workers_recorded_by_itself(bot: Bot) -> None:
    seed(bot, 12)
    command(bot, "retrain")
    queue = Queue(keys.QUEUE_TRAINING, connection=bot.redis)
    SimpleWorker([queue], connection=bot.redis).work(burst=True)  # the build starts the job
    run = only_run(bot)
    assert run.status is RunStatus.TRAINING
    # Nobody calls the consumer here: the web process's periodic chore (every second
    # with this setting) posts the "started" report into the run's thread.
    wait(
        lambda: any(run.job_id in text for text in thread_texts(bot, run)),
        timeout=15,
        what="the web process to post the job's start",
    )
    wait(lambda: pending_reports(bot) == 0, what="the entry to be acknowledged")


@pytest.mark.parametrize(
    "bot_settings", [{"model": {"request_timeout_s": 0.5, "max_retries": 0}}], indirect=True
)
def test_a_job_created_without_an_answer_is_adopted_not_failed(bot: Bot) -> None:
    seed(bot, 12)
    # OpenAI creates the job, but only after the client stopped waiting for the answer.
    bot.openai.fail_next("/v1/fine_tuning/jobs", hang_s=1.5)
    command(bot, "retrain")
    work(bot)  # the build: no answer to creating the job
    run = only_run(bot)
    assert run.status is RunStatus.STARTING, "not failed: the job may exist and train"
    assert approved.pending_count(bot.redis) == 12, "nothing consumed yet"
    wait(lambda: bot.openai.jobs(), what="the job OpenAI created after all")
    assert len(bot.openai.files()) == 2, "its files were kept"

    ctx = run_control.LoopContext(bot.settings, bot.redis, bot.services.llm)
    assert run_control.supervise(ctx, only_run(bot))  # the web process's periodic check
    adopted = only_run(bot)
    assert adopted.status is RunStatus.TRAINING
    assert adopted.job_id == bot.openai.jobs()[0]["id"]
    assert approved.pending_count(bot.redis) == 0
    assert train(bot).status is RunStatus.PROMOTED
    assert len(bot.openai.jobs()) == 1


@pytest.mark.parametrize(
    "bot_settings", [{"model": {"request_timeout_s": 0.5, "max_retries": 0}}], indirect=True
)
def test_a_job_creation_without_an_answer_and_without_a_job_fails_at_the_next_check(
    bot: Bot,
) -> None:
    seed(bot, 12)
    # No answer in time, and OpenAI refused after all: there is no job.
    bot.openai.fail_next("/v1/fine_tuning/jobs", status=500, hang_s=1.0)
    command(bot, "retrain")
    work(bot)
    assert only_run(bot).status is RunStatus.STARTING
    wait(lambda: bot.openai.requests("/v1/fine_tuning/jobs"), what="the refused creation")
    ctx = run_control.LoopContext(bot.settings, bot.redis, bot.services.llm)
    assert not run_control.supervise(ctx, only_run(bot))
    failed = only_run(bot)
    assert failed.status is RunStatus.FAILED and "no example was consumed" in failed.error
    assert approved.pending_count(bot.redis) == 12 and bot.openai.jobs() == []
    assert "started" in command(bot, "retrain")["text"], "the lock is free again"
