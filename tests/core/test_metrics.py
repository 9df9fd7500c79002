"""Metrics shared through Redis, as Prometheus reads them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from redis import Redis

from core import metrics


def _scrape(redis: Redis) -> str:
    registry = CollectorRegistry()
    registry.register(metrics.RedisCollector(redis))
    return generate_latest(registry).decode()


def test_histogram_buckets_are_cumulative_whichever_process_observed(redis_conn: Redis) -> None:
    name = "tuneloop_answer_latency_seconds"
    metrics.observe(redis_conn, name, 0.1)
    metrics.apply(
        redis_conn,
        [metrics.counter_update("tuneloop_answers", model="m")]
        + metrics.observation_updates(name, 0.6),
    )
    metrics.observe(redis_conn, name, 100.0)

    text = _scrape(redis_conn)
    assert f'{name}_bucket{{le="0.25"}} 1.0' in text
    assert f'{name}_bucket{{le="0.5"}} 1.0' in text
    assert f'{name}_bucket{{le="1.0"}} 2.0' in text
    assert f'{name}_bucket{{le="60.0"}} 2.0' in text
    assert f'{name}_bucket{{le="+Inf"}} 3.0' in text
    assert f"{name}_count 3.0" in text
    assert f"{name}_sum 100.7" in text
    assert 'tuneloop_answers_total{model="m"} 1.0' in text


def test_no_observations_no_buckets(redis_conn: Redis) -> None:
    assert "tuneloop_answer_latency_seconds_bucket" not in _scrape(redis_conn)
