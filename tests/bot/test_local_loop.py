"""The whole loop on the self-hosted backend: Slack → LoRA training → vLLM → next answer.

A tiny model built in the test is trained on the CPU by the real training code on the
``gpu`` queue; promotion loads the adapter into the vLLM emulator, and the next Slack
answer is generated with the adapter as its model. Rollback points back again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rq import Queue, SimpleWorker

from core import keys, model_registry, runs
from core.runs import RunStatus
from tests.bot.conftest import Bot
from tests.bot.test_finetune import command, only_run, seed, work
from tests.workers.training.conftest import all_texts, build_tiny_model

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("trl")


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = all_texts() + [f"How do I configure service {i} ?" for i in range(20)]
    return build_tiny_model(tmp_path_factory.mktemp("base") / "tiny-llama", texts)


@pytest.fixture
def bot_settings(tmp_path: Path, base_model_dir: Path) -> dict[str, Any]:
    return {
        "training": {
            "backend": "local",
            "sets_dir": str(tmp_path / "sets"),
            "poll_interval_s": 0.01,
            "progress_post_interval_s": 0,
            "replay_fraction": 0.0,
            "local": {
                "base_model": str(base_model_dir),
                "adapters_dir": str(tmp_path / "adapters"),
                "lora_r": 4,
                "lora_alpha": 8,
                "epochs": 1,
                "batch_size": 4,
                "max_seq_length": 64,
                "bf16": False,
                "packing": False,
            },
        }
    }


def _train_on_gpu_queue(bot: Bot) -> None:
    queue = Queue(keys.QUEUE_GPU, connection=bot.redis)
    assert queue.count == 1, "the run became one job on the gpu queue"
    SimpleWorker([queue], connection=bot.redis).work(burst=True)


def test_local_run_is_promoted_into_vllm_and_the_next_answer_uses_the_adapter(
    bot: Bot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seed(bot, 12)
    command(bot, "retrain")
    work(bot)  # builds the set and starts the local job
    _train_on_gpu_queue(bot)
    for _ in range(10):
        work(bot)  # polls, then evaluates and promotes
        if only_run(bot).status not in (RunStatus.TRAINING, RunStatus.EVALUATING):
            break
    run = only_run(bot)
    assert run.status is RunStatus.PROMOTED, run
    adapter = run.candidate_model
    adapter_dir = tmp_path / "adapters" / adapter
    assert (adapter_dir / "tuneloop.json").exists()
    assert bot.openai.loaded_adapters() == {adapter: str(adapter_dir)}
    assert bot.redis.get(keys.CURRENT_MODEL).decode() == adapter
    points = runs.run_metrics(bot.redis, run.run_id)
    assert any(p["train_loss"] is not None for p in points), "training losses were recorded"
    assert any(p["valid_loss"] is not None for p in points), "validation losses too"
    uploads = bot.slack.uploaded_files()
    assert uploads and uploads[-1]["thread_ts"] == run.thread_ts, "loss curve in the thread"
    assert uploads[-1]["content"].startswith(b"\x89PNG")

    bot.ask(bot.says("which model answers now?", mention=True))
    assert bot.openai.completions()[-1]["model"] == adapter

    reply = command(bot, "rollback")
    assert adapter in reply["text"]
    bot.ask(bot.says("and now?", mention=True))
    assert bot.openai.completions()[-1]["model"] == bot.settings.model.base_model
    assert model_registry.history(bot.redis)[0]["action"] == "rollback"
