"""The ``local`` trainer backend: RQ jobs on the gpu queue, state in a real Redis, vLLM
adapter loading against the OpenAI/vLLM emulator."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import openai
import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import FailedJobRegistry

from core import keys
from core.errors import TrainingError
from core.settings import (
    LocalTrainerSettings,
    ModelSettings,
    Secrets,
    Settings,
    TrainingMethod,
    TrainingSettings,
)
from tests.emulators.openai import OpenAIEmulator
from tests.workers.training.conftest import FACTS, chat_example, write_jsonl
from workers.training.base import RUN_METADATA_KEY, JobStatus, Lineage, TrainingFiles
from workers.training.local import JOB_FUNC, LocalTrainer

# transformers 5 warns about its own renamed attribute when PEFT/TRL read it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

SERVED_BASE = "tiny-llama-served"


def make_settings(tmp_path: Path, base_model: str, **local: object) -> Settings:
    values: dict = {
        "base_model": base_model,
        "adapters_dir": str(tmp_path / "adapters"),
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "epochs": 3,
        "learning_rate": 3e-2,
        "batch_size": 4,
        "max_seq_length": 64,
        "bf16": False,
        "packing": False,
    }
    values.update(local)
    return Settings(
        model=ModelSettings(base_model=SERVED_BASE, system_prompt="Be brief."),
        training=TrainingSettings(backend="local", local=LocalTrainerSettings(**values)),
        secrets=Secrets(
            slack_bot_token="xoxb-test", slack_signing_secret="s", openai_api_key="sk-test"
        ),
        config_file="test",
    )


def make_files(tmp_path: Path, n: int = 4) -> TrainingFiles:
    rows = [chat_example(q, a) for q, a in FACTS[:n]]
    train = write_jsonl(tmp_path / f"train-{n}.jsonl", rows)
    return TrainingFiles(
        set_id=f"set-{n}",
        method=TrainingMethod.SUPERVISED,
        train_path=train,
        valid_path=None,
        n_train=n,
        n_valid=0,
    )


def start(trainer: LocalTrainer, files: TrainingFiles, base_model: str, **hyper: object) -> str:
    return trainer.start(
        files,
        base_model=base_model,
        hyperparameters=hyper,
        suffix="tuneloop",
        metadata={"by": "test"},
    )


def work(redis: Redis) -> None:
    """Run every job on the gpu queue in this process, as the GPU worker would."""
    SimpleWorker([Queue(keys.QUEUE_GPU, connection=redis)], connection=redis).work(burst=True)


@pytest.fixture
def gpu_stack() -> None:
    for name in ("torch", "transformers", "peft", "trl", "datasets"):
        pytest.importorskip(name)


# --- enqueueing and bookkeeping (no GPU stack needed) -------------------------------------
def test_start_enqueues_on_gpu_queue_by_dotted_path(redis_conn: Redis, tmp_path: Path) -> None:
    trainer = LocalTrainer(make_settings(tmp_path, "/models/base"), redis_conn, serving_client=None)
    files = make_files(tmp_path)
    job_id = start(trainer, files, SERVED_BASE)

    queue = Queue(keys.QUEUE_GPU, connection=redis_conn)
    assert queue.job_ids == [job_id]
    job = Job.fetch(job_id, connection=redis_conn)
    assert job.func_name == JOB_FUNC == "workers.training.local.run_training_job"
    assert job.args == (job_id,)
    assert job.kwargs == {}

    state = trainer.poll(job_id)
    assert state.status is JobStatus.PENDING
    assert state.details["model_id"] == "tuneloop-1"
    assert state.details["parent"] is None
    assert [e.message for e in state.events] == [
        "Queued: 4 training examples (supervised) from base model /models/base, "
        "will become tuneloop-1"
    ]
    record = redis_conn.hgetall(keys.local_job(job_id))
    assert record[b"set_id"] == b"set-4"
    assert json.loads(record[b"metadata"]) == {"by": "test"}


def test_hyperparameters_map_onto_local_settings(redis_conn: Redis, tmp_path: Path) -> None:
    trainer = LocalTrainer(make_settings(tmp_path, "/models/base"), redis_conn, serving_client=None)
    job_id = start(
        trainer,
        make_files(tmp_path),
        "/models/base",
        n_epochs=5,
        batch_size="auto",
        learning_rate_multiplier=0.5,
        lora_r=4,
        seed=7,
    )
    record = redis_conn.hgetall(keys.local_job(job_id))
    settings = LocalTrainerSettings.model_validate_json(record[b"settings"])
    assert settings.epochs == 5
    assert settings.batch_size == 4  # "auto": as configured
    assert settings.learning_rate == pytest.approx(1.5e-2)
    assert settings.lora_r == 4
    assert record[b"seed"] == b"7"


@pytest.mark.parametrize(
    ("hyper", "message"),
    [({"warmup": 3}, "does not know the hyperparameter 'warmup'"), ({"epochs": 0}, "epochs")],
)
def test_bad_hyperparameters_are_refused(
    redis_conn: Redis, tmp_path: Path, hyper: dict, message: str
) -> None:
    trainer = LocalTrainer(make_settings(tmp_path, "/models/base"), redis_conn, serving_client=None)
    with pytest.raises(TrainingError, match=message):
        start(trainer, make_files(tmp_path), SERVED_BASE, **hyper)
    assert Queue(keys.QUEUE_GPU, connection=redis_conn).count == 0


def test_unknown_start_model_is_refused(redis_conn: Redis, tmp_path: Path) -> None:
    trainer = LocalTrainer(make_settings(tmp_path, "/models/base"), redis_conn, serving_client=None)
    with pytest.raises(TrainingError, match="neither the configured base model"):
        start(trainer, make_files(tmp_path), "tuneloop-404")
    with pytest.raises(TrainingError, match="neither"):
        start(trainer, make_files(tmp_path), "../../etc")


def test_unset_base_model_is_refused(redis_conn: Redis, tmp_path: Path) -> None:
    trainer = LocalTrainer(make_settings(tmp_path, ""), redis_conn, serving_client=None)
    with pytest.raises(TrainingError, match="training.local.base_model is not set"):
        start(trainer, make_files(tmp_path), SERVED_BASE)


def test_model_ids_count_up_and_skip_existing_directories(
    redis_conn: Redis, tmp_path: Path
) -> None:
    trainer = LocalTrainer(make_settings(tmp_path, "/models/base"), redis_conn, serving_client=None)
    (tmp_path / "adapters" / "tuneloop-2").mkdir(parents=True)
    ids = [trainer.poll(start(trainer, make_files(tmp_path), SERVED_BASE)) for _ in range(3)]
    assert [s.details["model_id"] for s in ids] == ["tuneloop-1", "tuneloop-3", "tuneloop-4"]


def test_cancel_of_a_queued_job_is_immediate(redis_conn: Redis, tmp_path: Path) -> None:
    trainer = LocalTrainer(make_settings(tmp_path, "/models/base"), redis_conn, serving_client=None)
    job_id = start(trainer, make_files(tmp_path), SERVED_BASE)
    first = trainer.poll(job_id).events[-1].id

    trainer.cancel(job_id)
    state = trainer.poll(job_id, after_event=first)
    assert state.status is JobStatus.CANCELLED
    assert [e.message for e in state.events] == ["Cancelled before it started"]
    work(redis_conn)  # nothing left to run
    assert trainer.poll(job_id).status is JobStatus.CANCELLED
    assert not (tmp_path / "adapters" / "tuneloop-1").exists()
    trainer.cancel(job_id)  # cancelling a finished job is a no-op


def test_unknown_job(redis_conn: Redis, tmp_path: Path) -> None:
    trainer = LocalTrainer(make_settings(tmp_path, "/models/base"), redis_conn, serving_client=None)
    with pytest.raises(TrainingError, match="unknown local training job"):
        trainer.poll("local-nope")
    with pytest.raises(TrainingError, match="unknown local training job"):
        trainer.cancel("local-nope")


def test_job_without_gpu_stack_fails_into_rq_failed_registry(
    redis_conn: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "trl", None)  # as on a worker without requirements-gpu
    trainer = LocalTrainer(make_settings(tmp_path, "/models/base"), redis_conn, serving_client=None)
    job_id = start(trainer, make_files(tmp_path), SERVED_BASE)
    work(redis_conn)

    state = trainer.poll(job_id)
    assert state.status is JobStatus.FAILED
    assert "pip install -r requirements-gpu.txt" in state.error
    assert state.events[-1].message.startswith("Failed: TrainingError")
    assert job_id in FailedJobRegistry(keys.QUEUE_GPU, connection=redis_conn).get_job_ids()
    assert not (tmp_path / "adapters" / "tuneloop-1").exists()


# --- real training through RQ ------------------------------------------------------------
@pytest.mark.usefixtures("gpu_stack")
def test_job_trains_then_continues_from_its_adapter(
    redis_conn: Redis, tmp_path: Path, tiny_model: Path
) -> None:
    trainer = LocalTrainer(
        make_settings(tmp_path, str(tiny_model)), redis_conn, serving_client=None
    )
    first = start(trainer, make_files(tmp_path), SERVED_BASE)
    work(redis_conn)

    state = trainer.poll(first)
    assert state.status is JobStatus.SUCCEEDED, state.error
    assert state.result_model == "tuneloop-1"
    assert state.trained_tokens and state.trained_tokens > 0
    assert state.details["step"] == state.details["total_steps"] == 3
    steps = [e for e in state.events if e.train_loss is not None]
    assert [e.step for e in steps] == [1, 2, 3]
    assert all(e.id.startswith(first + ":") for e in state.events)
    assert state.events[-1].message.startswith("Succeeded: adapter tuneloop-1 after 3 steps")
    later = trainer.poll(first, after_event=state.events[-2].id)
    assert later.events == state.events[-1:]
    adapter = tmp_path / "adapters" / "tuneloop-1"
    meta = json.loads((adapter / "tuneloop.json").read_text())
    assert meta["training_set_id"] == "set-4" and meta["parent_adapter"] is None
    assert Job.fetch(first, connection=redis_conn).return_value() == "tuneloop-1"

    second = start(trainer, make_files(tmp_path, n=6), "tuneloop-1")
    assert trainer.poll(second).details["parent"] == "tuneloop-1"
    work(redis_conn)
    state = trainer.poll(second)
    assert state.status is JobStatus.SUCCEEDED, state.error
    assert state.result_model == "tuneloop-2"
    child = json.loads((tmp_path / "adapters" / "tuneloop-2" / "tuneloop.json").read_text())
    assert child["parent_adapter"] == "tuneloop-1"
    assert child["training_set_id"] == "set-6"


@pytest.mark.usefixtures("gpu_stack")
def test_cancel_of_a_running_job_stops_it_and_registers_nothing(
    redis_conn: Redis, tmp_path: Path, tiny_model: Path
) -> None:
    settings = make_settings(tmp_path, str(tiny_model), epochs=500, learning_rate=1e-3)
    trainer = LocalTrainer(settings, redis_conn, serving_client=None)
    job_id = start(trainer, make_files(tmp_path), SERVED_BASE)

    def cancel_once_training() -> None:
        # Another process's view (the learning loop); redis-py clients are thread-safe.
        other = LocalTrainer(settings, redis_conn, serving_client=None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(e.train_loss is not None for e in other.poll(job_id).events):
                other.cancel(job_id)
                return
            time.sleep(0.01)

    canceller = threading.Thread(target=cancel_once_training, daemon=True)
    canceller.start()
    work(redis_conn)
    canceller.join(timeout=5)

    state = trainer.poll(job_id)
    assert state.status is JobStatus.CANCELLED
    assert state.result_model is None
    assert state.details["step"] < 500
    assert "no adapter was registered" in state.events[-1].message
    adapters = tmp_path / "adapters"
    assert not adapters.exists() or list(adapters.iterdir()) == []
    assert FailedJobRegistry(keys.QUEUE_GPU, connection=redis_conn).count == 0


# --- activation in vLLM (the emulator) ---------------------------------------------------
def _fake_adapter(tmp_path: Path, model_id: str) -> Path:
    path = tmp_path / "adapters" / model_id
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    return path


def test_activate_loads_the_adapter_into_vllm(
    redis_conn: Redis, tmp_path: Path, openai_api
) -> None:
    client = openai.OpenAI(api_key="sk-test", base_url=openai_api.url, max_retries=0)
    trainer = LocalTrainer(
        make_settings(tmp_path, "/models/base"), redis_conn, serving_client=client
    )
    path = _fake_adapter(tmp_path, "tuneloop-1")

    trainer.activate("tuneloop-1")
    assert openai_api.loaded_adapters() == {"tuneloop-1": str(path)}
    (request,) = openai_api.requests("/v1/load_lora_adapter")
    assert request.body == {"lora_name": "tuneloop-1", "lora_path": str(path), "load_inplace": True}

    trainer.activate("tuneloop-1")  # again: fine
    assert openai_api.loaded_adapters() == {"tuneloop-1": str(path)}


def test_activate_replaces_stale_weights_loaded_under_the_same_name(
    redis_conn: Redis, tmp_path: Path, openai_api
) -> None:
    client = openai.OpenAI(api_key="sk-test", base_url=openai_api.url, max_retries=0)
    stale = tmp_path / "elsewhere" / "tuneloop-1"
    stale.mkdir(parents=True)
    client.post(
        "/load_lora_adapter",
        body={"lora_name": "tuneloop-1", "lora_path": str(stale)},
        cast_to=str,
    )
    trainer = LocalTrainer(
        make_settings(tmp_path, "/models/base"), redis_conn, serving_client=client
    )
    path = _fake_adapter(tmp_path, "tuneloop-1")
    trainer.activate("tuneloop-1")  # loaded in place: these weights, not the old ones
    assert len(openai_api.requests("/v1/load_lora_adapter")) == 2
    assert openai_api.loaded_adapters() == {"tuneloop-1": str(path)}


def test_activate_on_a_vllm_without_load_inplace_reloads_the_adapter(
    redis_conn: Redis, tmp_path: Path, openai_api: OpenAIEmulator
) -> None:
    openai_api.lora_load_inplace = False
    client = openai.OpenAI(api_key="sk-test", base_url=openai_api.url, max_retries=0)
    stale = tmp_path / "elsewhere" / "tuneloop-1"
    stale.mkdir(parents=True)
    client.post(
        "/load_lora_adapter", body={"lora_name": "tuneloop-1", "lora_path": str(stale)}, cast_to=str
    )
    trainer = LocalTrainer(
        make_settings(tmp_path, "/models/base"), redis_conn, serving_client=client
    )
    path = _fake_adapter(tmp_path, "tuneloop-1")
    trainer.activate("tuneloop-1")
    assert openai_api.loaded_adapters() == {"tuneloop-1": str(path)}
    assert [r.body["lora_name"] for r in openai_api.requests("/v1/unload_lora_adapter")] == [
        "tuneloop-1"
    ]


def test_activate_loads_into_every_replica_or_fails(
    redis_conn: Redis, tmp_path: Path, openai_api: OpenAIEmulator
) -> None:
    with OpenAIEmulator(api_key="sk-test") as second:
        settings = make_settings(
            tmp_path, "/models/base", serving_urls=(openai_api.url, second.url)
        )
        trainer = LocalTrainer(settings, redis_conn, serving_client=None)
        path = _fake_adapter(tmp_path, "tuneloop-1")
        trainer.activate("tuneloop-1")
        assert openai_api.loaded_adapters() == second.loaded_adapters() == {"tuneloop-1": str(path)}

        _fake_adapter(tmp_path, "tuneloop-2")
        second.fail_next("/v1/load_lora_adapter", status=500, times=2)  # the SDK retries once
        with pytest.raises(TrainingError, match=f"1 of 2 replicas: {second.url}"):
            trainer.activate("tuneloop-2")
        assert "tuneloop-2" not in second.loaded_adapters()

        second.lora_runtime_updating = False
        with pytest.raises(TrainingError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            trainer.activate("tuneloop-2")


def test_activate_errors(redis_conn: Redis, tmp_path: Path, openai_api) -> None:
    client = openai.OpenAI(api_key="sk-test", base_url=openai_api.url, max_retries=0)
    trainer = LocalTrainer(
        make_settings(tmp_path, "/models/base"), redis_conn, serving_client=client
    )
    with pytest.raises(TrainingError, match="no adapter tuneloop-7"):
        trainer.activate("tuneloop-7")
    assert openai_api.requests("/v1/load_lora_adapter") == []

    _fake_adapter(tmp_path, "tuneloop-7")
    openai_api.fail_next("/v1/load_lora_adapter", status=500)
    with pytest.raises(TrainingError, match="vLLM did not load adapter tuneloop-7"):
        trainer.activate("tuneloop-7")
    assert openai_api.loaded_adapters() == {}

    offline = LocalTrainer(make_settings(tmp_path, "/models/base"), redis_conn, serving_client=None)
    with pytest.raises(TrainingError, match="needs the vLLM server"):
        offline.activate("tuneloop-7")


def test_the_job_a_run_started_is_found_again_by_its_run(redis_conn: Redis, tmp_path: Path) -> None:
    trainer = LocalTrainer(make_settings(tmp_path, "/models/base"), redis_conn, serving_client=None)
    job_id = trainer.start(
        make_files(tmp_path),
        base_model=SERVED_BASE,
        hyperparameters={},
        suffix="tuneloop",
        metadata={RUN_METADATA_KEY: "run-1"},
    )
    assert trainer.find_job("run-1") == job_id
    assert trainer.find_job("run-2") is None

    # A job recorded but never enqueued (the worker died in between) is not adopted:
    # nobody would ever train it.
    Job.fetch(job_id, connection=redis_conn).delete()
    assert trainer.find_job("run-1") is None
    assert trainer.poll(job_id).status is JobStatus.FAILED


def test_a_small_increment_lowers_the_local_learning_rate(
    redis_conn: Redis, tmp_path: Path
) -> None:
    trainer = LocalTrainer(make_settings(tmp_path, "/models/base"), redis_conn, serving_client=None)
    assert trainer.hyperparameters(500, Lineage(trained_examples=1000)) == ({}, "")
    hyper, note = trainer.hyperparameters(10, Lineage(trained_examples=1000))
    assert hyper == {"learning_rate_multiplier": round(1 / 3, 6)}
    assert "10 new examples next to 1000" in note
    local, _ = trainer._settings_with(hyper)
    assert local.learning_rate == pytest.approx(3e-2 / 3, rel=1e-5), "of the configured rate"
