"""Building incremental training sets from the approved log in a real Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from core import approved, keys, pricing
from core.examples import Severity, check_chat_example, check_preference_example
from core.settings import Settings, TrainingMethod, load_behaviour
from core.tokens import counter_for_model
from workers import trainset

MODEL = "gpt-4o-mini-2024-07-18"
SYSTEM = "You are tuneloop, a helpful assistant."


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return configure(load_behaviour(), sets_dir=str(tmp_path / "sets"), replay_fraction=0.0)


def format_errors(check: Any, line: dict[str, Any]) -> list[str]:
    """The errors the training-data contract finds in a line (none: trainers accept it)."""
    findings = check(line, counter_for_model(MODEL), 65536)
    return [f.code.value for f in findings if f.severity is Severity.ERROR]


def configure(settings: Settings, **training: Any) -> Settings:
    """``settings`` with some training fields changed (``pii`` as a dict)."""
    pii = training.pop("pii", None)
    values = settings.training.model_copy(update=training)
    if pii is not None:
        values = values.model_copy(update={"pii": values.pii.model_copy(update=pii)})
    return settings.model_copy(update={"training": values})


def log(
    redis: Redis,
    question: str,
    answer: str,
    *,
    history: tuple[tuple[str, str], ...] = (),
    rejected: str | None = None,
    by: str = "auto",
) -> str | None:
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for user, assistant in history:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    example = approved.Example(messages=messages, source="slack", approved_by=by, rejected=rejected)
    return approved.append(redis, example)


def log_raw(redis: Redis, example: dict[str, Any]) -> None:
    """An example as a dataset import might have written it (no checks on the way in)."""
    redis.xadd(keys.APPROVED_LOG, {"example": json.dumps(example)})


def build(
    redis: Redis, settings: Settings, *, after: str = "0-0", min_train: int = 1
) -> trainset.TrainSet:
    set_id, version = trainset.next_version(redis)
    request = trainset.BuildRequest(
        set_id=set_id,
        version=version,
        after_id=after,
        upto_id=trainset.last_id(redis),
        base_model=MODEL,
        min_train=min_train,
    )
    return trainset.build(redis, settings, request)


def lines(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def everything(result: trainset.TrainSet) -> list[dict[str, Any]]:
    return lines(result.files.train_path) + lines(result.files.valid_path)


def test_lines_are_the_chat_as_the_bot_had_it_and_only_the_approved_turn_is_learned(
    redis_conn: Redis, settings: Settings
) -> None:
    log(
        redis_conn,
        "And on Linux?",
        "Use the CLI.",
        history=(("How do I install it?", "Run the installer."),),
    )
    result = build(redis_conn, configure(settings, validation_fraction=0.0))
    [line] = lines(result.files.train_path)
    assert line == {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "How do I install it?"},
            {"role": "assistant", "content": "Run the installer.", "weight": 0},
            {"role": "user", "content": "And on Linux?"},
            {"role": "assistant", "content": "Use the CLI."},
        ]
    }
    assert format_errors(check_chat_example, line) == []


def test_exact_and_near_exact_duplicates_are_dropped(redis_conn: Redis, settings: Settings) -> None:
    log(redis_conn, "Where is the guide?", "On the wiki, ask ann@example.com.")
    log(
        redis_conn, "Where is the guide?", "On the wiki, ask bob@example.org."
    )  # same once scrubbed
    log(redis_conn, "where is the GUIDE", "On the wiki -- ask ann@example.com!")  # near-exact
    log(redis_conn, "Where is the office?", "On the second floor.")
    result = build(redis_conn, configure(settings, validation_fraction=0.0))
    counts = result.manifest["counts"]
    assert counts["read"] == 4
    assert counts["exact_duplicates"] == 1 and counts["near_duplicates"] == 1
    assert counts["train"] == 2
    assert not redis_conn.exists(keys.trainset_seen(result.files.set_id)), "temporary set removed"


def test_secrets_pasted_into_a_conversation_never_reach_a_training_file(
    redis_conn: Redis, settings: Settings
) -> None:
    log(
        redis_conn,
        "Why does xoxb-1234-5678-abcdefgh fail with my key sk-proj-abcdefgh12345678?",
        "Rotate both: never paste tokens such as xapp-1-A0123-456 into chat.",
    )
    pii = {"emails": False, "phones": False, "cards": False, "slack_mentions": False}
    result = build(redis_conn, configure(settings, validation_fraction=0.0, pii=pii))
    text = result.files.train_path.read_text()
    for secret in ("xoxb-1234", "sk-proj-abcdefgh", "xapp-1-A0123"):
        assert secret not in text
    assert text.count("[redacted]") == 3
    assert result.manifest["pii_scrubbed"] == {"secrets": 3}


def test_pii_is_scrubbed_as_configured(redis_conn: Redis, settings: Settings) -> None:
    log(
        redis_conn,
        "I'm ann.lee@example.com, call me on +44 20 7946 0958 or (555) 123-4567. <@U012ABC> knows.",
        "Card 4111 1111 1111 1111 charged; 1234 5678 9012 3456 is not a card. gpt-4o-mini-2024-07-18 v2.3.",
    )
    result = build(redis_conn, configure(settings, validation_fraction=0.0))
    [line] = lines(result.files.train_path)
    user, assistant = line["messages"][1]["content"], line["messages"][2]["content"]
    assert user == "I'm [email], call me on [phone] or [phone]. @someone knows."
    assert assistant == (
        "Card [card] charged; 1234 5678 9012 3456 is not a card. gpt-4o-mini-2024-07-18 v2.3."
    )
    assert result.manifest["pii_scrubbed"] == {
        "emails": 1,
        "phones": 2,
        "slack_mentions": 1,
        "cards": 1,
    }

    cursor = trainset.last_id(redis_conn) or "0-0"
    log(redis_conn, "Mail?", "Write to desk@example.com")
    kept = build(
        redis_conn,
        configure(settings, validation_fraction=0.0, pii={"emails": False}),
        after=cursor,
    )
    assert "desk@example.com" in lines(kept.files.train_path)[0]["messages"][2]["content"]


def test_lines_failing_the_format_checks_are_left_out_and_counted(
    redis_conn: Redis, settings: Settings
) -> None:
    good = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    log_raw(redis_conn, {"messages": [{"role": "robot", "content": "x"}, good[1]]})
    log_raw(redis_conn, {"messages": [good[0]]})
    log_raw(redis_conn, {"messages": [good[0], {**good[1], "mood": "happy"}]})
    log_raw(redis_conn, {"messages": [good[0], {"role": "assistant", "content": None}]})
    log_raw(redis_conn, {"messages": [good[0], {"content": "a"}]})
    log_raw(redis_conn, {"messages": []})
    log_raw(redis_conn, {"messages": [good[0], {"role": "assistant", "content": "long " * 200}]})
    log_raw(redis_conn, {"messages": good})
    result = build(redis_conn, configure(settings, validation_fraction=0.0, max_example_tokens=100))
    assert result.manifest["issues"] == {
        "unrecognized_role": 1,
        "example_missing_assistant_message": 1,
        "message_unrecognized_key": 1,
        "missing_content": 1,
        "message_missing_key": 1,
        "missing_messages_list": 1,
        "too_many_tokens": 1,
    }
    assert result.manifest["counts"]["train"] == 1
    assert result.manifest["warnings"] == {"missing_system_message": 1}


def test_the_validation_split_never_overlaps_training_and_leaves_enough_to_train(
    redis_conn: Redis, settings: Settings
) -> None:
    for i in range(30):
        log(redis_conn, f"Question {i}?", f"Answer {i}.")
    result = build(redis_conn, configure(settings, validation_fraction=0.2))
    train, valid = lines(result.files.train_path), lines(result.files.valid_path)
    assert (len(train), len(valid)) == (24, 6)
    assert not {json.dumps(t) for t in train} & {json.dumps(v) for v in valid}
    assert len(result.heldout) == 6

    tight = build(redis_conn, configure(settings, validation_fraction=0.2), min_train=28)
    assert (tight.files.n_train, tight.files.n_valid) == (28, 2)
    capped = build(
        redis_conn, configure(settings, validation_fraction=0.5, max_validation_examples=3)
    )
    assert (capped.files.n_train, capped.files.n_valid) == (27, 3)
    same = build(redis_conn, configure(settings, validation_fraction=0.2))
    assert lines(same.files.valid_path) == valid, "the split is a function of the content"


def test_replay_mixes_earlier_examples_into_training_only(
    redis_conn: Redis, settings: Settings
) -> None:
    for i in range(20):
        log(redis_conn, f"Old question {i}?", f"Old answer {i}.")
    cursor = trainset.last_id(redis_conn)
    assert cursor is not None
    held = trainset.normalise(trainset.SEPARATOR.join([SYSTEM, "Old question 0?", "Old answer 0."]))
    redis_conn.sadd(keys.HELDOUT, trainset._digest(held).hex())
    for i in range(10):
        log(redis_conn, f"New question {i}?", f"New answer {i}.")
    replaying = configure(settings, replay_fraction=2.0, replay_max=19, validation_fraction=0.2)
    result = build(redis_conn, replaying, after=cursor)
    train, valid = lines(result.files.train_path), lines(result.files.valid_path)
    old = [t for t in train if t["messages"][1]["content"].startswith("Old")]
    new = [t for t in train if t["messages"][1]["content"].startswith("New")]
    assert (len(new), len(valid)) == (8, 2)
    assert all(v["messages"][1]["content"].startswith("New") for v in valid)
    assert result.manifest["counts"]["replay_candidates"] == 20
    assert len(old) == result.manifest["counts"]["replay"] <= 16
    assert "Old question 0?" not in json.dumps(old), "held-out examples are never replayed"
    assert result.manifest["counts"]["replay"] + result.manifest["counts"]["replay_heldout"] in (
        16,
        15,
    )


def test_corrections_become_preference_pairs_for_dpo(redis_conn: Redis, settings: Settings) -> None:
    log(redis_conn, "Who approves expenses?", "Your manager.", rejected="Bob, always.")
    log(redis_conn, "Where is the office?", "Second floor.")
    dpo = configure(settings, method=TrainingMethod.DPO, validation_fraction=0.0)
    result = build(redis_conn, dpo)
    [line] = lines(result.files.train_path)
    assert line == {
        "input": {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Who approves expenses?"},
            ]
        },
        "preferred_output": [{"role": "assistant", "content": "Your manager."}],
        "non_preferred_output": [{"role": "assistant", "content": "Bob, always."}],
    }
    assert format_errors(check_preference_example, line) == []
    assert result.manifest["issues"] == {"not_a_preference_pair": 1}
    assert result.files.method is TrainingMethod.DPO


def test_manifest_counts_tokens_and_cost_and_is_stored(
    redis_conn: Redis, settings: Settings
) -> None:
    for i in range(12):
        log(redis_conn, f"How do I configure service {i}?", f"Open settings, then service {i}.")
    result = build(redis_conn, configure(settings, validation_fraction=0.0))
    counter = counter_for_model(MODEL)
    exact = [counter.count_messages(line["messages"]) for line in lines(result.files.train_path)]
    tokens = result.manifest["tokens"]
    assert tokens["total"] == sum(exact) == tokens["train_total"]
    assert (tokens["min"], tokens["max"]) == (min(exact), max(exact))
    assert tokens["estimated_examples"] == 0
    estimate = result.manifest["estimate"]
    assert estimate["epochs"] == pricing.default_epochs(12) == 8
    assert estimate["billed_tokens"] == 8 * sum(exact)
    assert estimate["cost_usd"] == round(8 * sum(exact) / 1e6 * 3.00, 4)
    assert trainset.load_manifest(redis_conn, result.files.set_id) == result.manifest
    assert trainset.latest_set_id(redis_conn) == result.files.set_id
    assert (result.files.train_path.parent / "manifest.json").is_file()


def test_beyond_the_exact_sample_tokens_are_estimated_but_the_limit_is_exact(
    redis_conn: Redis, settings: Settings
) -> None:
    for i in range(40):
        log(
            redis_conn,
            f"Question number {i} about deployments?",
            "Use the pipeline. " * (i % 5 + 1),
        )
    log(redis_conn, "The long one?", "word " * 2500)
    sampled = configure(
        settings,
        validation_fraction=0.0,
        exact_token_examples=5,
        token_sample_every=4,
        max_example_tokens=2000,
    )
    result = build(redis_conn, sampled)
    tokens = result.manifest["tokens"]
    assert result.manifest["issues"] == {"too_many_tokens": 1}
    assert 0 < tokens["estimated_examples"] < 40
    counter = counter_for_model(MODEL)
    exact = sum(counter.count_messages(line["messages"]) for line in lines(result.files.train_path))
    assert abs(tokens["total"] - exact) / exact < 0.1


def test_examples_approved_after_the_snapshot_wait_for_the_next_set(
    redis_conn: Redis, settings: Settings
) -> None:
    log(redis_conn, "First?", "One.")
    upto = trainset.last_id(redis_conn)
    log(redis_conn, "Second?", "Two.")
    request = trainset.BuildRequest("set-x", 1, "0-0", upto, MODEL, 1)
    result = trainset.build(redis_conn, configure(settings, validation_fraction=0.0), request)
    assert [line["messages"][1]["content"] for line in lines(result.files.train_path)] == ["First?"]


@pytest.mark.parametrize(
    ("n", "epochs"), [(1, 25), (10, 10), (34, 3), (1000, 3), (10_000, 2), (100_000, 1)]
)
def test_default_epochs_follow_the_data_preparation_rule(n: int, epochs: int) -> None:
    assert pricing.default_epochs(n) == epochs


def test_prices_of_fine_tuned_models_are_their_base_models() -> None:
    assert pricing.price_for("ft:gpt-4o-mini-2024-07-18:org:x:abc").per_million == 3.00
    assert pricing.price_for("gpt-4.1-nano-2025-04-14").per_million == 1.50
    assert pricing.price_for("gpt-4.1-2025-04-14").per_million == 25.00
    assert pricing.price_for("my-local-model") is None


def _tool_example(i: int) -> dict[str, Any]:
    call = {"id": f"c{i}", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Look up ticket {i}"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": f"ticket {i}: open"},
            {"role": "assistant", "content": f"Ticket {i} is open."},
        ]
    }


def test_a_tool_turn_is_refused_when_the_set_is_built_for_the_local_trainer(
    redis_conn: Redis, settings: Settings
) -> None:
    from core.errors import TrainingError
    from core.settings import TrainerBackend
    from workers.training import lora

    log_raw(redis_conn, _tool_example(1))
    log(redis_conn, "How do I install it?", "Run the installer.")

    for_openai = build(redis_conn, configure(settings, validation_fraction=0.0))
    for_local = build(
        redis_conn, configure(settings, validation_fraction=0.0, backend=TrainerBackend.LOCAL)
    )

    # OpenAI trains on tool turns: the line is kept and the contract accepts it...
    assert for_openai.manifest["counts"]["train"] == 2
    assert all(
        format_errors(check_chat_example, line) == [] for line in lines(for_openai.files.train_path)
    )
    # ...the local trainer cannot: the same rule refuses it when the set is built, so the
    # GPU worker never gets a line it would refuse.
    assert for_local.manifest["issues"] == {"not_trainable_by_trainer": 1}
    assert len(lora.supervised_rows(for_local.files.train_path)) == 1
    with pytest.raises(TrainingError, match="cannot be trained by the local LoRA trainer"):
        lora.supervised_rows(for_openai.files.train_path)


def test_tool_calls_count_against_the_limit_of_a_set(redis_conn: Redis, settings: Settings) -> None:
    example = _tool_example(2)
    example["messages"][2]["tool_calls"][0]["function"]["arguments"] = json.dumps(
        {"query": "ticket " * 300}
    )
    log_raw(redis_conn, example)

    result = build(redis_conn, configure(settings, validation_fraction=0.0, max_example_tokens=200))

    assert result.manifest["issues"] == {"too_many_tokens": 1}


def test_the_limit_of_a_set_is_the_base_models_when_the_setting_is_higher(
    redis_conn: Redis, settings: Settings
) -> None:
    log(redis_conn, "How do I install it?", "Run the installer.")

    result = build(redis_conn, configure(settings, max_example_tokens=1_000_000))

    assert result.manifest["tokens"]["limit"] == 65_536


def test_replay_never_brings_back_a_forgotten_example(
    redis_conn: Redis, settings: Settings
) -> None:
    for i in range(20):
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Old question {i}?"},
            {"role": "assistant", "content": f"Old answer {i}."},
        ]
        example = approved.Example(messages=messages, source="slack", answer_id=f"C1-{i}")
        approved.append(redis_conn, example)
    # forget-me removes a user's examples...
    doomed = [
        (entry_id, example)
        for entry_id, example in approved.read_after(redis_conn, "0-0")
        if example.answer_id in {"C1-3", "C1-7"}
    ]
    assert len(doomed) == 2
    approved.remove(redis_conn, doomed)
    cursor = trainset.last_id(redis_conn)
    for i in range(10):
        log(redis_conn, f"New question {i}?", f"New answer {i}.")

    # ...and no later run replays them, however much it replays.
    result = build(
        redis_conn,
        configure(settings, replay_fraction=5.0, replay_max=100, validation_fraction=0.0),
        after=cursor,
    )

    train = json.dumps(lines(result.files.train_path))
    assert (
        result.manifest["counts"]["replay"] == result.manifest["counts"]["replay_candidates"] == 18
    )
    assert "Old question 3?" not in train and "Old question 7?" not in train
    reservoir = {raw.decode() for raw in redis_conn.hvals(keys.APPROVED_RESERVOIR)}
    assert len(reservoir) == 28


def test_a_log_written_before_the_reservoir_is_sampled_once(
    redis_conn: Redis, settings: Settings
) -> None:
    for i in range(20):
        log_raw(
            redis_conn,
            {
                "messages": [
                    {"role": "user", "content": f"Old {i}?"},
                    {"role": "assistant", "content": f"Old answer {i}."},
                ]
            },
        )
    cursor = trainset.last_id(redis_conn)
    assert cursor is not None and not redis_conn.exists(keys.APPROVED_RESERVOIR)
    for i in range(10):
        log(redis_conn, f"New question {i}?", f"New answer {i}.")

    result = build(
        redis_conn,
        configure(settings, replay_fraction=1.0, validation_fraction=0.0),
        after=cursor,
    )

    assert result.manifest["counts"]["replay_candidates"] == 20
    assert result.manifest["counts"]["replay"] == 10
    assert int(redis_conn.get(keys.APPROVED_RESERVOIR_SEEN)) == 30


def test_a_preference_set_counts_tokens_as_the_dataset_tool_does(
    redis_conn: Redis, settings: Settings
) -> None:
    from core.examples import examine_preference

    log(redis_conn, "Who approves expenses?", "Your manager.", rejected="Bob, always, no doubt.")
    log(redis_conn, "Where is the office?", "On the second floor, by the lifts.", rejected="Up.")
    dpo = configure(settings, method=TrainingMethod.DPO, validation_fraction=0.0)

    result = build(redis_conn, dpo)

    counter = counter_for_model(MODEL)
    expected = [
        examine_preference(line, counter, 65536).tokens for line in lines(result.files.train_path)
    ]
    assert result.manifest["tokens"]["total"] == sum(expected)
    assert result.manifest["tokens"]["max"] == max(expected)


# A real 1x1 PNG and a 1x1 JPEG, as the bot embeds an attached image (a data: URL).
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
JPEG = (
    "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP////////////////////////////"
    "//////////////////////////////////////////////////////////wgALCAABAAEBAREA/8QAFBABAA"
    "AAAAAAAAAAAAAAAAAAAP/aAAgBAQABPxA="
)


def log_image(redis: Redis, question: str, url: str, answer: str = "A login page.") -> None:
    """An approved answer to a question that had an image attached."""
    user = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": url}}]
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]
    approved.append(redis, approved.Example(messages=messages, source="slack", approved_by="a"))


def test_an_image_question_is_trained_with_its_image_embedded_and_its_text_scrubbed(
    redis_conn: Redis, settings: Settings
) -> None:
    log_image(redis_conn, "What does ann@example.com see here?", PNG)
    log_image(redis_conn, "What does bob@example.org see here?", PNG)  # same once scrubbed
    log_image(redis_conn, "What does ann@example.com see here?", JPEG)  # another image

    result = build(redis_conn, configure(settings, validation_fraction=0.0))

    counts = result.manifest["counts"]
    assert counts["train"] == 2 and counts["exact_duplicates"] == 1
    trained = lines(result.files.train_path)
    users = [line["messages"][1]["content"] for line in trained]
    assert sorted(users, key=lambda parts: parts[1]["image_url"]["url"]) == [
        [
            {"type": "text", "text": "What does [email] see here?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        for url in sorted([JPEG, PNG])
    ]
    assert "example.com" not in result.files.train_path.read_text()
    assert result.manifest["pii_scrubbed"] == {"emails": 3}
    for line in trained:
        assert format_errors(check_chat_example, line) == []
    # Tokens as the contract counts them: the text plus each image's cost.
    counter = counter_for_model(MODEL)
    exact = [counter.count_messages(line["messages"]) for line in trained]
    assert result.manifest["tokens"]["total"] == sum(exact)
    assert min(exact) > 85 * 13  # a detail:auto image is counted at its high-detail bound


def test_an_image_linking_to_slack_is_refused_and_the_local_trainer_refuses_images(
    redis_conn: Redis, settings: Settings
) -> None:
    from core.settings import TrainerBackend

    slack = "https://files.slack.com/files-pri/T0001-F0002/screenshot.png"
    log_image(redis_conn, "What is on this screenshot?", slack)
    log_image(redis_conn, "And on this one?", PNG)
    log(redis_conn, "How do I install it?", "Run the installer.")

    for_openai = build(redis_conn, configure(settings, validation_fraction=0.0))
    for_local = build(
        redis_conn, configure(settings, validation_fraction=0.0, backend=TrainerBackend.LOCAL)
    )

    assert for_openai.manifest["issues"] == {"slack_image_url": 1}
    assert for_openai.manifest["counts"]["train"] == 2
    assert "slack.com" not in for_openai.files.train_path.read_text()
    assert for_local.manifest["issues"] == {"slack_image_url": 1, "not_trainable_by_trainer": 1}
    assert [line["messages"][1]["content"] for line in lines(for_local.files.train_path)] == [
        "How do I install it?"
    ]
