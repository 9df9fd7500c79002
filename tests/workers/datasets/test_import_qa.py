"""import-qa: question/answer tables to chat examples."""

from __future__ import annotations

import csv
from pathlib import Path

import openpyxl

from core.settings import load_behaviour
from tests.workers.datasets.helpers import read_jsonl
from workers.datasets.importers import numbered_items


def _write_csv(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)
    return path


def test_pairs_become_chat_examples_with_the_system_prompt(tmp_path: Path, run) -> None:
    source = _write_csv(
        tmp_path / "faq.csv",
        [["Question", "Answer"], ["How do I reset my password?", "Use the self-service page."]],
    )

    result = run("import-qa", source, "--validation-fraction", "0")

    assert result.exit_code == 0, result.output
    (example,) = read_jsonl(tmp_path / "faq_train.jsonl")
    assert example == {
        "messages": [
            {"role": "system", "content": load_behaviour().model.system_prompt},
            {"role": "user", "content": "How do I reset my password?"},
            {"role": "assistant", "content": "Use the self-service page."},
        ]
    }


def test_numbered_pairs_in_one_cell_short_pairs_and_stop(tmp_path: Path, run) -> None:
    source = _write_csv(
        tmp_path / "qa.csv",
        [
            ["Q", "A", "Owner"],
            ["1. What is X?\n2. What is Y?\n3. And Z?", "1) X is a tool\n2) Y is\na service", "me"],
            ["Hi", "-", "me"],
            ["Where are the logs?", "In /var/log.", "me"],
        ],
        delimiter=";",
    )

    result = run(
        "import-qa",
        source,
        "--question-column",
        "q",
        "--answer-column",
        "A",
        "--min-length",
        "3",
        "--stop",
        " END",
        "--system",
        "",
        "--validation-fraction",
        "0",
    )

    assert result.exit_code == 0, result.output
    examples = read_jsonl(tmp_path / "qa_train.jsonl")
    assert [ex["messages"] for ex in examples] == [
        [
            {"role": "user", "content": "What is X?"},
            {"role": "assistant", "content": "X is a tool END"},
        ],
        [
            {"role": "user", "content": "What is Y?"},
            {"role": "assistant", "content": "Y is\na service END"},
        ],
        [
            {"role": "user", "content": "Where are the logs?"},
            {"role": "assistant", "content": "In /var/log. END"},
        ],
    ]
    # line numbers are the file's: the quoted multi-line cells of row 2 span lines 2-6
    assert "dropped 1 pairs shorter than 3 characters (line 7)" in result.output
    assert "dropped 1 numbered items without a partner (line 2)" in result.output


def test_xlsx_q_and_a(tmp_path: Path, run) -> None:
    source = tmp_path / "faq.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["question", "answer"])
    for i in range(12):
        sheet.append([f"What is item {i}?", f"Item {i} is number {i}"])
    sheet.append([None, None])  # an empty row in the middle is skipped
    sheet.append(["How many?", 12])  # a number cell becomes text
    workbook.save(source)

    result = run("import-qa", source, "--validation-fraction", "0.25", "--seed", "3")

    assert result.exit_code == 0, result.output
    train = read_jsonl(tmp_path / "faq_train.jsonl")
    valid = read_jsonl(tmp_path / "faq_valid.jsonl")
    assert len(train) + len(valid) == 13
    assert valid, "a quarter of 13 pairs should give some validation examples"
    answers = [ex["messages"][-1]["content"] for ex in train + valid]
    assert "12" in answers


def test_missing_column_names_the_option(tmp_path: Path, run) -> None:
    source = _write_csv(tmp_path / "faq.csv", [["prompt", "reply"], ["a", "b"]])

    result = run("import-qa", source)

    assert result.exit_code == 1
    assert (
        f"{source}:1: no 'question' column (columns: prompt, reply); name it with --question-column"
    ) in result.stderr


def test_numbered_items_rules() -> None:
    assert numbered_items("1. a\n2. b") == {1: "a", 2: "b"}
    assert numbered_items("1) a\ncontinued\n2) b") == {1: "a\ncontinued", 2: "b"}
    assert numbered_items("just text") is None
    assert numbered_items("1. only one") is None
    assert numbered_items("intro\n1. a\n2. b") is None
    assert numbered_items("1. a\n1. again") is None
