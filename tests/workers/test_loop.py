"""Training runs at the domain level: locking, hyper-parameters, promotion history."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from openai import OpenAI
from redis import Redis
from rq import Queue
from rq.job import Job

from bot.answering import JOB_FUNCTION as ANSWER_JOB
from core import audit, keys, model_registry, run_control, runs
from core.errors import TrainingError
from core.run_control import LoopContext
from core.runs import RunStatus
from core.settings import (
    ROOT,
    LocalTrainerSettings,
    Settings,
    TrainerBackend,
    TrainingMethod,
    load_behaviour,
)
from tests.emulators.openai import OpenAIEmulator
from workers import build, follow, gate, jobs
from workers.training.base import RUN_METADATA_KEY, TrainingFiles

BASE = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = load_behaviour()
    training = base.training.model_copy(update={"sets_dir": str(tmp_path / "sets")})
    return base.model_copy(update={"training": training})


@pytest.fixture
def ctx(settings: Settings, redis_conn: Redis, openai_api: OpenAIEmulator) -> LoopContext:
    client = OpenAI(api_key="sk-test", base_url=openai_api.url, max_retries=0)
    return LoopContext(settings, redis_conn, client)


def with_training(ctx: LoopContext, **values: object) -> LoopContext:
    training = ctx.settings.training.model_copy(update=values)
    openai = values.pop("openai", None)
    if openai is not None:
        training = training.model_copy(update={"openai": openai})
    return LoopContext(ctx.settings.model_copy(update={"training": training}), ctx.redis, ctx.llm)


def record_model(redis: Redis, model: str, trained: int, lr: float | None) -> None:
    info = {
        "model": model,
        "run_id": "run-x",
        "set_id": "set-0001",
        "job_id": "ftjob-x",
        "trained_examples": trained,
        "hyperparameters": {"learning_rate_multiplier": lr} if lr else {},
        "created_at": 1.0,
    }
    redis.hset(keys.MODELS, model, json.dumps(info))


def test_concurrent_requests_start_exactly_one_run(ctx: LoopContext) -> None:
    results: list[run_control.RunRequest] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        barrier.wait()
        results.append(run_control.request_run(ctx, admin="UA", channel="C1"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    started = [r.run for r in results if r.run is not None]
    assert len(started) == 1
    assert all(
        r.busy is not None and r.busy.run_id == started[0].run_id for r in results if r.run is None
    )
    assert ctx.redis.get(keys.RUN_LOCK).decode() == started[0].run_id
    assert Queue(keys.QUEUE_TRAINING, connection=ctx.redis).count == 1
    assert len(runs.recent_runs(ctx.redis)) == 1

    dry = run_control.request_run(ctx, admin="UA", channel="C1", dry_run=True)
    assert dry.run is not None, "a dry run takes no lock"


def test_the_learning_rate_is_lowered_for_a_small_increment(ctx: LoopContext) -> None:
    current = "ft:gpt-4o-mini-2024-07-18:org:tuneloop:one"
    record_model(ctx.redis, current, trained=1000, lr=1.8)

    hyper, note = build.hyperparameters(ctx, 50, current)
    assert hyper == {"learning_rate_multiplier": 0.6}
    assert "50 new examples next to 1000" in note

    big, note = build.hyperparameters(ctx, 500, current)
    assert big == {} and note == ""

    configured = with_training(
        ctx,
        openai=ctx.settings.training.openai.model_copy(
            update={"learning_rate_multiplier": 2.0, "n_epochs": 2}
        ),
        lr_reduction_factor=4.0,
    )
    hyper, _ = build.hyperparameters(configured, 10, current)
    assert hyper == {"learning_rate_multiplier": 0.5, "n_epochs": 2}

    first, note = build.hyperparameters(ctx, 10, BASE)
    assert first == {} and note == "", "nothing was trained before the base model"

    local = with_training(ctx, backend=TrainerBackend.LOCAL)
    record_model(ctx.redis, "tuneloop-1", trained=100, lr=None)
    hyper, _ = build.hyperparameters(local, 5, "tuneloop-1")
    assert hyper == {"learning_rate_multiplier": round(1 / 3, 6)}, "of the local learning rate"


def test_promotion_history_and_rollback_step_back_one_model_at_a_time(
    ctx: LoopContext, openai_api: OpenAIEmulator
) -> None:
    redis, settings = ctx.redis, ctx.settings
    one, two = "ft:gpt-4o-mini-2024-07-18:org:t:one", "ft:gpt-4o-mini-2024-07-18:org:t:two"
    openai_api.add_model(one)
    record_model(redis, one, 20, None)
    record_model(redis, two, 40, None)
    assert model_registry.known_model(redis, settings, one) and model_registry.known_model(
        redis, settings, BASE
    )
    assert not model_registry.known_model(redis, settings, "ft:unknown")

    assert model_registry.promote(redis, settings, one, by="UA") == BASE
    assert model_registry.promote(redis, settings, two, by="UA") == one
    assert ctx.current_model() == two
    assert model_registry.history(redis)[0]["set_id"] == "set-0001"
    assert model_registry.history(redis)[0]["trained_examples"] == 40

    assert model_registry.rollback(ctx, by="UB") == (two, one)
    assert ctx.current_model() == one
    assert model_registry.rollback(ctx, by="UB") == (one, BASE)
    assert redis.get(keys.CURRENT_MODEL) is None, "the base model is the absent pointer"
    with pytest.raises(TrainingError, match="nothing to roll back to"):
        model_registry.rollback(ctx, by="UB")
    assert [h["action"] for h in model_registry.history(redis)] == [
        "rollback",
        "rollback",
        "promote",
        "promote",
    ]


def test_a_superseded_poll_chain_stops(ctx: LoopContext) -> None:
    run = run_control.request_run(ctx, admin="UA", channel="C1").run
    assert run is not None
    runs.update_run(
        ctx.redis, run.run_id, status=RunStatus.TRAINING, job_id="ftjob-none", poll_seq=5
    )
    assert follow.poll(ctx, run.run_id, seq=4) is None, "an older chain does nothing"


def test_a_training_run_without_a_follower_gets_one_and_stays_the_running_run(
    ctx: LoopContext,
) -> None:
    run = run_control.request_run(ctx, admin="UA", channel="C1").run
    assert run is not None
    runs.update_run(ctx.redis, run.run_id, status=RunStatus.TRAINING, job_id="ftjob-x", poll_seq=3)
    queue = Queue(keys.QUEUE_TRAINING, connection=ctx.redis)
    before = queue.count
    busy = run_control.request_run(ctx, admin="UB", channel="C1")
    assert busy.run is None and busy.busy is not None and busy.busy.run_id == run.run_id
    assert queue.count == before + 1
    assert f"poll-{run.run_id}-4" in queue.job_ids


def test_the_admin_log_keeps_who_did_what_when(ctx: LoopContext) -> None:
    audit.audit(ctx.redis, "UA", "/finetune retrain", "--dry-run")
    audit.audit(ctx.redis, "UB", "review approved", "C1-1")
    newest, older = audit.audit_entries(ctx.redis, 2)
    assert (newest["user"], newest["action"], newest["detail"]) == ("UB", "review approved", "C1-1")
    assert older["user"] == "UA" and float(older["at"]) > 0


def test_rollback_to_a_model_the_server_no_longer_serves_leaves_the_pointer(
    ctx: LoopContext, openai_api: OpenAIEmulator
) -> None:
    gone, current = "ft:gpt-4o-mini-2024-07-18:org:t:gone", "ft:gpt-4o-mini-2024-07-18:org:t:now"
    record_model(ctx.redis, gone, 20, None)
    record_model(ctx.redis, current, 40, None)
    model_registry.promote(ctx.redis, ctx.settings, gone, by="UA")
    model_registry.promote(ctx.redis, ctx.settings, current, by="UA")
    with pytest.raises(TrainingError, match="does not exist"):
        model_registry.rollback(ctx, by="UB")
    assert ctx.current_model() == current


def test_a_local_run_that_died_after_starting_its_gpu_job_adopts_it(
    ctx: LoopContext, tmp_path: Path
) -> None:
    local = with_training(
        ctx,
        backend=TrainerBackend.LOCAL,
        local=LocalTrainerSettings(base_model="/models/base", adapters_dir=str(tmp_path / "a")),
    )
    run = run_control.request_run(local, admin="UA", channel="C1").run
    assert run is not None
    # The build worker started the GPU job, then died before recording it.
    Job.fetch(f"build-{run.run_id}", connection=ctx.redis).delete()
    train = tmp_path / "train.jsonl"
    line = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    train.write_text((json.dumps(line) + "\n") * 10)
    gpu_job = local.trainer.start(
        TrainingFiles("set-x", TrainingMethod.SUPERVISED, train, None, 10, 0),
        base_model=local.base_model,
        hyperparameters={},
        suffix="t",
        metadata={RUN_METADATA_KEY: run.run_id},
    )
    runs.update_run(ctx.redis, run.run_id, status=RunStatus.STARTING)

    assert run_control.supervise(local, runs.load_run(ctx.redis, run.run_id))
    adopted = runs.load_run(ctx.redis, run.run_id)
    assert adopted.status is RunStatus.TRAINING and adopted.job_id == gpu_job
    assert Queue(keys.QUEUE_GPU, connection=ctx.redis).job_ids == [gpu_job], "still to train"


def test_a_run_is_not_failed_while_its_job_cannot_be_looked_for(
    ctx: LoopContext, openai_api: OpenAIEmulator
) -> None:
    run = run_control.request_run(ctx, admin="UA", channel="C1").run
    assert run is not None
    Job.fetch(f"build-{run.run_id}", connection=ctx.redis).delete()
    runs.update_run(ctx.redis, run.run_id, status=RunStatus.STARTING)
    openai_api.fail_next("/v1/fine_tuning/jobs", status=500)

    assert run_control.supervise(ctx, runs.load_run(ctx.redis, run.run_id)), "still going"
    assert runs.load_run(ctx.redis, run.run_id).status is RunStatus.STARTING
    assert runs.active_run(ctx.redis).run_id == run.run_id

    assert not run_control.supervise(ctx, runs.load_run(ctx.redis, run.run_id)), "no job: dead"
    assert runs.load_run(ctx.redis, run.run_id).status is RunStatus.FAILED


def two_replicas(ctx: LoopContext, tmp_path: Path, first: str, second: str) -> LoopContext:
    """The local backend served by two vLLM replicas (the emulators at ``first`` and
    ``second``)."""
    local = with_training(
        ctx,
        backend=TrainerBackend.LOCAL,
        local=LocalTrainerSettings(
            base_model="/models/base",
            adapters_dir=str(tmp_path / "adapters"),
            serving_urls=(first, second),
        ),
    )
    secrets = local.settings.secrets.model_copy(update={"openai_api_key": "sk-test"})
    return LoopContext(local.settings.model_copy(update={"secrets": secrets}), ctx.redis)


def test_promotion_and_rollback_load_the_adapter_into_every_vllm_replica(
    ctx: LoopContext, tmp_path: Path, openai_api: OpenAIEmulator
) -> None:
    with OpenAIEmulator(api_key="sk-test") as second:
        local = two_replicas(ctx, tmp_path, openai_api.url, second.url)
        for model in ("tuneloop-1", "tuneloop-2"):
            (tmp_path / "adapters" / model).mkdir(parents=True)
            (tmp_path / "adapters" / model / "adapter_config.json").write_text("{}")
            record_model(ctx.redis, model, 20, None)
            local.trainer.activate(model)
            model_registry.promote(ctx.redis, local.settings, model, by="UA")
        for replica in (openai_api, second):
            replica.reset()  # both replicas restarted: nothing loaded

        second.fail_next("/v1/load_lora_adapter", status=500, times=2)
        with pytest.raises(TrainingError, match="1 of 2 replicas"):
            model_registry.rollback(local, by="UB")
        assert local.current_model() == "tuneloop-2", "one replica failed: the pointer stays"

        assert model_registry.rollback(local, by="UB") == ("tuneloop-2", "tuneloop-1")
        served = str(tmp_path / "adapters" / "tuneloop-1")
        assert openai_api.loaded_adapters() == second.loaded_adapters() == {"tuneloop-1": served}


def test_every_job_the_loop_enqueues_is_an_entry_point_in_workers_jobs() -> None:
    names = [
        run_control.BUILD_JOB,
        run_control.POLL_JOB,
        run_control.EVALUATE_JOB,
        run_control.CANCEL_JOB,
        run_control.PROMOTE_JOB,
        run_control.DECIDE_CANARY_JOB,
        run_control.EXPORT_JOB,
    ]
    assert run_control.EXPORT_JOB == "workers.jobs.export_job"
    for name in names:
        module, _, func = name.rpartition(".")
        assert module == "workers.jobs"
        assert callable(getattr(jobs, func)), name


_DOTTED = re.compile(r"^(?:bot|core|workers)(?:\.[A-Za-z_]\w*)+$")


def _function(name: str) -> Callable[..., object] | None:
    """The function a dotted job name names, None when it names none."""
    module, _, attr = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    return found if inspect.isfunction(found) else None


def _job_names() -> tuple[set[str], set[str]]:
    """Every job name in the code: module-level constants naming a function by its dotted
    path, and what every enqueue call is given (a literal, a constant, a function)."""
    constants: set[str] = set()
    enqueued: set[str] = set()
    for path in sorted(
        p for part in ("bot", "core", "workers") for p in (ROOT / part).rglob("*.py")
    ):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(
                node.value, ast.Constant
            ):
                value = node.value.value
                if isinstance(value, str) and _DOTTED.match(value) and _function(value):
                    constants.add(value)
        calls = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("enqueue", "enqueue_in", "enqueue_at", "enqueue_call")
        ]
        if not calls:
            continue
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for call in calls:
            for arg in [
                *call.args[:2],
                *(k.value for k in call.keywords if k.arg in ("f", "func")),
            ]:
                if not isinstance(arg, ast.Name | ast.Attribute | ast.Constant):
                    continue  # *args: forwarded from a caller, scanned itself
                try:
                    value = eval(ast.unparse(arg), vars(module))  # noqa: S307 - our own code
                except NameError:
                    continue  # a parameter: its callers are scanned themselves
                if inspect.isfunction(value):
                    enqueued.add(f"{value.__module__}.{value.__qualname__}")
                elif isinstance(value, str) and _DOTTED.match(value):
                    enqueued.add(value)
    return constants, enqueued


def test_no_job_runs_bot_code_by_name_but_the_answer_job() -> None:
    constants, enqueued = _job_names()
    assert {run_control.BUILD_JOB, run_control.EXPORT_JOB, ANSWER_JOB} <= enqueued, (
        "the scan finds the enqueue calls"
    )
    for name in constants | enqueued:
        assert _function(name) is not None, f"{name} names no function"
    bot_jobs = {name for name in constants | enqueued if name.startswith("bot.")}
    assert bot_jobs == {ANSWER_JOB}
    assert _function("workers.jobs.export_job") is jobs.export_job
    assert "bot.reporting.export_set" not in constants | enqueued


def test_a_promotion_a_replica_refuses_leaves_the_pointer_and_tells_the_admin(
    ctx: LoopContext, tmp_path: Path, openai_api: OpenAIEmulator
) -> None:
    with OpenAIEmulator(api_key="sk-test") as second:
        local = two_replicas(ctx, tmp_path, openai_api.url, second.url)
        (tmp_path / "adapters" / "tuneloop-1").mkdir(parents=True)
        (tmp_path / "adapters" / "tuneloop-1" / "adapter_config.json").write_text("{}")
        record_model(ctx.redis, "tuneloop-1", 20, None)
        second.lora_runtime_updating = False  # started without runtime adapter loading

        with pytest.raises(TrainingError, match="1 of 2 replicas"):
            gate.promote_manually(local, "tuneloop-1", by="UA", channel="C1")
        assert local.current_model() == BASE
        assert model_registry.history(ctx.redis) == []
        ((_, reply),) = ctx.redis.xrange(keys.RUN_EVENTS)
        assert reply[b"kind"] == b"reply" and reply[b"reply"] == b"promote_failed"
        assert b"VLLM_ALLOW_RUNTIME_LORA_UPDATING" in reply[b"values"]
