"""What real dataset files contain: tool calls, other base models, role synonyms,
capitalised keys, preference pairs, broken escapes, and what --fix leaves behind.

Every test writes a real file and runs the real command line.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from core.pricing import default_epochs
from core.tokens import counter_for_encoding
from tests.workers.datasets.helpers import chat, completion, read_jsonl, write_jsonl

COUNTER = counter_for_encoding("o200k_base")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather of a city, as reported by the national service.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city's name."}},
            "required": ["city"],
        },
    },
}


def _codes(output: str) -> set[str]:
    """The finding codes a report names (``error: <code>:`` / ``warning: <code>:``)."""
    return set(re.findall(r"(?:error|warning): ([a-z_]+):", output))


def _fixed_codes(output: str) -> set[str]:
    """The codes a report offered a fix for (the finding's line, then ``fix: ...``)."""
    return set(re.findall(r"(?:error|warning): ([a-z_]+):[^\n]*\n +fix: ", output))


def _tool_chat(i: int) -> dict[str, Any]:
    call = {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": f"Paris {i}"})},
    }
    return {
        "messages": [
            {"role": "system", "content": "You answer with the weather tool."},
            {"role": "user", "content": f"Weather in Paris {i}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": "sunny, 21 C"},
            {"role": "assistant", "content": f"It is sunny in Paris {i}."},
        ],
        "tools": [WEATHER_TOOL],
    }


def test_tool_calls_and_tool_definitions_count_in_tokens_and_against_the_limit(
    tmp_path: Path, run
) -> None:
    examples = [_tool_chat(i) for i in range(20)]
    source = write_jsonl(tmp_path / "tools.jsonl", examples)
    text_only = max(
        COUNTER.count_messages(
            [{k: v for k, v in m.items() if k != "tool_calls"} for m in ex["messages"]]
        )
        for ex in examples
    )

    stats = json.loads(run("stats", source, "--json").output)
    checked = run("prepare", source, "--check", "--max-tokens", text_only + 1)

    # The tool call and the tool definitions are text the model reads: without them the
    # examples would seem to fit in text_only + 1 tokens; with them, none does.
    assert stats["tokens"]["min"] > text_only + 1
    assert stats["invalid_examples"] == 0
    assert checked.exit_code == 1
    assert "too_many_tokens: 20 examples" in checked.output


def test_babbage_and_davinci_are_checked_against_their_own_limit(tmp_path: Path, run) -> None:
    examples = [completion(i) for i in range(20)]
    examples[4] = {"prompt": "Summarise:" + " word" * 17_000 + "\n\n###\n\n", "completion": " ok\n"}
    source = write_jsonl(tmp_path / "legacy.jsonl", examples)

    for model in ("babbage-002", "davinci-002"):
        result = run("prepare", source, "--check", "--model", model)
        assert result.exit_code == 1, result.output
        assert "too_many_tokens: 1 example (line 5)" in result.output
        assert "over the limit of 16,384" in result.output


def test_completion_data_for_a_chat_only_model_is_named_as_such(tmp_path: Path, run) -> None:
    source = write_jsonl(tmp_path / "legacy.jsonl", [completion(i) for i in range(20)])

    for_chat_model = run("prepare", source, "--check", "--model", "gpt-4o-mini-2024-07-18")
    for_babbage = run("prepare", source, "--check", "--model", "babbage-002")

    assert "format_not_for_model" in for_chat_model.output
    assert (
        "gpt-4o-mini-2024-07-18 trains on chat or preference examples only, and this is "
        "prompt/completion data" in for_chat_model.output
    )
    assert "format_not_for_model" not in for_babbage.output
    assert for_babbage.exit_code == 0, for_babbage.output


def test_fix_repairs_a_file_written_with_role_synonyms(tmp_path: Path, run) -> None:
    examples = []
    for i in range(20):
        messages = chat(i)["messages"]
        messages[1]["role"], messages[2]["role"] = "Human", "AI"
        examples.append({"messages": messages})
    source = write_jsonl(tmp_path / "synonyms.jsonl", examples)

    checked = run("prepare", source, "--check")
    fixed = run("prepare", source, "--fix")

    assert "unrecognized_role: 20 examples" in checked.output
    assert "example_missing_assistant_message" not in checked.output
    assert fixed.exit_code == 0, fixed.output
    written = read_jsonl(tmp_path / "synonyms_prepared.jsonl")
    assert len(written) == 20
    assert all(
        [m["role"] for m in ex["messages"]] == ["system", "user", "assistant"] for ex in written
    )


def test_capitalised_prompt_and_completion_keys_are_read_and_fixed(tmp_path: Path, run) -> None:
    rows = [
        {"Prompt": ex["prompt"], "Completion": ex["completion"]}
        for ex in map(completion, range(20))
    ]
    source = write_jsonl(tmp_path / "caps.jsonl", rows)

    checked = run("prepare", source, "--check", "--model", "babbage-002")
    fixed = run("prepare", source, "--fix", "--model", "babbage-002")

    assert "completion format" in checked.output
    assert "key_case: 20 examples" in checked.output
    assert "missing_key" not in checked.output
    assert fixed.exit_code == 0, fixed.output
    written = read_jsonl(tmp_path / "caps_prepared.jsonl")
    assert [sorted(row) for row in written] == [["completion", "prompt"]] * 20
    assert [row["prompt"] for row in written] == [completion(i)["prompt"] for i in range(20)]


def _pair(i: int, **extra: Any) -> dict[str, Any]:
    good = chat(i)["messages"]
    return {
        "input": {"messages": good[:2]},
        "preferred_output": [good[2]],
        "non_preferred_output": [{"role": "assistant", "content": f"No idea about {i}."}],
        **extra,
    }


def test_preference_files_get_token_stats_and_cost(tmp_path: Path, run) -> None:
    pairs = [_pair(i) for i in range(20)]
    source = write_jsonl(tmp_path / "dpo.jsonl", pairs)
    expected = sorted(
        COUNTER.count_messages(
            [
                *p["input"]["messages"],
                max(
                    p["preferred_output"],
                    p["non_preferred_output"],
                    key=lambda out: COUNTER.count(out[0]["content"]),
                )[0],
            ]
        )
        for p in pairs
    )

    data = json.loads(run("stats", source, "--json", "--epochs", "3").output)

    assert data["format"] == "preference"
    assert data["invalid_examples"] == 0
    assert (data["tokens"]["min"], data["tokens"]["max"]) == (expected[0], expected[-1])
    assert data["tokens"]["total"] == sum(expected)
    assert data["billed_tokens"] == 3 * sum(expected)
    assert data["price"]["estimated_usd"] == round(3 * sum(expected) / 1e6 * 3.0, 2)
    both = sum(
        COUNTER.count(p["preferred_output"][0]["content"])
        + COUNTER.count(p["non_preferred_output"][0]["content"])
        for p in pairs
    )
    assert data["assistant_tokens"] == both


def test_prepare_fix_keeps_the_lines_of_a_preference_file(tmp_path: Path, run) -> None:
    pairs = [_pair(i) for i in range(20)]
    pairs[3] = _pair(3, note="from the review tool")
    pairs[5]["input"]["messages"][1]["role"] = "human"
    source = write_jsonl(tmp_path / "dpo.jsonl", pairs)

    fixed = run("prepare", source, "--fix")

    assert fixed.exit_code == 0, fixed.output
    written = read_jsonl(tmp_path / "dpo_prepared.jsonl")
    assert written == [_pair(i) for i in range(20)]


def test_a_lone_surrogate_is_reported_with_its_line(tmp_path: Path, run) -> None:
    lines = [json.dumps(chat(i)) for i in range(20)]
    lines[2] = lines[2].replace("How do I", "How do I \\ud800")
    source = write_jsonl(tmp_path / "broken.jsonl", lines, raw=True)

    checked = run("prepare", source, "--check")
    fixed = run("prepare", source, "--fix")

    assert checked.exit_code == 1
    assert "invalid_text: 1 example (line 3)" in checked.output
    assert "internal error" not in checked.output + fixed.output
    assert fixed.exit_code == 0, fixed.output
    assert len(read_jsonl(tmp_path / "broken_prepared.jsonl")) == 19


def _messy_chats() -> list[Any]:
    items: list[Any] = [chat(i) for i in range(30)]
    items[1] = {**chat(1), "source": "export"}  # unrecognized_key
    items[2]["messages"][1]["role"] = "human"  # unrecognized_role
    items[3]["messages"][2]["mood"] = "calm"  # message_unrecognized_key
    items[4] = chat(4, system=False)  # missing_system_message
    items[5]["messages"][2]["weight"] = 3  # invalid_weight
    items[6]["messages"][1]["content"] = 12345  # content_wrong_type
    items[7] = chat(0)  # duplicate_example
    items[8] = {"messages": [chat(8)["messages"][1]]}  # example_missing_assistant_message
    items[9]["messages"][1]["role"] = "customer"  # a synonym turning the line into a copy
    items[9]["messages"][1]["content"] = chat(10)["messages"][1]["content"]
    items[9]["messages"][2]["content"] = chat(10)["messages"][2]["content"]
    return items


def _messy_completions() -> list[Any]:
    items: list[Any] = [
        {
            "prompt": f"Please classify this ticket: number {i} about {w}",
            "completion": f"handled {w} {i}",
        }
        for i, w in enumerate(["disk", "login", "network", "billing", "mail"] * 6)
    ]
    items[3] = {**items[3], "notes": "x"}
    items[4] = items[5]
    return items


@pytest.mark.parametrize(
    ("name", "items", "args"),
    [
        ("chats", _messy_chats(), ["--system", "You answer ops questions."]),
        ("completions", _messy_completions(), ["--model", "babbage-002"]),
        ("no_system_prompt", [chat(i, system=False) for i in range(20)], ["--system", ""]),
    ],
)
def test_fix_output_passes_check_with_nothing_the_fix_resolved(
    tmp_path: Path, run, name: str, items: list[Any], args: list[str]
) -> None:
    source = write_jsonl(tmp_path / f"{name}.jsonl", items)

    first = run("prepare", source, "--fix", *args)
    second = run("prepare", tmp_path / f"{name}_prepared.jsonl", "--check", *args)

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    resolved = _fixed_codes(first.output) & _codes(second.output)
    assert not resolved, f"--fix left {resolved}:\n{second.output}"


def test_outputs_get_the_usual_permissions(tmp_path: Path, run) -> None:
    source = write_jsonl(tmp_path / "data.jsonl", [chat(i) for i in range(20)])
    previous = os.umask(0o022)
    try:
        result = run("prepare", source, "--fix", "--split", "--validation-fraction", "0.3")
    finally:
        os.umask(previous)

    assert result.exit_code == 0, result.output
    for path in (tmp_path / "data_prepared.jsonl", tmp_path / "data_prepared_valid.jsonl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_epochs_count_examples_over_the_limit_as_the_cookbook_does(tmp_path: Path, run) -> None:
    examples = [chat(i) for i in range(26)]
    examples[7]["messages"][1]["content"] = "long question " * 60
    source = write_jsonl(tmp_path / "data.jsonl", examples)
    tokens = sorted(COUNTER.count_messages(ex["messages"]) for ex in examples)
    limit = tokens[-2] + 1  # only the long one is over

    data = json.loads(run("stats", source, "--json", "--max-tokens", limit).output)

    # The cookbook truncates the long example and trains on all 26: 3 epochs, not the 4
    # that 25 examples would get.
    assert data["over_limit"] == 1
    assert data["epochs"] == default_epochs(26) == 3
    assert data["billed_tokens"] == 3 * (sum(tokens[:-1]) + limit)


def test_data_for_the_local_trainer_may_not_hold_tool_turns(tmp_path: Path, run) -> None:
    source = write_jsonl(tmp_path / "tools.jsonl", [_tool_chat(i) for i in range(20)])
    config = tmp_path / "settings.yaml"
    settings = (Path(__file__).parents[3] / "config" / "settings.yaml").read_text()
    config.write_text(settings.replace("backend: openai", "backend: local", 1))

    for_openai = run("prepare", source, "--check")
    for_local = run("--config", config, "prepare", source, "--check")

    assert for_openai.exit_code == 0, for_openai.output
    assert for_local.exit_code == 1
    assert "not_trainable_by_trainer: 20 examples" in for_local.output
    assert "cannot be trained by the local LoRA trainer" in for_local.output
