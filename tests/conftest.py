"""Shared fixtures: a real Redis db refused when not empty, and a clean environment."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from redis import Redis

pytest_plugins = ["tests.emulators.plugin"]

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
_ENV_PREFIXES = ("SLACK_", "OPENAI_", "REDIS_", "CONFIG_FILE", "PORT", "TUNELOOP_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's or CI's Slack, OpenAI or Redis settings."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Processes under test configure JSON logging; put pytest's handlers back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def redis_url() -> str:
    """The URL of the dedicated test db."""
    return TEST_REDIS_URL


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[Redis]:
    """A real Redis connection on the test db, flushed before and after each test.

    Refuses to run when the db holds keys it did not leave itself: pointing the tests
    at a db with real data must not wipe it.
    """
    conn = Redis.from_url(redis_url)
    if conn.dbsize():
        marker = conn.get("tuneloop-tests:marker")
        if marker is None:
            pytest.exit(f"{redis_url} is not empty; point TEST_REDIS_URL at an empty db", 2)
    conn.flushdb()
    conn.set("tuneloop-tests:marker", "1")
    yield conn
    conn.flushdb()
    conn.close()
