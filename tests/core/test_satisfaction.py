"""Satisfaction per model version: statistics against hand-computed values, and the
Redis totals as answers, votes and corrections arrive (real Redis)."""

from __future__ import annotations

import datetime as dt

import pytest
from redis import Redis

from core import keys, satisfaction
from core.satisfaction import Totals
from core.store import AnswerRecord, Store, Vote, VoteResult, VoteSource

MODEL = "ft:gpt-4o-mini-2024-07-18:org:tuneloop:abc"


# --- statistics ----------------------------------------------------------------------------
def test_wilson_interval_matches_hand_computed_values() -> None:
    # 8 of 10: p = 0.8, z = 1.959964; centre 0.716740, half-width 0.226578
    low, high = satisfaction.wilson_interval(8, 10)
    assert low == pytest.approx(0.490162, abs=1e-5)
    assert high == pytest.approx(0.943318, abs=1e-5)
    # none of 10 still has an upper bound above 0 (z^2 / (n + z^2) = 0.277533)
    low, high = satisfaction.wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(0.277533, abs=1e-5)
    # all of 20 at 90%: 20 / (20 + 1.644854^2) = 0.880847
    low, high = satisfaction.wilson_interval(20, 20, confidence=0.9)
    assert low == pytest.approx(0.880847, abs=1e-5)
    assert high == pytest.approx(1.0)


def test_non_inferiority_z_test_matches_hand_computed_values() -> None:
    # 45/50 vs 80/100, margin 0.05: se = sqrt(.9*.1/50 + .8*.2/100) = 0.0583095,
    # z = (0.1 + 0.05) / se = 2.572479, p = 1 - Phi(z) = 0.005049
    test = satisfaction.non_inferiority(45, 50, 80, 100, margin=0.05, confidence=0.95)
    assert test.z == pytest.approx(2.572479, abs=1e-5)
    assert test.p_value == pytest.approx(0.005049, abs=2e-5)
    assert test.passed
    # 30/50 vs 80/100: z = (-0.2 + 0.05) / sqrt(.6*.4/50 + .0016) = -1.875, p = 0.969604
    worse = satisfaction.non_inferiority(30, 50, 80, 100, margin=0.05, confidence=0.95)
    assert worse.z == pytest.approx(-1.875, abs=1e-5)
    assert worse.p_value == pytest.approx(0.969604, abs=2e-5)
    assert not worse.passed
    with pytest.raises(ValueError):
        satisfaction.non_inferiority(0, 0, 1, 2, margin=0.05, confidence=0.9)


def test_sign_test_matches_the_binomial_distribution() -> None:
    # 8 wins, 2 losses: 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024
    assert satisfaction.sign_test(8, 2) == pytest.approx(0.109375)
    assert satisfaction.sign_test(10, 0) == pytest.approx(2 / 1024)
    assert satisfaction.sign_test(5, 5) == 1.0
    assert satisfaction.sign_test(0, 0) == 1.0


def test_z_for_confidence() -> None:
    assert satisfaction.z_for(0.95) == pytest.approx(1.959964, abs=1e-6)


# --- totals in Redis -------------------------------------------------------------------------
def _save(store: Store, answer_id: str, *, model: str, channel: str, created_at: float) -> None:
    record = AnswerRecord(
        answer_id=answer_id,
        team_id="T1",
        channel_id=channel,
        thread_ts="1.0",
        question_ts=answer_id,
        user_id="UASK",
        messages=[{"role": "user", "content": "q"}],
        answer="a",
        model=model,
        prompt_tokens=1000,
        completion_tokens=500,
        latency_ms=10,
        created_at=created_at,
        message_ts=(f"{answer_id}.1",),
    )
    store.save_answer(record)  # adds the answer to its model's totals in the same MULTI


