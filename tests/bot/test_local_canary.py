"""A canary on the self-hosted backend: both adapters stay loaded in vLLM while new
threads are split between them (tiny model trained on the CPU, vLLM emulator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core import canary
from core.runs import RunStatus
from tests.bot.conftest import Bot
from tests.bot.test_finetune import command, only_run, seed, work
from tests.bot.test_local_loop import _train_on_gpu_queue, base_model_dir  # noqa: F401
from tests.bot.test_local_loop import bot_settings as local_settings

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("trl")


@pytest.fixture
def bot_settings(tmp_path: Path, base_model_dir: Path) -> dict[str, Any]:  # noqa: F811
    return {
        **local_settings.__wrapped__(tmp_path, base_model_dir),
        "canary": {"enabled": True, "share": 0.5, "min_votes": 50},
    }


def _candidate(bot: Bot, start: int) -> str:
    seed(bot, 12, start=start)
    command(bot, "retrain")
    work(bot)
    _train_on_gpu_queue(bot)
    for _ in range(10):
        work(bot)
        if only_run(bot).status not in (RunStatus.TRAINING, RunStatus.EVALUATING):
            break
    run = only_run(bot)
    assert run.status is RunStatus.CANARY, run
    return run.candidate_model


def test_a_local_canary_serves_both_adapters(bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    first = _candidate(bot, 0)
    command(bot, "canary promote")
    work(bot)
    assert bot.services.store.current_model("") == first

    second = _candidate(bot, 100)
    assert set(bot.openai.loaded_adapters()) == {first, second}, "both stay loaded"
    going = canary.active(bot.redis)
    assert going is not None and (going.candidate, going.incumbent) == (second, first)
    models = set()
    for i in range(12):
        bot.ask(bot.says(f"thread {i}?", mention=True))
        models.add(bot.openai.completions()[-1]["model"])
    assert models == {first, second}, "new threads are answered by both adapters"
