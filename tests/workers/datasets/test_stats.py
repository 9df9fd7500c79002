"""stats: token distribution, billed tokens and price, with the model's own encoding."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest

from core.pricing import default_epochs, price_for
from core.tokens import counter_for_encoding, encoding_for_model
from tests.workers.datasets.helpers import chat, vision_chat, write_jsonl


def _expected(examples: list[dict]) -> list[int]:
    counter = counter_for_encoding("o200k_base")
    return sorted(counter.count_messages(ex["messages"]) for ex in examples)


def test_stats_numbers_match_the_token_counter(tmp_path: Path, run) -> None:
    examples = [chat(i) for i in range(40)]
    examples[7]["messages"][1]["content"] = "long question " * 40
    source = write_jsonl(tmp_path / "data.jsonl", examples)
    tokens = _expected(examples)
    limit = tokens[-2] + 1  # only the long one is over

    result = run("stats", source, "--json", "--epochs", "2", "--max-tokens", limit)

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["examples"] == 40
    assert data["tokens"]["min"] == tokens[0]
    assert data["tokens"]["max"] == tokens[-1]
    assert data["tokens"]["mean"] == round(sum(tokens) / 40, 1)
    assert data["tokens"]["p95"] == tokens[math.ceil(0.95 * 40) - 1]
    assert data["over_limit"] == 1
    billed = 2 * (sum(tokens[:-1]) + limit)
    assert data["billed_tokens"] == billed
    assert data["price"] == {
        "model": "gpt-4o-mini-2024-07-18",
        "per_million_usd": 3.0,
        "as_of": "2026-11-01",
        "estimated_usd": round(billed / 1e6 * 3.0, 2),
    }
    counter = counter_for_encoding("o200k_base")
    assistant = sum(counter.count(ex["messages"][-1]["content"]) for ex in examples)
    assert data["assistant_tokens"] == assistant
    assert data["token_counts"] == {"exact": True, "source": "tiktoken", "encoding": "o200k_base"}


def test_text_report_and_default_epochs(tmp_path: Path, run) -> None:
    source = write_jsonl(tmp_path / "data.jsonl", [chat(i) for i in range(20)])

    result = run("stats", source)

    assert result.exit_code == 0
    assert "data.jsonl: 20 examples (chat format)" in result.output
    assert "tokens per example: min " in result.output
    assert "billed training tokens: 5 epochs (OpenAI's default for this size)" in result.output
    assert "estimated price for gpt-4o-mini-2024-07-18: $" in result.output
    assert "prices as of 2026-11-01" in result.output
    assert "token counts: exact (tiktoken, o200k_base)" in result.output


def test_fine_tuned_gpt41_names_use_o200k_and_the_base_price(tmp_path: Path, run) -> None:
    source = write_jsonl(tmp_path / "data.jsonl", [chat(i) for i in range(12)])
    model = "ft:gpt-4.1-mini-2025-04-14:acme:tuneloop:abc123"

    data = json.loads(run("stats", source, "--json", "--model", model).output)

    assert encoding_for_model(model) == "o200k_base"
    assert data["token_counts"]["encoding"] == "o200k_base"
    assert data["price"]["model"] == "gpt-4.1-mini-2025-04-14"
    assert data["price"]["per_million_usd"] == 5.0


def test_unknown_model_has_no_price(tmp_path: Path, run) -> None:
    source = write_jsonl(tmp_path / "data.jsonl", [chat(i) for i in range(12)])

    result = run("stats", source, "--model", "my-local-llama")

    assert result.exit_code == 0
    assert "estimated price: unknown, no training price for my-local-llama" in result.output


@pytest.mark.parametrize(
    ("n", "epochs"), [(1, 25), (10, 10), (34, 3), (40, 3), (10_000, 2), (30_000, 1)]
)
def test_default_epochs_rule(n: int, epochs: int) -> None:
    assert default_epochs(n) == epochs


def test_prices_are_dated_and_matched_by_prefix(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "tables:\n"
        "  - as_of: 2030-01-01\n    training: {gpt-4o: 1.0}\n"
        "  - as_of: 2026-01-01\n    training: {gpt-4o: 25.0, gpt-4o-mini: 3.0}\n"
        "  - as_of: 2025-01-01\n    training: {gpt-4o: 20.0}\n",
        encoding="utf-8",
    )
    today = dt.date(2026, 11, 1)

    assert price_for("gpt-4o-2024-08-06", prices, today).per_million == 25.0
    assert price_for("gpt-4o-mini-2024-07-18", prices, today).per_million == 3.0
    assert price_for("ft:gpt-4o-2024-08-06:org::x", prices, today).model == "gpt-4o"
    assert price_for("gpt-4o", prices, dt.date(2031, 1, 1)).per_million == 1.0
    assert price_for("gpt-4", prices, today) is None


def test_stats_count_the_images_of_a_vision_file(tmp_path: Path, run) -> None:
    examples = [vision_chat(i) for i in range(12)]
    source = write_jsonl(tmp_path / "vision.jsonl", examples)
    tokens = _expected(examples)  # the counter adds each image's cost to its text

    result = run("stats", source, "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["examples"] == 12 and data["over_limit"] == 0
    assert (data["tokens"]["min"], data["tokens"]["max"]) == (tokens[0], tokens[-1])
    text_only = _expected([chat(i) for i in range(12)])
    assert [a - b for a, b in zip(tokens, text_only, strict=True)] == [1105] * 12