def test_answers_count_once_with_their_cost_per_model_channel_and_day(redis_conn: Redis) -> None:
    store = Store(redis_conn, retention_s=3600)
    day1 = dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    day2 = dt.datetime(2024, 3, 1, 0, 0, 0, tzinfo=dt.UTC).timestamp()
    _save(store, "a1", model=MODEL, channel="C1", created_at=day1)
    satisfaction.record_answer(  # counting the same answer again counts nothing
        redis_conn,
        answer_id="a1",
        model=MODEL,
        channel_id="C1",
        created_at=day1,
        prompt_tokens=1000,
        completion_tokens=500,
        cost=1.0,
        retention_s=3600,
    )
    _save(store, "a2", model=MODEL, channel="C2", created_at=day2)
    _save(store, "a3", model="tuneloop-local-3", channel="C1", created_at=day2)

    total = satisfaction.totals(redis_conn, MODEL)
    assert total.answers == 2
    assert total.prompt_tokens == 2000 and total.completion_tokens == 1000
    # fine-tuned gpt-4o-mini: $0.30 / 1M prompt, $1.20 / 1M completion
    assert total.cost == pytest.approx(2 * (1000 * 0.30 + 500 * 1.20) / 1e6)
    assert total.cost_per_answer == pytest.approx(0.0009)
    assert set(satisfaction.by_channel(redis_conn, MODEL)) == {"C1", "C2"}
    assert list(satisfaction.by_day(redis_conn, MODEL)) == ["2024-02-29", "2024-03-01"]
    local = satisfaction.totals(redis_conn, "tuneloop-local-3")
    assert (local.answers, local.unpriced, local.cost) == (1, 1, 0.0)
    assert local.cost_per_answer is None
    assert satisfaction.models(redis_conn) == [MODEL, "tuneloop-local-3"]


def test_the_scripts_day_is_the_utc_date(redis_conn: Redis) -> None:
    store = Store(redis_conn, retention_s=3600)
    moments = [0.0, 951_868_799.0, 951_868_800.0, 4_102_444_799.0, 1_767_225_600.5]
    for n, moment in enumerate(moments):
        _save(store, f"d{n}", model="m", channel="C1", created_at=moment)
    assert list(satisfaction.by_day(redis_conn, "m")) == sorted(
        satisfaction.day_of(m) for m in moments
    )
    assert satisfaction.day_of(951_868_799.0) == "2000-02-29"


def test_a_changed_vote_moves_counts_and_a_withdrawn_one_leaves(redis_conn: Redis) -> None:
    store = Store(redis_conn, retention_s=3600)
    _save(store, "a1", model=MODEL, channel="C1", created_at=1_700_000_000.0)

    assert store.record_vote("a1", "U1", Vote.UP, VoteSource.BUTTON) is VoteResult.RECORDED
    assert store.record_vote("a1", "U2", Vote.UP, VoteSource.REACTION) is VoteResult.RECORDED
    assert satisfaction.totals(redis_conn, MODEL) == Totals(
        answers=1, up=2, prompt_tokens=1000, completion_tokens=500, cost=0.0009
    )
    assert store.record_vote("a1", "U1", Vote.DOWN, VoteSource.BUTTON) is VoteResult.CHANGED
    t = satisfaction.totals(redis_conn, MODEL)
    assert (t.up, t.down, t.up_rate) == (1, 1, 0.5)
    store.record_vote("a1", "U1", Vote.DOWN, VoteSource.BUTTON)  # unchanged: nothing moves
    assert store.record_vote("a1", "U2", None, VoteSource.REACTION) is VoteResult.REMOVED
    t = satisfaction.totals(redis_conn, MODEL)
    assert (t.up, t.down) == (0, 1)
    channel = satisfaction.by_channel(redis_conn, MODEL)["C1"]
    assert (channel.up, channel.down) == (0, 1)
    day = satisfaction.by_day(redis_conn, MODEL)["2023-11-14"]
    assert (day.up, day.down) == (0, 1)
    # synchronising again (a retried call) changes nothing
    satisfaction.sync_feedback(redis_conn, "a1", "U1")
    assert satisfaction.totals(redis_conn, MODEL) == t


def test_a_correction_counts_once_per_user(redis_conn: Redis) -> None:
    store = Store(redis_conn, retention_s=3600)
    _save(store, "a1", model=MODEL, channel="C1", created_at=1_700_000_000.0)
    assert store.add_correction("a1", "U1", "It is 42.")
    assert store.add_correction("a1", "U1", "It is 42, really.")
    assert store.add_correction("a1", "U2", "42")
    assert not store.add_correction("gone", "U1", "x")
    assert satisfaction.totals(redis_conn, MODEL).corrections == 2
    assert redis_conn.ttl(keys.sat_counted("a1")) == -1  # kept with the rated answer


def test_summaries_carry_the_lineage(redis_conn: Redis) -> None:
    import json

    store = Store(redis_conn, retention_s=3600)
    _save(store, "a1", model="base", channel="C1", created_at=1.0)
    info = {"model": MODEL, "parent": "base", "run_id": "run-1", "set_id": "set-0001"}
    redis_conn.hset(keys.MODELS, MODEL, json.dumps({**info, "created_at": 2.0}))
    got = satisfaction.summaries(redis_conn)
    assert [s.model for s in got] == ["base", MODEL]
    assert (got[1].parent, got[1].run_id, got[1].set_id) == ("base", "run-1", "set-0001")
    assert got[1].totals.answers == 0
