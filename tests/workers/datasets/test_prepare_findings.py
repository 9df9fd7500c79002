"""prepare: one broken file per finding, reported with count and lines, and repaired.

Each case writes a file with exactly one kind of defect, checks that ``prepare --check``
names it with the right number of examples and lines (and the right exit status), and
that ``prepare --fix`` writes a file in which the defect is gone when it has a fix.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.examples import Code
from core.settings import load_behaviour
from tests.workers.datasets.helpers import (
    chat,
    completion,
    read_jsonl,
    vision_chat,
    write_jsonl,
)


def _chats(changes: dict[int, Any], n: int = 20) -> Callable[[Path], Path]:
    """20 good chat lines, with line ``k + 1`` replaced by ``changes[k]``."""

    def build(folder: Path) -> Path:
        items: list[Any] = [chat(i) for i in range(n)]
        for index, value in changes.items():
            items[index] = value(items[index]) if callable(value) else value
        return write_jsonl(folder / "data.jsonl", items)

    return build


def _completions(
    change: Callable[[int, dict[str, Any]], Any], n: int = 20
) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        items = [change(i, completion(i)) for i in range(n)]
        return write_jsonl(folder / "data.jsonl", [item for item in items if item is not None])

    return build


def _user(content: Any = "question", **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content, **extra}


def _assistant(content: Any = "answer", **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **extra}


def _csv_with_notes(folder: Path) -> Path:
    path = folder / "data.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "completion", "notes"])
        for i in range(20):
            example = completion(i)
            writer.writerow([example["prompt"], example["completion"], f"note {i}"])
    return path


@dataclass
class Case:
    code: Code
    build: Callable[[Path], Path]
    where: str  # the "<n> examples (lines ...)" part of the report line
    rejected: bool
    fixed: bool = True
    args: list[str] = field(default_factory=list)


def _with(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda example: {**example, **fields}


CASES = [
    # images: never a link to a private Slack file, only what OpenAI's vision tuning takes
    Case(
        Code.SLACK_IMAGE_URL,
        _chats({2: vision_chat(2, "https://files.slack.com/files-pri/T1-F2/shot.png")}),
        "1 example (line 3)",
        True,
    ),
    Case(
        Code.INVALID_IMAGE,
        _chats({3: vision_chat(3, "data:image/gif;base64,R0lGODlhAQABAAAAACw=")}),
        "1 example (line 4)",
        True,
    ),
    # chat examples: the cookbook's format errors
    Case(Code.DATA_TYPE, _chats({2: [1, 2]}), "1 example (line 3)", True),
    Case(Code.MISSING_MESSAGES_LIST, _chats({2: {"msgs": []}}), "1 example (line 3)", True),
    Case(
        Code.MESSAGE_DATA_TYPE,
        _chats({2: {"messages": ["hello", _assistant()]}}),
        "1 example (line 3)",
        True,
    ),
    Case(
        Code.MESSAGE_MISSING_KEY,
        _chats({2: {"messages": [{"role": "user"}, _assistant()]}}),
        "1 example (line 3)",
        True,
    ),
    Case(
        Code.MESSAGE_UNRECOGNIZED_KEY,
        _chats({4: {"messages": [_user(foo=1), _assistant()]}}),
        "1 example (line 5)",
        True,
    ),
    Case(
        Code.UNRECOGNIZED_ROLE,
        _chats(
            {
                k: {"messages": [{"role": "Human", "content": f"q{k}"}, _assistant()]}
                for k in (1, 3, 5, 7)
            }
        ),
        "4 examples (lines 2, 4, 6, ...)",
        True,
    ),
    Case(
        Code.MISSING_CONTENT,
        _chats({2: {"messages": [_user(""), _assistant()]}}),
        "1 example (line 3)",
        True,
    ),
    Case(
        Code.CONTENT_WRONG_TYPE,
        _chats({2: {"messages": [_user(), _assistant(42)]}}),
        "1 example (line 3)",
        True,
    ),
    Case(
        Code.INVALID_WEIGHT,
        _chats({2: {"messages": [_user(), _assistant(weight=2)]}}),
        "1 example (line 3)",
        True,
    ),
    Case(
        Code.EXAMPLE_MISSING_ASSISTANT_MESSAGE,
        _chats({2: {"messages": [{"role": "system", "content": "s"}, _user()]}}),
        "1 example (line 3)",
        True,
    ),
    Case(
        Code.MISSING_SYSTEM_MESSAGE,
        _chats({0: chat(0, system=False), 9: chat(9, system=False)}),
        "2 examples (lines 1, 10)",
        False,
    ),
    Case(
        Code.MISSING_USER_MESSAGE,
        _chats({2: {"messages": [{"role": "system", "content": "s"}, _assistant()]}}),
        "1 example (line 3)",
        False,
        fixed=False,
    ),
    Case(Code.UNRECOGNIZED_KEY, _chats({2: _with(id="x1")}), "1 example (line 3)", True),
    Case(
        Code.TOO_MANY_TOKENS,
        _chats({6: {"messages": [_user("word " * 200), _assistant()]}}),
        "1 example (line 7)",
        True,
        args=["--max-tokens", "100"],
    ),
    Case(Code.DUPLICATE_EXAMPLE, _chats({5: chat(4)}), "1 example (line 6)", False),
    Case(Code.FEW_EXAMPLES, _chats({}), "20 examples", False, fixed=False),
    # prompt/completion examples: the legacy tool's checks
    Case(
        Code.MISSING_KEY,
        _completions(lambda i, ex: {"prompt": ex["prompt"]} if i == 2 else ex),
        "1 example (line 3)",
        True,
    ),
    # file lines: each row's quoted prompt spans 6 lines ("...\n\n###\n\n")
    Case(Code.UNRECOGNIZED_KEY, _csv_with_notes, "20 examples (lines 2, 8, 14, ...)", True),
    Case(
        Code.EMPTY_COMPLETION,
        _completions(lambda i, ex: {**ex, "completion": ""} if i == 2 else ex),
        "1 example (line 3)",
        True,
    ),
    Case(
        Code.CONTENT_WRONG_TYPE,
        _completions(lambda i, ex: {**ex, "completion": 5} if i == 2 else ex),
        "1 example (line 3)",
        True,
    ),
    Case(
        Code.COMPLETION_LEADING_SPACE,
        _completions(
            lambda i, ex: {**ex, "completion": ex["completion"][1:]} if i in (3, 8) else ex
        ),
        "2 examples (lines 4, 9)",
        False,
    ),
    Case(
        Code.MISSING_PROMPT_SEPARATOR,
        _completions(lambda i, ex: {**ex, "prompt": ex["prompt"].strip() + f" {i}"}),
        "20 examples (lines 1, 2, 3, ...)",
        False,
    ),
    Case(
        Code.SEPARATOR_INSIDE_PROMPT,
        _completions(
            lambda i, ex: {**ex, "prompt": "a\n\n###\n\n" + ex["prompt"]} if i == 3 else ex
        ),
        "1 example (line 4)",
        False,
        fixed=False,
    ),
    Case(
        Code.IDENTICAL_PROMPTS,
        _completions(lambda i, ex: {**ex, "prompt": "Same\n\n###\n\n"}),
        "20 examples (lines 1, 2, 3, ...)",
        True,
        fixed=False,
    ),
    Case(
        Code.MISSING_STOP_SEQUENCE,
        _completions(lambda i, ex: {**ex, "completion": ex["completion"].rstrip()}),
        "20 examples (lines 1, 2, 3, ...)",
        False,
    ),
    Case(
        Code.STOP_INSIDE_COMPLETION,
        _completions(lambda i, ex: {**ex, "completion": " two\nlines\n"} if i == 4 else ex),
        "1 example (line 5)",
        False,
        fixed=False,
    ),
    Case(
        Code.IDENTICAL_COMPLETIONS,
        _completions(lambda i, ex: {**ex, "completion": " same\n"}),
        "20 examples (lines 1, 2, 3, ...)",
        True,
        fixed=False,
    ),
    Case(
        Code.COMMON_PROMPT_PREFIX,
        _completions(
            lambda i, ex: {**ex, "prompt": "Please classify this ticket: " + ex["prompt"]}
        ),
        "20 examples (lines 1, 2, 3, ...)",
        False,
    ),
    Case(
        Code.COMMON_COMPLETION_PREFIX,
        _completions(lambda i, ex: {**ex, "completion": " The answer is:" + ex["completion"]}),
        "20 examples (lines 1, 2, 3, ...)",
        False,
    ),
    Case(
        Code.MOSTLY_UPPERCASE,
        _completions(lambda i, ex: {**ex, "prompt": ex["prompt"].upper()}),
        "20 examples (lines 1, 2, 3, ...)",
        False,
        fixed=False,
    ),
    Case(
        Code.CLASS_IMBALANCE,
        _completions(lambda i, ex: {**ex, "completion": " no\n" if i % 10 == 0 else " yes\n"}, 30),
        "the largest class has 27 examples, the smallest 3",
        False,
        fixed=False,
    ),
    Case(
        Code.LABEL_NOT_SINGLE_TOKEN,
        _completions(
            lambda i, ex: {
                **ex,
                "completion": " very positive feedback\n" if i % 2 else " negative\n",
            },
            30,
        ),
        "15 examples (lines 2, ...)",  # the first line of each multi-token label
        False,
        fixed=False,
    ),
]


def _line_of(output: str, code: Code) -> str | None:
    for line in output.splitlines():
        if f": {code.value}: " in line:
            return line
    return None


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.code.value}")
def test_finding_is_reported_and_fixed(case: Case, tmp_path: Path, run) -> None:
    source = case.build(tmp_path)

    checked = run("prepare", source, "--check", *case.args)

    line = _line_of(checked.output, case.code)
    assert line is not None, checked.output
    assert case.where in line, line
    assert line.lstrip().startswith("error" if case.rejected else "warning"), line
    assert checked.exit_code == (1 if case.rejected else 0), checked.output

    fixed = run("prepare", source, "--fix", *case.args)

    if not case.rejected or case.fixed:
        assert fixed.exit_code == 0, fixed.output + fixed.stderr
        prepared = tmp_path / "data_prepared.jsonl"
        again = run("prepare", prepared, "--check", *case.args)
        assert again.exit_code == 0, again.output
        if case.fixed:
            assert _line_of(again.output, case.code) is None, again.output
    else:
        assert fixed.exit_code == 1
        assert "nothing written" in fixed.stderr
        assert not (tmp_path / "data_prepared.jsonl").exists()


def test_too_few_examples_are_refused_even_with_fix(tmp_path: Path, run) -> None:
    source = write_jsonl(tmp_path / "few.jsonl", [chat(i) for i in range(5)])

    checked = run("prepare", source, "--check")
    fixed = run("prepare", source, "--fix")

    assert checked.exit_code == 1
    assert (
        "error: too_few_examples: 5 usable examples; OpenAI requires at least 10" in checked.output
    )
    assert fixed.exit_code == 1
    assert "would be rejected by OpenAI (too_few_examples): nothing written" in fixed.stderr


def test_fixes_that_drop_below_ten_write_nothing(tmp_path: Path, run) -> None:
    items: list[Any] = [chat(i) for i in range(9)] + [{"messages": [_user()]}] * 3
    source = write_jsonl(tmp_path / "edge.jsonl", items)

    result = run("prepare", source, "--fix")

    assert result.exit_code == 1
    assert not (tmp_path / "edge_prepared.jsonl").exists()


def test_empty_file_is_refused(tmp_path: Path, run) -> None:
    source = tmp_path / "empty.jsonl"
    source.write_text("\n\n", encoding="utf-8")

    result = run("prepare", source, "--check")

    assert result.exit_code == 1
    assert "error: empty_file: the file holds no examples" in result.output


def test_without_fix_errors_block_and_nothing_is_written(tmp_path: Path, run) -> None:
    source = _chats({2: [1, 2]})(tmp_path)

    result = run("prepare", source)

    assert result.exit_code == 1
    assert "would be rejected by OpenAI (data_type): nothing written; re-run with --fix" in (
        result.stderr
    )
    assert not (tmp_path / "data_prepared.jsonl").exists()


def test_fix_results_in_detail(tmp_path: Path, run) -> None:
    source = _chats(
        {
            0: chat(0, system=False),
            1: {"messages": [{"role": "Human", "content": "hi"}, _assistant(7, weight=3)], "id": 1},
            2: {"messages": [{"role": "narrator", "content": "x"}, _assistant()]},
        }
    )(tmp_path)

    result = run("prepare", source, "--fix")

    assert result.exit_code == 0, result.output
    assert "19 examples" in result.output and "1 dropped" in result.output
    examples = read_jsonl(tmp_path / "data_prepared.jsonl")
    assert examples[0]["messages"][0] == {
        "role": "system",
        "content": load_behaviour().model.system_prompt,
    }
    assert examples[1] == {
        "messages": [
            {"role": "system", "content": load_behaviour().model.system_prompt},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "7"},
        ]
    }


def test_completion_fixes_follow_the_legacy_order(tmp_path: Path, run) -> None:
    source = _completions(
        lambda i, ex: {
            "prompt": f"Classify this ticket now: item {i}",
            "completion": f"The label: {chr(97 + i)}{i}",
        }
    )(tmp_path)

    result = run("prepare", source, "--fix")

    assert result.exit_code == 0, result.output
    first = read_jsonl(tmp_path / "data_prepared.jsonl")[0]
    # prefix removed, " ->" separator added, completion prefix removed, space and stop added
    assert first == {"prompt": "0 ->", "completion": " a0\n"}
    assert "after fine-tuning, end every prompt with ' ->'" in result.output
    assert "and pass stop=['\\n']" in result.output


def test_interactive_answers_choose_the_fixes(tmp_path: Path, run) -> None:
    source = _chats({0: chat(0, system=False), 3: chat(2)})(tmp_path)

    # first question: missing_system_message (no), second: duplicate_example (yes)
    result = run("prepare", source, "--interactive", input="n\ny\n")

    assert result.exit_code == 0, result.output
    assert "Fix missing_system_message (1 example): add the configured system prompt?" in (
        result.output
    )
    examples = read_jsonl(tmp_path / "data_prepared.jsonl")
    assert len(examples) == 19
    assert examples[0]["messages"][0]["role"] == "user"


def test_split_writes_a_validation_file(tmp_path: Path, run) -> None:
    source = write_jsonl(tmp_path / "big.jsonl", [chat(i) for i in range(200)])

    result = run("prepare", source, "--split", "--validation-fraction", "0.2", "--seed", "7")

    assert result.exit_code == 0, result.output
    train = read_jsonl(tmp_path / "big_prepared.jsonl")
    valid = read_jsonl(tmp_path / "big_prepared_valid.jsonl")
    assert len(train) + len(valid) == 200
    assert 20 <= len(valid) <= 60
    key = json.dumps
    assert not {key(x) for x in train} & {key(x) for x in valid}


def test_a_vision_file_passes_the_check(tmp_path: Path, run) -> None:
    source = write_jsonl(tmp_path / "vision.jsonl", [vision_chat(i) for i in range(12)])

    checked = run("prepare", source, "--check")

    assert checked.exit_code == 0, checked.output
    assert "error" not in checked.output, checked.output
