"""Canary assignment and decision rules (real Redis)."""

from __future__ import annotations

import threading

import pytest
from redis import Redis

from core import canary, keys
from core.canary import Outcome, Progress
from core.settings import CanarySettings, Settings, load_behaviour

CAND, INC = "ft:gpt-4o-mini-2024-07-18:org:tuneloop:new", "gpt-4o-mini-2024-07-18"


@pytest.fixture
def settings() -> Settings:
    base = load_behaviour()
    return base.model_copy(update={"canary": CanarySettings(enabled=True, share=0.3)})


def test_assignment_is_deterministic_and_follows_the_share() -> None:
    buckets = [canary.bucket("C1", f"{1_700_000_000 + i}.000100") for i in range(4000)]
    assert buckets == [canary.bucket("C1", f"{1_700_000_000 + i}.000100") for i in range(4000)]
    below = sum(1 for b in buckets if b < 0.1)
    assert 320 <= below <= 480  # 400 expected; 4 standard deviations either side
    assert all(0.0 <= b < 1.0 for b in buckets)


def _thread_in(share: float, below: bool, start: int = 0) -> str:
    for i in range(start, start + 1000):
        ts = f"{1_700_000_000 + i}.000200"
        if (canary.bucket("C1", ts) < share) == below:
            return ts
    raise AssertionError("no such thread")


def test_a_thread_keeps_its_model_through_a_canary(redis_conn: Redis, settings: Settings) -> None:
    early = _thread_in(0.3, below=True)
    assert canary.model_for_thread(redis_conn, settings, "C1", early, INC) == INC
    started = canary.start(
        redis_conn, settings.canary, candidate=CAND, incumbent=INC, run_id="r", by="t"
    )
    assert started is not None
    # the thread began before the canary: it stays with the incumbent though its hash is in
    assert canary.model_for_thread(redis_conn, settings, "C1", early, INC) == INC
    new_in = _thread_in(0.3, below=True, start=500)
    new_out = _thread_in(0.3, below=False, start=500)
    assert canary.model_for_thread(redis_conn, settings, "C1", new_in, INC) == CAND
    assert canary.model_for_thread(redis_conn, settings, "C1", new_out, INC) == INC
    for _ in range(3):  # every process, every follow-up: the same model
        assert canary.model_for_thread(redis_conn, settings, "C1", new_in, INC) == CAND
    assert (
        canary.start(redis_conn, settings.canary, candidate="x", incumbent=INC, run_id="r2", by="t")
        is None
    )
    # once promoted, the candidate's threads keep it and new threads get it
    redis_conn.delete(keys.CANARY)
    assert canary.model_for_thread(redis_conn, settings, "C1", new_in, CAND) == CAND
    assert canary.model_for_thread(redis_conn, settings, "C1", "99.1", CAND) == CAND


def test_a_rolled_back_candidate_stops_answering(redis_conn: Redis, settings: Settings) -> None:
    canary.start(redis_conn, settings.canary, candidate=CAND, incumbent=INC, run_id="r", by="t")
    thread = _thread_in(0.3, below=True)
    assert canary.model_for_thread(redis_conn, settings, "C1", thread, INC) == CAND
    redis_conn.delete(keys.CANARY)
    assert canary.model_for_thread(redis_conn, settings, "C1", thread, INC) == INC


def _seen(cu: int, cd: int, iu: int, idn: int, elapsed: float = 60.0) -> Progress:
    return Progress(cu, cd, iu, idn, elapsed_s=elapsed)


def test_verdict_rules() -> None:
    rules = CanarySettings(enabled=True, min_votes=50, margin=0.05, confidence=0.95)
    assert canary.verdict(_seen(45, 5, 80, 20), rules).outcome is Outcome.PROMOTE
    worse = canary.verdict(_seen(30, 20, 80, 20), rules)
    assert worse.outcome is Outcome.ROLLBACK
    assert worse.z == pytest.approx(-1.875, abs=1e-4)
    assert canary.verdict(_seen(45, 4, 80, 20), rules).outcome is Outcome.CONTINUE
    late = canary.verdict(_seen(45, 4, 80, 20, elapsed=72 * 3600 + 1), rules)
    assert late.outcome is Outcome.ROLLBACK and "time" in late.reason
    forced = canary.verdict(_seen(1, 0, 0, 0), rules, force=Outcome.PROMOTE, by="UADMIN")
    assert (forced.outcome, forced.by, forced.z) == (Outcome.PROMOTE, "UADMIN", None)


def test_the_decision_is_taken_once(redis_conn: Redis, settings: Settings) -> None:
    going = canary.start(
        redis_conn, settings.canary, candidate=CAND, incumbent=INC, run_id="r", by="t"
    )
    assert going is not None
    decision = canary.verdict(_seen(45, 5, 80, 20), settings.canary)
    results: list[object] = []
    barrier = threading.Barrier(6)

    def take() -> None:
        conn = Redis(connection_pool=redis_conn.connection_pool)
        barrier.wait()
        results.append(canary.begin_decision(conn, going.canary_id, decision))

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken = [r for r in results if r is not None]
    assert len(taken) == 1
    state = canary.active(redis_conn)
    assert state is not None and state.state is canary.CanaryState.DECIDING
    canary.finish(redis_conn, state, decision)
    assert canary.active(redis_conn) is None
    assert [h["outcome"] for h in canary.history(redis_conn)] == ["promote"]
    assert not redis_conn.exists(keys.CANARY_LOCK)
