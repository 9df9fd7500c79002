"""Service metrics kept in Redis, rendered for Prometheus by the bot's ``/metrics``.

Answers are produced by worker processes, possibly on several machines, so in-process
counters would each see only a part. Every process adds to the same Redis hash instead
(one HINCRBY pipeline per event) and ``/metrics`` reads it back: whichever bot process
Prometheus scrapes reports the whole service.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from core import canary, keys, satisfaction
from core.replies import text_hash

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 60.0)
_SEP = "|"
_HITS = "_hits"  # per-bucket (not cumulative) observation counts of a histogram


@dataclass(frozen=True)
class Spec:
    """A metric's kind, help text and label names."""

    kind: str
    help: str
    labels: tuple[str, ...] = ()


COUNTERS = {
    "tuneloop_answers": Spec("counter", "Answers posted", ("model",)),
    "tuneloop_votes": Spec("counter", "Votes recorded", ("vote", "source")),
    "tuneloop_errors": Spec("counter", "Errors by kind", ("kind",)),
    "tuneloop_training_runs": Spec("counter", "Training runs by final status", ("status",)),
}
HISTOGRAMS = {
    "tuneloop_answer_latency_seconds": Spec(
        "histogram", "Time from starting an answer to its last message", ()
    ),
}


def _field(name: str, labels: dict[str, str]) -> str:
    return _SEP.join([name, *(f"{k}={labels[k]}" for k in sorted(labels))])


Update = tuple[str, float]
"""A field of the shared metrics hash and the amount to add to it."""


def counter_update(name: str, amount: float = 1, **labels: str) -> Update:
    """What adding ``amount`` to a counter changes (for writers that batch their updates)."""
    return _field(name, labels), amount


def observation_updates(name: str, value: float) -> list[Update]:
    """What one observation of a histogram changes: one count in the bucket it falls in
    (the cumulative counts Prometheus wants are summed at scrape time) and the sum."""
    bound = next((str(b) for b in LATENCY_BUCKETS if value <= b), "+Inf")
    return [(_field(name + _HITS, {"le": bound}), 1), (_field(name + "_sum", {}), value)]


def apply(redis: Redis, updates: list[Update]) -> None:
    """Apply metric updates in one round trip; never fails the caller (metrics are not
    worth an error)."""
    pipe = redis.pipeline(transaction=False)
    for field, amount in updates:
        pipe.hincrbyfloat(keys.METRICS, field, amount)
    try:
        pipe.execute()
    except RedisError:
        logger.warning("metrics not recorded: Redis unavailable")


def incr(redis: Redis, name: str, amount: int = 1, **labels: str) -> None:
    """Add to a counter."""
    apply(redis, [counter_update(name, amount, **labels)])


def observe(redis: Redis, name: str, value: float) -> None:
    """Record one observation of a histogram."""
    apply(redis, observation_updates(name, value))


def _parse(raw: Mapping[bytes | str, bytes | str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for field, value in text_hash(raw).items():
        name, *pairs = field.split(_SEP)
        labels = dict(pair.split("=", 1) for pair in pairs)
        out.setdefault(name, []).append((labels, float(value)))
    return out


class RedisCollector:
    """A prometheus_client collector reading the shared counters and the queue depths."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def collect(self) -> Iterator[Metric]:
        """Called by prometheus_client on every scrape."""
        try:
            values = _parse(self.redis.hgetall(keys.METRICS))
            depths = {name: len(Queue(name, connection=self.redis)) for name in keys.ALL_QUEUES}
            in_flight = self.redis.hlen(keys.INFLIGHT)
        except RedisError:
            logger.warning("metrics unavailable: Redis unreachable")
            return
        for name, spec in COUNTERS.items():
            family = CounterMetricFamily(name, spec.help, labels=list(spec.labels))
            for labels, value in values.get(name, []):
                family.add_metric([labels.get(label, "") for label in spec.labels], value)
            yield family
        for name, spec in HISTOGRAMS.items():
            hits = {labels["le"]: value for labels, value in values.get(name + _HITS, [])}
            total = sum(value for _, value in values.get(name + "_sum", []))
            histogram = HistogramMetricFamily(name, spec.help)
            if hits:
                running, buckets = 0.0, []
                for bound in [*map(str, LATENCY_BUCKETS), "+Inf"]:
                    running += hits.get(bound, 0.0)
                    buckets.append((bound, running))
                histogram.add_metric([], buckets, total)
            yield histogram
        gauge = GaugeMetricFamily(
            "tuneloop_queue_depth", "Jobs waiting per queue", labels=["queue"]
        )
        for name, depth in depths.items():
            gauge.add_metric([name], depth)
        yield gauge
        yield GaugeMetricFamily(
            "tuneloop_answers_in_flight",
            "Answers the web processes are writing right now",
            value=in_flight,
        )
        try:
            yield from _model_families(self.redis)
        except RedisError:
            logger.warning("per-model metrics unavailable: Redis unreachable")


def _model_families(redis: Redis) -> Iterator[Metric]:
    """Per-model series from the satisfaction totals (core.satisfaction): answers, votes,
    corrections, up-rate, tokens and cost, and cost per channel. Votes are gauges: a
    changed vote moves a count down."""
    answers = CounterMetricFamily(
        "tuneloop_model_answers", "Answers per model version", labels=["model"]
    )
    votes = GaugeMetricFamily(
        "tuneloop_model_votes", "Votes standing per model version", labels=["model", "vote"]
    )
    corrections = CounterMetricFamily(
        "tuneloop_model_corrections", "Corrections per model version", labels=["model"]
    )
    up_rate = GaugeMetricFamily(
        "tuneloop_model_up_rate", "Share of thumbs-up per model version", labels=["model"]
    )
    tokens = CounterMetricFamily(
        "tuneloop_model_tokens", "Answer tokens per model version", labels=["model", "kind"]
    )
    cost = CounterMetricFamily(
        "tuneloop_model_cost_usd", "Priced cost of answers per model version", labels=["model"]
    )
    unpriced = CounterMetricFamily(
        "tuneloop_model_unpriced_answers",
        "Answers of a model version without a known price",
        labels=["model"],
    )
    channel_cost = CounterMetricFamily(
        "tuneloop_channel_cost_usd",
        "Priced cost of answers per channel and model version",
        labels=["model", "channel"],
    )
    for model in satisfaction.models(redis):
        t = satisfaction.totals(redis, model)
        answers.add_metric([model], t.answers)
        votes.add_metric([model, "up"], t.up)
        votes.add_metric([model, "down"], t.down)
        corrections.add_metric([model], t.corrections)
        if t.up_rate is not None:
            up_rate.add_metric([model], t.up_rate)
        tokens.add_metric([model, "prompt"], t.prompt_tokens)
        tokens.add_metric([model, "completion"], t.completion_tokens)
        cost.add_metric([model], t.cost)
        unpriced.add_metric([model], t.unpriced)
        for channel, ct in satisfaction.by_channel(redis, model).items():
            channel_cost.add_metric([model, channel], ct.cost)
    yield from (answers, votes, corrections, up_rate, tokens, cost, unpriced, channel_cost)
    going = canary.active(redis)
    gauge = GaugeMetricFamily(
        "tuneloop_canary_active",
        "1 while a canary runs (candidate and incumbent as labels)",
        labels=["candidate", "incumbent"],
    )
    if going is not None:
        gauge.add_metric([going.candidate, going.incumbent], 1)
    yield gauge
