"""The LoRA training run itself, on a tiny Llama built in the test (CPU, no downloads)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from core.errors import TrainingError
from core.settings import TrainingMethod
from tests.workers.training.conftest import (
    FACTS,
    chat_example,
    fast_settings,
    preference_example,
    write_jsonl,
)
from workers.training.base import ProgressEvent
from workers.training.lora import (
    METADATA_FILE,
    TrainingCancelled,
    preference_rows,
    read_metadata,
    sha256_file,
    supervised_rows,
    train_adapter,
)

# transformers 5 warns about its own renamed attribute when PEFT/TRL read it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)


def _train(tiny_model, train, out_dir, *, parent=None, valid=None, method=None, cancel=None, **kw):
    events: list[ProgressEvent] = []
    settings = fast_settings(**kw)
    result = train_adapter(
        base_model=str(tiny_model),
        parent_adapter=parent,
        train_path=train,
        valid_path=valid,
        out_dir=out_dir,
        settings=settings,
        method=method or TrainingMethod.SUPERVISED,
        on_progress=events.append,
        should_cancel=cancel or (lambda: False),
        training_set_id="set-1",
    )
    return result, events


def _lora_weights(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def _train_losses(events: list[ProgressEvent]) -> list[float]:
    return [e.train_loss for e in events if e.train_loss is not None]


# --- without the GPU stack ---------------------------------------------------------------
def test_supervised_lines_become_prompt_and_completion(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [chat_example("Where is the wiki ?", "Here .")])
    (row,) = supervised_rows(path)
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert row["completion"] == [{"role": "assistant", "content": "Here ."}]


def test_preference_lines_become_prompt_chosen_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [preference_example("Q ?", "good", "bad")])
    (row,) = preference_rows(path)
    assert row["chosen"] == [{"role": "assistant", "content": "good"}]
    assert row["rejected"] == [{"role": "assistant", "content": "bad"}]
    assert row["prompt"][-1] == {"role": "user", "content": "Q ?"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}]}), "last message"),
        (json.dumps({"messages": [{"role": "robot", "content": "hi"}]}), "role"),
        (json.dumps({"prompt": "x", "completion": "y"}), "list of messages"),
    ],
)
def test_bad_supervised_lines_name_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(chat_example("a ?", "b .")) + "\n" + line + "\n")
    with pytest.raises(TrainingError, match=expected) as info:
        supervised_rows(path)
    assert f"{path}:2" in str(info.value)


def test_bad_preference_line(tmp_path: Path) -> None:
    row = preference_example("Q ?", "good", "bad")
    row["preferred_output"] = [{"role": "user", "content": "x"}]
    path = write_jsonl(tmp_path / "p.jsonl", [row])
    with pytest.raises(TrainingError, match="preferred_output"):
        preference_rows(path)


def test_missing_gpu_stack_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trl", None)  # import trl now raises ImportError
    path = write_jsonl(tmp_path / "t.jsonl", [chat_example("a ?", "b .")])
    with pytest.raises(TrainingError, match=r"pip install -r requirements-gpu\.txt"):
        train_adapter(
            base_model="unused",
            parent_adapter=None,
            train_path=path,
            valid_path=None,
            out_dir=tmp_path / "out",
            settings=fast_settings(),
            method=TrainingMethod.SUPERVISED,
            on_progress=lambda e: None,
            should_cancel=lambda: False,
        )
    assert not (tmp_path / "out").exists()


# --- real training on the tiny model -----------------------------------------------------
@pytest.fixture
def gpu_stack() -> None:
    for name in ("torch", "transformers", "peft", "trl", "datasets"):
        pytest.importorskip(name)


@pytest.mark.usefixtures("gpu_stack")
def test_supervised_run_lowers_loss_and_registers_adapter(
    tiny_model: Path, chat_files: tuple[Path, Path], tmp_path: Path
) -> None:
    train, valid = chat_files
    out = tmp_path / "adapters" / "tuneloop-1"
    result, events = _train(tiny_model, train, out, valid=valid, epochs=8, learning_rate=3e-2)

    losses = _train_losses(events)
    assert len(losses) == 8
    assert losses[-1] < losses[0] * 0.8, losses
    assert all(math.isfinite(x) for x in losses)
    step_events = [e for e in events if e.train_loss is not None]
    assert [e.step for e in step_events] == list(range(1, 9))
    assert all(e.total_steps == 8 for e in step_events)
    assert all(e.tokens_per_s and e.tokens_per_s > 0 for e in step_events)
    assert step_events[-1].eta_s == pytest.approx(0.0, abs=1e-6)
    assert any(e.valid_loss is not None for e in events)

    assert result.path == out and result.model_id == "tuneloop-1"
    assert result.steps == 8 and result.tokens > 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        METADATA_FILE,
    ]
    # Nothing else was left beside it (no staging directory).
    assert [p.name for p in out.parent.iterdir()] == ["tuneloop-1"]

    meta = read_metadata(out)
    assert meta["parent_adapter"] is None
    assert meta["training_set_id"] == "set-1"
    assert meta["base_model"] == str(tiny_model)
    assert meta["method"] == "supervised"
    assert meta["steps"] == 8
    assert [row["step"] for row in meta["losses"]] == list(range(1, 9))
    assert [row["train_loss"] for row in meta["losses"]] == losses
    assert meta["losses"][-1]["valid_loss"] == result.valid_loss
    assert meta["adapter_files"]["adapter_model.safetensors"] == sha256_file(
        out / "adapter_model.safetensors"
    )
    assert meta["adapter_files"]["adapter_config.json"] == sha256_file(out / "adapter_config.json")
    assert meta["training_files"]["train"]["sha256"] == sha256_file(train)
    assert meta["training_files"]["valid"]["sha256"] == sha256_file(valid)
    assert meta["created_at"] > 0
    assert meta["lora"]["r"] == 8
    assert meta["versions"]["trl"]

    weights = _lora_weights(out)
    assert any("lora_B" in name for name in weights)
    assert any(w.abs().sum() > 0 for name, w in weights.items() if "lora_B" in name)


@pytest.mark.usefixtures("gpu_stack")
def test_packing_run(tiny_model: Path, chat_files: tuple[Path, Path], tmp_path: Path) -> None:
    train, valid = chat_files
    out = tmp_path / "adapters" / "packed-1"
    result, events = _train(
        tiny_model, train, out, valid=valid, packing=True, max_seq_length=48, epochs=2
    )
    assert result.steps >= 1
    assert read_metadata(out)["hyperparameters"]["packing"] is True
    assert _train_losses(events)
    assert result.valid_loss is not None and math.isfinite(result.valid_loss)


def _answer_loss(tiny_model: Path, train: Path) -> float:
    """The untrained model's mean cross-entropy on the answers' tokens, computed directly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    total, count = 0.0, 0
    for row in supervised_rows(train):
        prompt = tokenizer.apply_chat_template(
            row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        full = tokenizer.apply_chat_template(
            row["prompt"] + row["completion"], tokenize=True, return_dict=True
        )["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([full])).logits[0, :-1]
        targets = torch.tensor(full[1:])
        answer = torch.arange(len(full) - 1) >= len(prompt) - 1
        total += torch.nn.functional.cross_entropy(
            logits[answer], targets[answer], reduction="sum"
        ).item()
        count += int(answer.sum())
    return total / count


@pytest.mark.usefixtures("gpu_stack")
@pytest.mark.parametrize("packing", [False, True])
def test_reported_loss_is_the_loss_on_the_answers(
    tiny_model: Path, chat_files: tuple[Path, Path], tmp_path: Path, packing: bool
) -> None:
    # One batch holds the whole set and a fresh adapter starts as the base model, so the
    # first step's loss is the base model's loss on every answer token, each example
    # attending only to itself (packed ones too) and no prompt token counted.
    train, _ = chat_files
    out = tmp_path / "adapters" / "check-1"
    _, events = _train(tiny_model, train, out, packing=packing, max_seq_length=64)
    assert _train_losses(events)[0] == pytest.approx(_answer_loss(tiny_model, train), rel=1e-5)
    step = next(e for e in events if e.train_loss is not None)
    assert step.token_accuracy is not None and 0.0 <= step.token_accuracy <= 1.0


@pytest.mark.usefixtures("gpu_stack")
def test_same_data_and_seed_give_the_same_adapter(
    tiny_model: Path, chat_files: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = chat_files
    first, second = tmp_path / "adapters" / "a-1", tmp_path / "adapters" / "a-2"
    _train(tiny_model, train, first, epochs=2, learning_rate=3e-2, lora_dropout=0.1)
    _train(tiny_model, train, second, epochs=2, learning_rate=3e-2, lora_dropout=0.1)
    one, two = _lora_weights(first), _lora_weights(second)
    assert one.keys() == two.keys()
    assert all((one[name] == two[name]).all() for name in one)


@pytest.mark.usefixtures("gpu_stack")
def test_second_run_continues_from_parent_weights(
    tiny_model: Path, chat_files: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = chat_files
    parent_dir = tmp_path / "adapters" / "tuneloop-1"
    parent, parent_events = _train(tiny_model, train, parent_dir, epochs=6, learning_rate=3e-2)
    parent_weights = _lora_weights(parent_dir)

    # A learning rate too small to move anything: the child must hold the parent's
    # weights, where a fresh adapter would start with lora_B == 0.
    frozen_dir = tmp_path / "adapters" / "tuneloop-2"
    _train(tiny_model, train, frozen_dir, parent=parent_dir, epochs=1, learning_rate=1e-12)
    child_weights = _lora_weights(frozen_dir)
    assert child_weights.keys() == parent_weights.keys()
    for name, weight in parent_weights.items():
        assert child_weights[name].shape == weight.shape
        assert (child_weights[name] - weight).abs().max() < 1e-6, name
    assert any(w.abs().sum() > 0 for n, w in child_weights.items() if "lora_B" in n)

    # Training on: it starts where the parent ended (well below a fresh start) and its
    # metadata names the parent; the parent's LoRA shape wins over the settings.
    child_dir = tmp_path / "adapters" / "tuneloop-3"
    child, child_events = _train(
        tiny_model, train, child_dir, parent=parent_dir, epochs=2, learning_rate=3e-2, lora_r=4
    )
    fresh_first = _train_losses(parent_events)[0]
    assert _train_losses(child_events)[0] < fresh_first * 0.8
    meta = read_metadata(child_dir)
    assert meta["parent_adapter"] == "tuneloop-1"
    assert meta["parent_adapter_path"] == str(parent_dir)
    assert meta["lora"]["r"] == 8
    assert read_metadata(parent_dir)["parent_adapter"] is None


@pytest.mark.usefixtures("gpu_stack")
def test_cancel_stops_at_next_step_and_registers_nothing(
    tiny_model: Path, chat_files: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = chat_files
    out = tmp_path / "adapters" / "tuneloop-9"
    seen: list[ProgressEvent] = []

    def should_cancel() -> bool:
        return sum(1 for e in seen if e.train_loss is not None) >= 2

    # Asked after step 2 reported; step 3 was already under way and is the last one.
    with pytest.raises(TrainingCancelled, match="step 3/20"):
        train_adapter(
            base_model=str(tiny_model),
            parent_adapter=None,
            train_path=train,
            valid_path=None,
            out_dir=out,
            settings=fast_settings(epochs=20),
            method=TrainingMethod.SUPERVISED,
            on_progress=seen.append,
            should_cancel=should_cancel,
        )
    assert max(e.step or 0 for e in seen) <= 3
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no staging directory either


@pytest.mark.usefixtures("gpu_stack")
def test_cancel_before_start(
    tiny_model: Path, chat_files: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = chat_files
    out = tmp_path / "adapters" / "tuneloop-1"
    with pytest.raises(TrainingCancelled):
        _train(tiny_model, train, out, cancel=lambda: True)
    assert not out.exists()


@pytest.mark.usefixtures("gpu_stack")
def test_existing_adapter_is_never_overwritten(
    tiny_model: Path, chat_files: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = chat_files
    out = tmp_path / "adapters" / "tuneloop-1"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    with pytest.raises(TrainingError, match="already exists"):
        _train(tiny_model, train, out)
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.usefixtures("gpu_stack")
def test_dpo_on_preference_pairs(tiny_model: Path, tmp_path: Path) -> None:
    rows = [preference_example(q, a, "I do not know .") for q, a in FACTS[:2]]
    prefs = write_jsonl(tmp_path / "prefs.jsonl", rows)
    out = tmp_path / "adapters" / "tuneloop-dpo-1"
    result, events = _train(
        tiny_model, prefs, out, method=TrainingMethod.DPO, epochs=4, learning_rate=3e-2
    )
    losses = _train_losses(events)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at start
    assert losses[-1] < losses[0]
    meta = read_metadata(out)
    assert meta["method"] == "dpo"
    assert meta["examples"] == {"train": 2, "valid": 0}
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "ref").exists()  # the frozen reference copy is not saved
    assert result.steps == 4
