"""Chaos, short and bounded (the longer run is bench/chaos.py): every question and vote
Slack got a 200 for survives SIGKILLed web processes and workers, a Redis restart and a
Slack 429 storm, answered or stored exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import chaos
from tests.bot.conftest import write_config
from tests.bot.test_faults import RedisServer, own_redis  # noqa: F401 (a fixture)
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator
from tests.processes import bot_env

TRIALS = 2
QUESTIONS = 64


@pytest.fixture
def cluster(
    tmp_path: Path,
    slack_api: SlackEmulator,
    openai_api: OpenAIEmulator,
    own_redis: RedisServer,  # noqa: F811
) -> Iterator[chaos.Cluster]:
    config = write_config(tmp_path / "settings.yaml", chaos.CHAOS_SETTINGS)
    env = bot_env(slack_api, openai_api, f"redis://127.0.0.1:{own_redis.port}/0", config)
    openai_api.chunk_delay_s = 0.02
    openai_api.answer_fn = lambda body: chaos.ANSWER
    running = chaos.Cluster(env, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def test_killed_processes_a_redis_restart_and_a_429_storm_lose_and_double_nothing(
    cluster: chaos.Cluster,
    slack_api: SlackEmulator,
    own_redis: RedisServer,  # noqa: F811
) -> None:
    result = chaos.run(
        cluster, slack_api, own_redis, trials=TRIALS, questions=QUESTIONS, seed=20261201
    )
    assert result.questions >= TRIALS * QUESTIONS // 2, "most questions were acknowledged"
    assert result.votes > 0, "votes were acknowledged"
    assert result.unanswered == [], result.details
    assert result.doubled == [], result.details
    assert result.votes_lost == []
