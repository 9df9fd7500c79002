"""The training-data contract's per-example checks (dataset tool, set builder, trainers)."""

from __future__ import annotations

from typing import Any

import pytest

from core.examples import (
    CachedCounter,
    Code,
    Severity,
    check_chat_example,
    check_completion_example,
    examine_chat,
    repair_chat_example,
    repair_completion_example,
)
from core.tokens import counter_for_model
from tests.workers.datasets.helpers import chat

COUNTER = counter_for_model("gpt-4o-mini-2024-07-18")


def _codes(obj: Any, max_tokens: int = 65536) -> list[str]:
    return [finding.code.value for finding in check_chat_example(obj, COUNTER, max_tokens)]


def test_a_good_example_has_no_findings() -> None:
    assert check_chat_example(chat(1), COUNTER, 65536) == []


@pytest.mark.parametrize(
    ("example", "codes"),
    [
        ("text", ["data_type"]),
        ({"messages": "hi"}, ["missing_messages_list"]),
        ({"messages": []}, ["missing_messages_list"]),
        (
            {"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]},
            [
                "message_missing_key",
                "unrecognized_role",
                "missing_system_message",
                "missing_user_message",
            ],
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x", "extra": 1},
                    {"role": "assistant", "content": "y"},
                ]
            },
            ["message_unrecognized_key", "missing_system_message"],
        ),
        (
            {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
            ["unrecognized_role", "missing_system_message", "missing_user_message"],
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": None},
                    {"role": "assistant", "content": "y"},
                ]
            },
            ["missing_content", "missing_system_message"],
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": ["y"]},
                ]
            },
            ["content_wrong_type", "missing_system_message"],
        ),
        ({"messages": [{"role": "user", "content": "x"}]}, ["example_missing_assistant_message"]),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": "y", "weight": 0.5},
                ]
            },
            ["invalid_weight", "missing_system_message"],
        ),
    ],
)
def test_cookbook_format_errors(example: Any, codes: list[str]) -> None:
    assert _codes(example) == codes


def test_tool_calls_and_image_parts_are_accepted() -> None:
    example = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            {"role": "tool", "content": "42", "tool_call_id": "1"},
            {"role": "assistant", "content": "It is 42.", "weight": 1},
        ]
    }
    assert _codes(example) == []


def test_severity_and_limit() -> None:
    findings = check_chat_example(chat(1), COUNTER, 10)
    assert [f.code for f in findings] == [Code.TOO_MANY_TOKENS]
    assert findings[0].severity is Severity.ERROR
    assert findings[0].message.endswith("over the limit of 10")


@pytest.mark.parametrize(
    "messages",
    [
        chat(3)["messages"],
        [{"role": "user", "content": "hi", "name": "ann"}, {"role": "assistant", "content": "yo"}],
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ],
        [{"role": "assistant", "content": None, "function_call": {"name": "f"}}],
        [{"role": None, "content": 12}],
    ],
)
def test_token_counts_equal_the_foundation_counter(messages: list[dict[str, Any]]) -> None:
    cached = CachedCounter(COUNTER)
    expected = COUNTER.count_messages(messages)

    assert cached.count_messages(messages) == expected
    assert examine_chat({"messages": messages}, cached, 65536).tokens == expected
    assert examine_chat({"messages": messages}, COUNTER, 65536).tokens == expected


def test_cache_is_bounded_and_counts_stay_right() -> None:
    cached = CachedCounter(COUNTER, max_entries=4)
    texts = [f"text number {i}" for i in range(10)]
    assert [cached.count(t) for t in texts * 2] == [COUNTER.count(t) for t in texts * 2]
    assert len(cached._cache) <= 4


def test_fingerprint_ignores_key_order_and_weights() -> None:
    a = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    b = {
        "messages": [
            {"content": "x", "role": "user"},
            {"content": "y", "role": "assistant", "weight": 1},
        ]
    }
    assert examine_chat(a, COUNTER, 100).fingerprint == examine_chat(b, COUNTER, 100).fingerprint


