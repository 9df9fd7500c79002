"""Fixtures for the local trainer: a tiny Llama and a tokenizer built in code, no downloads.

Everything here needs the GPU stack (torch, transformers, ...); the tests that use these
fixtures skip themselves with ``pytest.importorskip`` when it is not installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.settings import LocalTrainerSettings

# No test here may reach the Hugging Face hub. Set at import, before transformers or
# huggingface_hub are imported: they read these variables once, when imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|> {{ message['content'] }} </s> "
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]

FACTS = [
    ("Where is the wiki ?", "The wiki lives at wiki dot example dot com ."),
    ("Who runs the deploys ?", "Deploys are run by the platform team on Tuesdays ."),
    ("How do I get VPN access ?", "Ask in the it-help channel and an admin adds you ."),
    ("What is the coffee budget ?", "Each team may spend forty euros a month on coffee ."),
    ("When is the standup ?", "The standup is every morning at nine thirty ."),
    ("Which editor should I use ?", "Any editor works but the repo ships an editorconfig ."),
]
SYSTEM = "You are tuneloop , a helpful assistant ."


def chat_example(question: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def preference_example(question: str, good: str, bad: str) -> dict:
    return {
        "input": {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question},
            ]
        },
        "preferred_output": [{"role": "assistant", "content": good}],
        "non_preferred_output": [{"role": "assistant", "content": bad}],
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def build_tiny_model(
    directory: Path, texts: list[str], *, hidden_size: int = 32, layers: int = 2
) -> Path:
    """Save a randomly initialised tiny Llama and a word-level tokenizer to ``directory``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS))
    tok.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def all_texts() -> list[str]:
    words = [SYSTEM, "I do not know ."]
    for question, answer in FACTS:
        words += [question, answer]
    return words


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama base model directory (built once per session)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return build_tiny_model(tmp_path_factory.mktemp("base") / "tiny-llama", all_texts())


@pytest.fixture
def chat_files(tmp_path: Path) -> tuple[Path, Path]:
    """Supervised train and valid files."""
    rows = [chat_example(q, a) for q, a in FACTS]
    train = write_jsonl(tmp_path / "train.jsonl", rows[:4])
    valid = write_jsonl(tmp_path / "valid.jsonl", rows[4:])
    return train, valid


@pytest.fixture
def preference_file(tmp_path: Path) -> Path:
    rows = [preference_example(q, a, "I do not know .") for q, a in FACTS[:2]]
    return write_jsonl(tmp_path / "prefs.jsonl", rows)


def fast_settings(**overrides) -> LocalTrainerSettings:
    """Settings that make a tiny model learn visibly within a few CPU steps."""
    values = {
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "target_modules": ("q_proj", "k_proj", "v_proj", "o_proj"),
        "epochs": 1,
        "learning_rate": 1e-2,
        "batch_size": 4,
        "max_seq_length": 64,
        "bf16": False,
        "packing": False,
    }
    values.update(overrides)
    return LocalTrainerSettings(**values)
