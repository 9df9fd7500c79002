"""Shared fixtures: a real Redis db refused when not empty, and a clean environment.

Without ``TEST_REDIS_URL`` the suite starts a redis-server of its own on a free loopback
port (nothing on disk) and stops it at the end, so two runs on one machine, or a
developer's own Redis on 6379, never meet.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.exceptions import RedisError

from tests.payloads import free_port

pytest_plugins = ["tests.emulators.plugin"]

REDIS_START_S = 10.0
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


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of the test db: ``TEST_REDIS_URL``, or a redis-server started for this run."""
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        try:
            Redis.from_url(given, socket_connect_timeout=2).ping()
        except RedisError as exc:
            pytest.exit(f"TEST_REDIS_URL={given} does not answer: {exc}", 2)
        yield given
        return
    server = shutil.which("redis-server")
    if server is None:
        pytest.exit("redis-server is not installed (apt-get install redis-server)", 2)
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="tuneloop-test-redis-")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/13"
    deadline = time.monotonic() + REDIS_START_S
    while True:
        try:
            Redis.from_url(url, socket_connect_timeout=0.5).ping()
            break
        except RedisError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.exit(f"the test redis-server on port {port} did not start", 2)
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


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