def test_repairs() -> None:
    broken = {
        "messages": [
            {"role": "Human", "content": "q", "ts": 1},
            {"role": "AI", "content": 3.5, "weight": 7},
        ],
        "id": 9,
    }
    fixes = {
        Code.UNRECOGNIZED_ROLE,
        Code.MESSAGE_UNRECOGNIZED_KEY,
        Code.CONTENT_WRONG_TYPE,
        Code.INVALID_WEIGHT,
        Code.UNRECOGNIZED_KEY,
        Code.MISSING_SYSTEM_MESSAGE,
    }
    repaired = repair_chat_example(broken, fixes, "Be kind.")
    assert repaired == {
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "3.5"},
        ]
    }
    assert check_chat_example(repaired, COUNTER, 65536) == []
    assert broken["messages"][0]["role"] == "Human"  # the input is left alone
    assert repair_chat_example({"messages": [{"role": "narrator", "content": "x"}]}, fixes) is None


def test_completion_checks_and_repairs() -> None:
    assert check_completion_example({"prompt": "a ->", "completion": " b\n"}, COUNTER, 100) == []
    codes = [
        f.code
        for f in check_completion_example({"prompt": 1, "completion": "b", "x": 0}, COUNTER, 100)
    ]
    assert codes == [Code.UNRECOGNIZED_KEY, Code.CONTENT_WRONG_TYPE, Code.COMPLETION_LEADING_SPACE]
    fixes = {Code.UNRECOGNIZED_KEY, Code.CONTENT_WRONG_TYPE, Code.COMPLETION_LEADING_SPACE}
    assert repair_completion_example({"prompt": 1, "completion": "b", "x": 0}, fixes) == {
        "prompt": "1",
        "completion": " b",
    }
    assert repair_completion_example({"prompt": "a", "completion": ""}, fixes) is None


@pytest.mark.parametrize("limit", [5, 30, 60, 200, 65536])
def test_counting_only_near_the_limit_gives_the_same_findings(limit: int) -> None:
    examples = [
        chat(1),
        {
            "messages": [
                {"role": "user", "content": "word " * 40},
                {"role": "assistant", "content": "ok"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "x", "name": "ann"},
                {"role": "assistant", "content": "é" * 30},
            ]
        },
    ]
    for example in examples:
        full = examine_chat(example, COUNTER, limit)
        lazy = examine_chat(example, COUNTER, limit, count_all=False)
        assert lazy.findings == full.findings
        assert lazy.fingerprint == full.fingerprint
        assert lazy.tokens in (-1, full.tokens)


def test_limits_come_from_the_dated_table_by_base_model() -> None:
    from core.examples import example_limit, limits_for

    assert limits_for("ft:gpt-4o-mini-2024-07-18:acme:bot:abc123").example_tokens == 65_536
    assert limits_for("gpt-3.5-turbo-0125").example_tokens == 16_385
    assert limits_for("babbage-002").example_tokens == 16_384
    assert limits_for("Qwen/Qwen2.5-0.5B-Instruct") is None
    entry = limits_for("davinci-002")
    assert entry.source and entry.as_of.year >= 2026
    assert example_limit("gpt-3.5-turbo-0125", 65_536) == 16_385
    assert example_limit("gpt-4o-mini-2024-07-18", 4_000) == 4_000
    assert example_limit("Qwen/Qwen2.5-0.5B-Instruct", 8_192) == 8_192


def test_formats_are_told_apart_and_checked_against_the_model() -> None:
    from core.examples import Format, detect_format, format_problem

    pair = {"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []}
    assert detect_format(chat(1)) is Format.CHAT
    assert detect_format(pair) is Format.PREFERENCE
    assert detect_format({"Prompt": "a", "Completion": " b"}) is Format.COMPLETION
    assert format_problem("gpt-4o-mini-2024-07-18", Format.CHAT) is None
    assert "prompt/completion" in format_problem("gpt-4o-mini", Format.COMPLETION)
    assert "completion" in format_problem("babbage-002", Format.CHAT)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"preferred_output": []}, "invalid_preference_output"),
        ({"non_preferred_output": [{"role": "user", "content": "x"}]}, "invalid_preference_output"),
        (
            {"non_preferred_output": [{"role": "assistant", "content": "Yes."}]},
            "invalid_preference_output",
        ),
        ({"input": {}}, "missing_messages_list"),
        ({"input": {"messages": [{"role": "robot", "content": "q"}]}}, "unrecognized_role"),
        ({"extra": 1}, "unrecognized_key"),
    ],
)
def test_preference_pairs_are_checked(change: dict[str, Any], code: str) -> None:
    from core.examples import check_preference_example

    pair = {
        "input": {"messages": chat(1)["messages"][:2]},
        "preferred_output": [{"role": "assistant", "content": "Yes."}],
        "non_preferred_output": [{"role": "assistant", "content": "No."}],
    }
    assert check_preference_example(pair, COUNTER, 65536) == []
    codes = [f.code.value for f in check_preference_example({**pair, **change}, COUNTER, 65536)]
    assert code in codes


