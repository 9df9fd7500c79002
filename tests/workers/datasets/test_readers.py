"""Every input format, encodings, and bad input: one line with file and line, no output."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import openpyxl
import pytest

from tests.workers.datasets.helpers import chat, completion, write_jsonl
from workers.datasets.output import AtomicOutputs
from workers.datasets.readers import JsonReader, Records

EXAMPLES = [completion(i) for i in range(12)]


def _table(path: Path, delimiter: str) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["Prompt", "Completion"])  # column names are case-insensitive
        writer.writerows([ex["prompt"], ex["completion"]] for ex in EXAMPLES)
    return path


def _xlsx(path: Path) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["prompt", "completion"])
    for ex in EXAMPLES:
        sheet.append([ex["prompt"], ex["completion"]])
    workbook.create_sheet("notes")
    workbook.save(path)
    return path


BUILDERS = {
    "data.jsonl": lambda p: write_jsonl(p, EXAMPLES),
    "data.csv": lambda p: _table(p, ","),
    "data.tsv": lambda p: _table(p, "\t"),
    "data.xlsx": _xlsx,
    "data.json": lambda p: p.write_text(json.dumps(EXAMPLES, indent=2), encoding="utf-8") and p,
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_format_prepares_to_the_same_jsonl(name: str, tmp_path: Path, run) -> None:
    source = BUILDERS[name](tmp_path / name)

    result = run("prepare", source)

    assert result.exit_code == 0, result.output + result.stderr
    prepared = (tmp_path / "data_prepared.jsonl").read_text(encoding="utf-8")
    assert prepared == "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in EXAMPLES)
    if name == "data.xlsx":
        assert "reading only the first, 'Sheet'" in result.output


def test_bom_jsonl_and_json_lines_in_a_json_file(tmp_path: Path, run) -> None:
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(
        b"\xef\xbb\xbf" + "".join(json.dumps(chat(i)) + "\n" for i in range(12)).encode()
    )
    lines = tmp_path / "lines.json"
    lines.write_text("".join(json.dumps(chat(i)) + "\n" for i in range(12)), encoding="utf-8")

    assert run("prepare", bom, "--check").exit_code == 0
    assert run("prepare", lines, "--check").exit_code == 0


def test_json_array_is_streamed_across_chunk_boundaries(tmp_path: Path) -> None:
    items = [chat(i) for i in range(50)] + [{"messages": [{"role": "user", "content": "x" * 500}]}]
    path = tmp_path / "array.json"
    path.write_text(
        "[\n" + ",\n".join(json.dumps(item) for item in items) + "\n]\n", encoding="utf-8"
    )

    read = list(JsonReader(path, chunk_size=64))

    assert [value for _, value in read] == items
    assert [line for line, _ in read] == list(range(2, 53))


def test_messages_column_in_a_table(tmp_path: Path, run) -> None:
    path = tmp_path / "chats.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["messages"])
        writer.writerows([json.dumps(chat(i)["messages"])] for i in range(12))

    result = run("prepare", path)

    assert result.exit_code == 0, result.output
    assert "chat format" in result.output


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "bad.jsonl",
            '{"prompt": "a", "completion": " b"}\n\n{"prompt": "a" "completion": " b"}\n',
            "bad.jsonl:3: not valid JSON: Expecting ',' delimiter (column 16)",
        ),
        (
            "latin.jsonl",
            '{"prompt": "a", "completion": " b"}\n{"prompt": "caf\xe9", "completion": " b"}\n',
            "latin.jsonl:2: not UTF-8 text (byte 0xe9 at column 16): it looks like "
            "Latin-1/Windows-1252 text; save the file as UTF-8",
        ),
        (
            "open.json",
            '[{"prompt": "a", "completion": " b"},\n {"prompt": "c", "completion": " d"}\n',
            "open.json:3: not valid JSON: the array is not closed",
        ),
        (
            "broken.json",
            '[{"prompt": "a", "completion": " b"},\n {"prompt": "c" "completion": " d"}]\n',
            "broken.json:2: not valid JSON: Expecting ',' delimiter (column 17)",
        ),
        (
            "missing.csv",
            "prompt,answer\na,b\n",
            "missing.csv:1: a completion column missing; columns are: prompt, answer",
        ),
        (
            "quote.csv",
            'prompt,completion\n"a,b\n',
            "quote.csv:2: bad CSV: unexpected end of data",
        ),
        ("notes.txt", "hello\n", "notes.txt: unsupported file type .txt"),
    ],
)
def test_bad_input_is_one_line_with_file_and_line(
    name: str, content: str, message: str, tmp_path: Path, run
) -> None:
    source = tmp_path / name
    source.write_bytes(content.encode("latin-1") if "latin" in name else content.encode())
    previous = tmp_path / f"{source.stem}_prepared.jsonl"
    previous.write_text("previous run\n", encoding="utf-8")

    result = run("prepare", source, "--fix")

    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert previous.read_text(encoding="utf-8") == "previous run\n"  # untouched
    assert not list(tmp_path.glob(".*.tmp"))


def test_utf16_is_refused(tmp_path: Path, run) -> None:
    source = tmp_path / "wide.tsv"
    source.write_bytes("prompt\tcompletion\na\t b\n".encode("utf-16"))

    result = run("prepare", source)

    assert result.exit_code == 1
    assert "wide.tsv:1: the file is UTF-16 text: save it as UTF-8" in result.stderr


def test_outputs_appear_whole_or_not_at_all(tmp_path: Path) -> None:
    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train.write_text("old\n", encoding="utf-8")

    with pytest.raises(RuntimeError), AtomicOutputs() as outputs:
        outputs.open(train).write("new\n")
        outputs.open(valid).write("new\n")
        raise RuntimeError("disk full, say")

    assert train.read_text(encoding="utf-8") == "old\n"
    assert not valid.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]

    with AtomicOutputs() as outputs:
        outputs.open(train).write("new\n")
        outputs.commit()
    assert train.read_text(encoding="utf-8") == "new\n"


def test_records_give_file_lines_of_table_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('prompt,completion\n"two\nlines", x\n\nb, y\n', encoding="utf-8")

    assert [(line, obj["prompt"]) for line, obj in Records(path)] == [(2, "two\nlines"), (5, "b")]
