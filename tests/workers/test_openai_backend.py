"""The OpenAI trainer backend against the loopback OpenAI emulator (real ``openai`` client)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai import OpenAI

from core.errors import TrainingError
from core.settings import TrainingMethod
from tests.emulators.openai import OpenAIEmulator
from workers.training.base import JobStatus, TrainingFiles
from workers.training.openai_backend import RUN_METADATA_KEY, OpenAITrainer

BASE = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def trainer(openai_api: OpenAIEmulator) -> OpenAITrainer:
    client = OpenAI(api_key="sk-test", base_url=openai_api.url, max_retries=0)
    return OpenAITrainer(client, seed=42)


@pytest.fixture
def files(tmp_path: Path) -> TrainingFiles:
    line = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train.write_text((json.dumps(line) + "\n") * 10)
    valid.write_text(json.dumps(line) + "\n")
    return TrainingFiles("set-0001", TrainingMethod.SUPERVISED, train, valid, 10, 1)


def start(trainer: OpenAITrainer, files: TrainingFiles, **extra: object) -> str:
    return trainer.start(
        files,
        base_model=extra.pop("base_model", BASE),  # type: ignore[arg-type]
        hyperparameters={"n_epochs": 2, "learning_rate_multiplier": 0.5, "batch_size": None},
        suffix="tuneloop",
        metadata={RUN_METADATA_KEY: "run-1", "tuneloop_set": "set-0001"},
    )


def test_start_uploads_the_files_and_continues_from_the_given_model(
    trainer: OpenAITrainer, files: TrainingFiles, openai_api: OpenAIEmulator
) -> None:
    job_id = start(trainer, files, base_model=BASE)
    uploaded = openai_api.files()
    assert [f["purpose"] for f in uploaded] == ["fine-tune", "fine-tune"]
    assert openai_api.file_bytes(uploaded[0]["id"]) == files.train_path.read_bytes()
    request = openai_api.job(job_id)["request"]
    assert request["model"] == BASE
    assert request["training_file"] == uploaded[0]["id"]
    assert request["validation_file"] == uploaded[1]["id"]
    assert request["suffix"] == "tuneloop" and request["seed"] == 42
    assert request["metadata"] == {RUN_METADATA_KEY: "run-1", "tuneloop_set": "set-0001"}
    assert request["method"] == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 2, "learning_rate_multiplier": 0.5}},
    }
    assert "hyperparameters" not in request
    assert trainer.find_job("run-1") == job_id
    assert trainer.find_job("run-2") is None


def test_dpo_sets_go_through_the_dpo_method(
    trainer: OpenAITrainer, files: TrainingFiles, openai_api: OpenAIEmulator
) -> None:
    dpo = TrainingFiles("s", TrainingMethod.DPO, files.train_path, None, 10, 0)
    job_id = trainer.start(
        dpo, base_model=BASE, hyperparameters={"beta": 0.2}, suffix="x", metadata={}
    )
    request = openai_api.job(job_id)["request"]
    assert request["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}
    assert "validation_file" not in request


def test_a_refused_job_raises_and_deletes_what_it_uploaded(
    trainer: OpenAITrainer, files: TrainingFiles, openai_api: OpenAIEmulator
) -> None:
    with pytest.raises(TrainingError, match="not available for fine-tuning"):
        start(trainer, files, base_model="no-such-model")
    assert openai_api.files() == []
    assert openai_api.jobs() == []


def test_poll_follows_status_and_returns_only_new_events_oldest_first(
    trainer: OpenAITrainer, files: TrainingFiles, openai_api: OpenAIEmulator
) -> None:
    openai_api.job_total_steps = 120  # more events than one page of the events list
    job_id = start(trainer, files)
    state = trainer.poll(job_id)
    assert state.status is JobStatus.PENDING
    assert state.events[0].message.startswith("Created fine-tuning job")
    seen = state.events[-1].id

    openai_api.advance_job(job_id)
    openai_api.advance_job(job_id)
    state = trainer.poll(job_id, after_event=seen)
    assert state.status is JobStatus.RUNNING
    assert [e.message for e in state.events] == [
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
    ]
    seen = state.events[-1].id

    for _ in range(120):
        openai_api.advance_job(job_id)
    state = trainer.poll(job_id, after_event=seen)
    assert [e.step for e in state.events] == list(range(1, 121))
    assert state.events[0].train_loss == 1.4 and state.events[0].valid_loss is not None
    assert state.events[-1].token_accuracy is not None
    seen = state.events[-1].id

    openai_api.advance_job(job_id)
    state = trainer.poll(job_id, after_event=seen)
    assert state.status is JobStatus.SUCCEEDED
    assert state.result_model and state.result_model.startswith(f"ft:{BASE}:")
    assert state.trained_tokens and state.details["hyperparameters"]["n_epochs"] == 2
    trainer.activate(state.result_model)
    with pytest.raises(TrainingError, match="does not exist"):
        trainer.activate("ft:gpt-4o-mini:nobody:x:y")


def test_failures_and_cancellation_are_reported(
    trainer: OpenAITrainer, files: TrainingFiles, openai_api: OpenAIEmulator
) -> None:
    failing = start(trainer, files)
    openai_api.fail_job(failing, code="invalid_training_file", message="Line 3 is broken.")
    state = trainer.poll(failing)
    assert state.status is JobStatus.FAILED
    assert state.error == "invalid_training_file: Line 3 is broken."

    cancelled = start(trainer, files)
    trainer.cancel(cancelled)
    assert trainer.poll(cancelled).status is JobStatus.CANCELLED
    trainer.cancel(cancelled)  # already ended: nothing to do, no error


def test_a_dpo_job_reports_the_hyperparameters_it_ran_with_from_its_method(
    trainer: OpenAITrainer, files: TrainingFiles, openai_api: OpenAIEmulator
) -> None:
    dpo = TrainingFiles("s", TrainingMethod.DPO, files.train_path, None, 10, 0)
    job_id = trainer.start(
        dpo, base_model=BASE, hyperparameters={"beta": 0.2}, suffix="x", metadata={}
    )
    for _ in range(2):  # validating -> queued -> running: "auto" values are resolved
        openai_api.advance_job(job_id)
    assert openai_api.job(job_id)["hyperparameters"] is None, "supervised jobs only"
    state = trainer.poll(job_id)
    assert state.status is JobStatus.RUNNING
    assert state.details["hyperparameters"] == {
        "beta": 0.2,
        "batch_size": 1,
        "learning_rate_multiplier": 1.8,
        "n_epochs": 3,
    }