PNG_URL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _vision(*parts: dict[str, Any], role: str = "user") -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "You read screenshots."},
            {"role": role, "content": [{"type": "text", "text": "What is this?"}, *parts]},
            {"role": "assistant", "content": "A login page."},
        ]
    }


def _image(url: str = PNG_URL, **extra: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def test_a_vision_example_is_accepted_and_its_images_are_counted() -> None:
    from core.tokens import IMAGE_TOKENS_HIGH_ESTIMATE, IMAGE_TOKENS_LOW

    text_only = {
        "messages": [
            {"role": "system", "content": "You read screenshots."},
            {"role": "user", "content": "What is this?"},
            {"role": "assistant", "content": "A login page."},
        ]
    }
    base = examine_chat(text_only, COUNTER, 65536).tokens
    example = _vision(_image(), _image("https://example.com/a.webp", detail="low"))

    facts = examine_chat(example, COUNTER, 65536)

    assert facts.findings == []
    assert facts.tokens == base + IMAGE_TOKENS_HIGH_ESTIMATE + IMAGE_TOKENS_LOW
    assert facts.tokens == COUNTER.count_messages(example["messages"])
    assert _codes(example, max_tokens=base + 100) == ["too_many_tokens"]
    other_image = _vision(_image(PNG_URL[:-4] + "AAA="), _image("https://example.com/a.webp"))
    assert examine_chat(other_image, COUNTER, 65536).fingerprint != facts.fingerprint


@pytest.mark.parametrize(
    ("example", "code"),
    [
        (_vision(_image("https://files.slack.com/files-pri/T1-F2/shot.png")), "slack_image_url"),
        (_vision(_image("https://a.slack-edge.com/x.png")), "slack_image_url"),
        (_vision(_image("data:image/gif;base64,R0lGODlhAQABAAAAACw=")), "invalid_image"),
        (_vision(_image("data:image/png;base64,not base64!")), "invalid_image"),
        (_vision(_image("ftp://example.com/a.png")), "invalid_image"),
        (_vision(_image(detail="ultra")), "invalid_image"),
        (_vision(_image(), role="system"), "invalid_image"),  # (and no user message)
        (_vision(*[_image(detail="low")] * 65), "invalid_image"),
        (_vision({"type": "input_audio", "input_audio": {}}), "content_wrong_type"),
    ],
    ids=["slack", "slack-cdn", "gif", "bad-base64", "ftp", "detail", "system", "65", "audio"],
)
def test_images_openai_would_refuse_are_findings(example: dict[str, Any], code: str) -> None:
    assert [c for c in _codes(example) if c != "missing_user_message"] == [code]


def test_an_image_over_ten_megabytes_is_refused() -> None:
    huge = "data:image/jpeg;base64," + "A" * (4 * (10 * 1024 * 1024 // 3 + 1))
    [finding] = check_chat_example(_vision(_image(huge)), COUNTER, 10**9)
    assert finding.code is Code.INVALID_IMAGE and "10 MB" in finding.message


def test_the_local_trainer_cannot_train_on_images() -> None:
    from core.examples import LOCAL_RULES

    facts = examine_chat(_vision(_image()), COUNTER, 65536, rules=LOCAL_RULES)
    assert [(f.code, f.severity) for f in facts.findings] == [(Code.NOT_TRAINABLE, Severity.ERROR)]
    assert "images cannot be trained by the local LoRA trainer" in facts.findings[0].message
