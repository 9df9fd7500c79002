"""Big files: memory does not grow with the file, workers agree with one process."""

from __future__ import annotations

import json
import threading
import tracemalloc
from pathlib import Path

from core.examples import CachedCounter
from core.tokens import counter_for_model
from workers.datasets.analysis import analyze


def _generate(path: Path, n: int, *, defects: bool = False) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            messages = [
                {"role": "system", "content": "You help."},
                {"role": "user", "content": f"q {i}"},
                {"role": "assistant", "content": f"a {i}"},
            ]
            if defects and i % 997 == 5:
                messages = messages[:2]  # no assistant message
            if defects and i % 1013 == 7:
                messages[1]["content"] = "q 3"  # duplicate of line 4
                messages[2]["content"] = "a 3"
            if defects and i % 1500 == 9:
                messages[1]["role"] = "Human"
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


def _peak(path: Path) -> int:
    counter = CachedCounter(counter_for_model("gpt-4o-mini"))
    tracemalloc.start()
    try:
        analysis = analyze(path, "chat", counter, 65536, jobs=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert analysis.examples == sum(1 for _ in path.open(encoding="utf-8"))
    return peak


def test_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    small = _peak(_generate(tmp_path / "small.jsonl", 5_000))
    big_file = _generate(tmp_path / "big.jsonl", 50_000)
    big = _peak(big_file)

    # ten times the lines: at most the fixed caches more (duplicate buckets: 512 KiB),
    # far below what holding the examples would take
    assert big < small + 1.5 * 1024 * 1024, (small, big)
    assert big < 2 * small, (small, big)
    assert big < big_file.stat().st_size / 2, (big, big_file.stat().st_size)


def test_parallel_workers_give_the_same_analysis(tmp_path: Path) -> None:
    path = _generate(tmp_path / "defects.jsonl", 12_000, defects=True)
    counter = CachedCounter(counter_for_model("gpt-4o-mini"))

    one = analyze(path, "chat", counter, 65536, jobs=1)
    many = analyze(path, "chat", counter, 65536, jobs=3, parallel_min_bytes=0)

    def summary(analysis):  # everything the reports use
        return (
            analysis.examples,
            analysis.invalid,
            analysis.kept,
            analysis.kept_lines,
            {code: (t.count, t.lines, t.sample) for code, t in analysis.tallies.items()},
            analysis.token_hist,
            analysis.tokens_total,
            analysis.trained_total,
            list(analysis.duplicates.lines),
        )

    assert summary(many) == summary(one)
    assert one.duplicates.count == 12
    assert one.tallies["example_missing_assistant_message"].lines == [6, 1003, 2000]


def test_malformed_line_in_a_worker_reports_the_absolute_line(tmp_path: Path) -> None:
    path = _generate(tmp_path / "bad.jsonl", 9_000)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[7_654] = '{"messages": [}'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    counter = CachedCounter(counter_for_model("gpt-4o-mini"))

    try:
        analyze(path, "chat", counter, 65536, jobs=3, parallel_min_bytes=0)
    except Exception as exc:  # noqa: BLE001 - the message is what matters
        assert f"{path}:7655: not valid JSON" in str(exc)
    else:
        raise AssertionError("the malformed line was not reported")


def test_progress_bar_on_request(tmp_path: Path, run) -> None:
    path = _generate(tmp_path / "progress.jsonl", 50)

    result = run("prepare", path, "--progress", "--check")

    assert result.exit_code == 0
    assert "checking progress.jsonl" in result.stderr


def test_parallel_workers_start_safely_beside_other_threads(tmp_path: Path) -> None:
    """A process with other threads (a host embedding the tool, a test runner) must not
    fork its workers: a child could inherit a lock one of those threads holds and hang.
    It gets the same analysis from workers started by a fork server."""
    busy = threading.Event()
    other = threading.Thread(target=busy.wait, daemon=True)
    other.start()
    try:
        path = _generate(tmp_path / "defects.jsonl", 3_000, defects=True)
        counter = CachedCounter(counter_for_model("gpt-4o-mini"))
        one = analyze(path, "chat", counter, 65536, jobs=1)
        many = analyze(path, "chat", counter, 65536, jobs=2, parallel_min_bytes=0)
    finally:
        busy.set()
    assert (many.examples, many.kept, many.tokens_total) == (
        one.examples,
        one.kept,
        one.tokens_total,
    )
    assert many.tallies.keys() == one.tallies.keys()
