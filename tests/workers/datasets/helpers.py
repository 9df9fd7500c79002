"""Example factories, file writers and the design table shared by the dataset tests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DESIGN_CSV = (
    "Human;AI\n"
    "Hello;I'm an AI\n"
    "Open the pod bay doors please;No\n"
    "Open the pod bay doors!;Well, if you insist\n"
    "###;###\n"
    "Good morning;Hey\n"
    "Can you read me the news?;No, I can't\n"
    "Is there something you can do?;You should know\n"
    "Oh okey;Yeah\n"
)
# The line the issue requires, verbatim (\n here is JSON's escape, as in the issue).
EXPECTED_LINE = r"""{"prompt": "Human: Can you read me the news?\nAI: No, I can't\nHuman: Is there something you can do?\nAI: You should know\nHuman: Oh okey\nAI:", "completion": " Yeah\nHuman: "}"""  # noqa: E501
WORDS = [
    "deploy",
    "build",
    "test",
    "release",
    "queue",
    "worker",
    "token",
    "model",
    "thread",
    "channel",
    "answer",
    "config",
    "redis",
    "python",
    "error",
    "log",
    "metric",
    "alert",
    "cache",
    "index",
    "schema",
    "backup",
    "restore",
]


def chat(i: int, *, system: bool = True) -> dict[str, Any]:
    """A valid, distinct chat example."""
    words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(4))
    messages = [{"role": "system", "content": "You answer ops questions."}] if system else []
    messages += [
        {"role": "user", "content": f"How do I {words} number {i}?"},
        {"role": "assistant", "content": f"Run the {words} step {i} and check the log."},
    ]
    return {"messages": messages}


def completion(i: int) -> dict[str, str]:
    """A valid, distinct prompt/completion example with separator and stop."""
    words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3))
    return {"prompt": f"Ticket {i}: {words}\n\n###\n\n", "completion": f" handle {words} {i}\n"}


def write_jsonl(path: Path, items: Iterable[Any], *, raw: bool = False) -> Path:
    """Write items as JSON lines (or as raw strings when ``raw``)."""
    lines = [item if raw else json.dumps(item, ensure_ascii=False) for item in items]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[Any]:
    """Parsed lines of a JSONL file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


PNG_URL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
"""A real 1x1 PNG as a data URL: how images are embedded in vision training data."""


def vision_chat(i: int, url: str = PNG_URL) -> dict[str, Any]:
    """A valid, distinct chat example whose question has an image (OpenAI's vision format)."""
    example = chat(i)
    question = example["messages"][1]["content"]
    example["messages"][1]["content"] = [
        {"type": "text", "text": question},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return example
