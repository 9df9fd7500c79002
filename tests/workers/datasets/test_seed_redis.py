"""load and --to-redis: validated examples go into the real approved-example log once."""

from __future__ import annotations

from pathlib import Path

from redis import Redis

from core import approved, keys
from core.settings import load_behaviour
from tests.workers.datasets.helpers import DESIGN_CSV, chat, completion, write_jsonl


def _logged(redis: Redis) -> list[approved.Example]:
    return [example for _, example in approved.read_after(redis)]


def test_load_twice_adds_each_example_once(
    tmp_path: Path, run, redis_conn: Redis, redis_url: str
) -> None:
    source = write_jsonl(tmp_path / "seed.jsonl", [chat(i) for i in range(12)])

    first = run("load", source, "--redis-url", redis_url)
    second = run("load", source, "--redis-url", redis_url)

    assert first.exit_code == 0, first.output + first.stderr
    assert "12 added, 0 already there" in first.output
    assert "0 added, 12 already there" in second.output
    logged = _logged(redis_conn)
    assert len(logged) == 12
    assert {example.source for example in logged} == {"import:seed.jsonl"}
    assert {example.approved_by for example in logged} == {"cli"}
    assert logged[3].messages == chat(3)["messages"]


def test_load_takes_the_url_from_the_environment(
    tmp_path: Path, run, redis_conn: Redis, redis_url: str, monkeypatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    source = write_jsonl(tmp_path / "seed.jsonl", [chat(i) for i in range(3)])

    result = run("load", source)

    assert result.exit_code == 0, result.stderr
    assert redis_conn.xlen(keys.APPROVED_LOG) == 3


def test_completion_file_is_loaded_as_chat(
    tmp_path: Path, run, redis_conn: Redis, redis_url: str
) -> None:
    source = write_jsonl(tmp_path / "legacy.jsonl", [completion(i) for i in range(12)])

    result = run("load", source, "--redis-url", redis_url)

    assert result.exit_code == 0, result.stderr
    first = _logged(redis_conn)[0]
    assert first.messages == [
        {"role": "system", "content": load_behaviour().model.system_prompt},
        {"role": "user", "content": "Ticket 0: deploy build test"},
        {"role": "assistant", "content": "handle deploy build test 0"},
    ]


def test_invalid_file_loads_nothing_unless_asked(
    tmp_path: Path, run, redis_conn: Redis, redis_url: str
) -> None:
    items = [chat(i) for i in range(12)]
    items[4] = {"messages": [{"role": "user", "content": "no answer"}]}
    source = write_jsonl(tmp_path / "mixed.jsonl", items)

    refused = run("load", source, "--redis-url", redis_url)

    assert refused.exit_code == 1
    assert "1 invalid examples in mixed.jsonl: nothing loaded" in refused.stderr
    assert redis_conn.xlen(keys.APPROVED_LOG) == 0

    loaded = run("load", source, "--redis-url", redis_url, "--skip-invalid")

    assert loaded.exit_code == 0
    assert "11 added" in loaded.output
    assert redis_conn.xlen(keys.APPROVED_LOG) == 11


def test_import_chats_to_redis(tmp_path: Path, run, redis_conn: Redis, redis_url: str) -> None:
    source = tmp_path / "chats.csv"
    source.write_text(DESIGN_CSV, encoding="utf-8")

    first = run(
        "import-chats", source, "--to-redis", "--redis-url", redis_url, "--system", "Be brief."
    )
    again = run(
        "import-chats", source, "--to-redis", "--redis-url", redis_url, "--system", "Be brief."
    )

    assert first.exit_code == 0, first.stderr
    assert "7 added, 0 already there" in first.output
    assert "0 added, 7 already there" in again.output
    last = _logged(redis_conn)[-1]
    assert last.source == "import:chats.csv"
    assert last.messages[0] == {"role": "system", "content": "Be brief."}
    assert last.messages[-1] == {"role": "assistant", "content": "Yeah"}


def test_import_qa_to_redis(tmp_path: Path, run, redis_conn: Redis, redis_url: str) -> None:
    source = tmp_path / "faq.csv"
    source.write_text(
        "question,answer\nWhere are logs?,In /var/log\nWho owns it?,Ops\n", encoding="utf-8"
    )

    result = run("import-qa", source, "--to-redis", "--redis-url", redis_url)

    assert result.exit_code == 0, result.stderr
    assert [ex.messages[1]["content"] for ex in _logged(redis_conn)] == [
        "Where are logs?",
        "Who owns it?",
    ]


def test_unreachable_redis_is_one_line_and_writes_nothing(tmp_path: Path, run) -> None:
    source = tmp_path / "chats.csv"
    source.write_text(DESIGN_CSV, encoding="utf-8")

    result = run(
        "import-chats", source, "--to-redis", "--redis-url", "redis://:secret@127.0.0.1:1/0"
    )

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot reach Redis at redis://:***@127.0.0.1:1/0")
    assert "secret" not in result.stderr
    assert not (tmp_path / "chats_train.jsonl").exists()
