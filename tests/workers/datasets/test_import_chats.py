"""import-chats: conversation tables to prompt/completion or chat examples."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import openpyxl

from core.settings import load_behaviour
from tests.workers.datasets.helpers import DESIGN_CSV, EXPECTED_LINE, read_jsonl


def _outputs(folder: Path, stem: str) -> list[str]:
    lines: list[str] = []
    for name in (f"{stem}_train.jsonl", f"{stem}_valid.jsonl"):
        path = folder / name
        if path.exists():
            lines += path.read_text(encoding="utf-8").splitlines()
    return lines


def test_design_table_gives_the_exact_line_of_the_issue(tmp_path: Path, run) -> None:
    source = tmp_path / "chats.csv"
    source.write_text(DESIGN_CSV, encoding="utf-8")

    result = run("import-chats", source)

    assert result.exit_code == 0, result.output
    lines = _outputs(tmp_path, "chats")
    assert EXPECTED_LINE in lines
    assert len(lines) == 7  # one example per reply of the second actor
    assert "7 examples from 2 conversations (Human/AI)" in result.output
    # too few for OpenAI, said as a warning: the import itself succeeded
    assert "warning: too_few_examples" in result.output


def test_conversations_go_whole_to_one_side_of_the_split(tmp_path: Path, run) -> None:
    source = tmp_path / "chats.csv"
    source.write_text(DESIGN_CSV, encoding="utf-8")

    run("import-chats", source, "--validation-fraction", "0.5", "--seed", "1")

    for name in ("chats_train.jsonl", "chats_valid.jsonl"):
        path = tmp_path / name
        if not path.exists():
            continue
        firsts = {ex["prompt"].split("\n")[0] for ex in read_jsonl(path)}
        # each file holds whole conversations: their first lines are the openers
        assert firsts <= {"Human: Hello", "Human: Good morning", "Human: Can you read me the news?"}
    first = _outputs(tmp_path, "chats")
    run("import-chats", source, "--validation-fraction", "0.5", "--seed", "1")
    assert _outputs(tmp_path, "chats") == first  # same seed, same files


def test_bom_comma_and_padded_semicolon_exports(tmp_path: Path, run) -> None:
    comma = tmp_path / "comma.csv"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(
        row.split(";") for row in DESIGN_CSV.splitlines()
    )
    comma.write_bytes(b"\xef\xbb\xbf" + buffer.getvalue().encode())  # Excel's "CSV UTF-8"
    padded = tmp_path / "padded.csv"
    padded.write_text(DESIGN_CSV.replace(";", " ; "), encoding="utf-8")

    assert run("import-chats", comma, "--validation-fraction", "0").exit_code == 0
    result = run("import-chats", padded, "--csv-delimiter", " ; ", "--validation-fraction", "0")

    assert result.exit_code == 0, result.output
    assert EXPECTED_LINE in _outputs(tmp_path, "comma")
    assert EXPECTED_LINE in _outputs(tmp_path, "padded")
    assert not (tmp_path / "comma_valid.jsonl").exists()


def test_buffer_zero_gives_empty_prompts_and_no_stop_option(tmp_path: Path, run) -> None:
    source = tmp_path / "voice.csv"
    source.write_text(DESIGN_CSV, encoding="utf-8")

    run(
        "import-chats",
        source,
        "--buffer-size",
        "0",
        "--no-include-stop",
        "--validation-fraction",
        "0",
    )

    examples = read_jsonl(tmp_path / "voice_train.jsonl")
    assert [ex["prompt"] for ex in examples] == [""] * 7
    assert examples[-1]["completion"] == " Yeah"


def test_buffer_size_limits_the_context(tmp_path: Path, run) -> None:
    source = tmp_path / "short.csv"
    source.write_text(DESIGN_CSV, encoding="utf-8")

    run("import-chats", source, "--buffer-size", "1", "--validation-fraction", "0")

    last = read_jsonl(tmp_path / "short_train.jsonl")[-1]
    assert last == {"prompt": "Human: Oh okey\nAI:", "completion": " Yeah\nHuman: "}


def test_chat_format_with_system_prompt(tmp_path: Path, run) -> None:
    source = tmp_path / "chats.csv"
    source.write_text(DESIGN_CSV, encoding="utf-8")

    run(
        "import-chats",
        source,
        "--format",
        "chat",
        "--system",
        "Be brief.",
        "--validation-fraction",
        "0",
    )

    last = read_jsonl(tmp_path / "chats_train.jsonl")[-1]
    assert last["messages"][0] == {"role": "system", "content": "Be brief."}
    assert last["messages"][1:] == [
        {"role": "user", "content": "Can you read me the news?"},
        {"role": "assistant", "content": "No, I can't"},
        {"role": "user", "content": "Is there something you can do?"},
        {"role": "assistant", "content": "You should know"},
        {"role": "user", "content": "Oh okey"},
        {"role": "assistant", "content": "Yeah"},
    ]


def test_chat_format_defaults_to_the_configured_system_prompt(tmp_path: Path, run) -> None:
    source = tmp_path / "chats.csv"
    source.write_text(DESIGN_CSV, encoding="utf-8")

    run("import-chats", source, "--format", "chat", "--validation-fraction", "0")

    first = read_jsonl(tmp_path / "chats_train.jsonl")[0]
    assert first["messages"][0]["content"] == load_behaviour().model.system_prompt


def test_xlsx_table(tmp_path: Path, run) -> None:
    source = tmp_path / "chats.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in DESIGN_CSV.splitlines():
        sheet.append(row.split(";"))
    workbook.save(source)

    result = run("import-chats", source, "--validation-fraction", "0")

    assert result.exit_code == 0, result.output
    assert EXPECTED_LINE in _outputs(tmp_path, "chats")


def test_row_with_too_many_cells_names_file_and_line(tmp_path: Path, run) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(DESIGN_CSV.replace("Oh okey;Yeah", "Oh okey;Yeah;extra"), encoding="utf-8")

    result = run("import-chats", source)

    assert result.exit_code == 1
    assert f"{source}:9: 3 cells but the header has 2 columns" in result.stderr
    assert not list(tmp_path.glob("bad_*.jsonl"))
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind


def test_header_must_name_two_actors(tmp_path: Path, run) -> None:
    source = tmp_path / "three.csv"
    source.write_text("Human;AI;Narrator\nHi;Hello;...\n", encoding="utf-8")

    result = run("import-chats", source)

    assert result.exit_code == 1
    assert f"{source}:1: expected a header with the two actors' names" in result.stderr


def test_latin1_file_is_refused_clearly(tmp_path: Path, run) -> None:
    source = tmp_path / "latin.csv"
    source.write_bytes("Human;AI\nÇa va?;Très bien\n".encode("latin-1"))

    result = run("import-chats", source)

    assert result.exit_code == 1
    assert f"{source}:2: not UTF-8 text (byte 0xc7 at column 1)" in result.stderr
    assert "Latin-1" in result.stderr


def test_import_output_is_valid_for_prepare(tmp_path: Path, run) -> None:
    rows = ["Human;AI"]
    for i in range(12):
        rows += [f"Question {i}?;Answer number {i}", "###;###"]
    source = tmp_path / "many.csv"
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")

    run("import-chats", source, "--validation-fraction", "0")
    result = run("prepare", tmp_path / "many_train.jsonl", "--check")

    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "many_train.jsonl").read_text().splitlines()[0]) == {
        "prompt": "Human: Question 0?\nAI:",
        "completion": " Answer number 0\nHuman: ",
    }
