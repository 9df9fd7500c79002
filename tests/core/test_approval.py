"""The approval policy and the admin's decisions, on a real Redis."""

from __future__ import annotations

import time

import pytest
from redis import Redis

from core import approval, approved, keys
from core.approval import Decision, Outcome
from core.settings import ApprovalMode, ApprovalSettings
from core.store import AnswerRecord, Store, Vote, VoteSource

SYSTEM = {"role": "system", "content": "You are tuneloop."}


@pytest.fixture
def store(redis_conn: Redis) -> Store:
    return Store(redis_conn, retention_s=3600)


def answer(store: Store, answer_id: str = "C1-1", asker: str = "U1") -> AnswerRecord:
    record = AnswerRecord(
        answer_id=answer_id,
        team_id="T1",
        channel_id="C1",
        thread_ts="1.1",
        question_ts="1.1",
        user_id=asker,
        messages=[SYSTEM, {"role": "user", "content": f"Question of {answer_id}?"}],
        answer=f"Answer of {answer_id}.",
        model="gpt-4o-mini-2024-07-18",
        prompt_tokens=10,
        completion_tokens=5,
        latency_ms=100,
        created_at=time.time(),
        message_ts=("2.2",),
    )
    store.save_answer(record)
    return record


def vote(store: Store, answer_id: str, user: str, value: Vote) -> None:
    store.record_vote(answer_id, user, value, VoteSource.BUTTON)


def logged(redis: Redis) -> list[approved.Example]:
    return [example for _, example in approved.read_after(redis)]


BOTH = ApprovalSettings(mode=ApprovalMode.BOTH, asker_upvote_approves=True, min_upvotes=2)


def test_the_askers_thumbs_up_approves(store: Store) -> None:
    record = answer(store)
    vote(store, record.answer_id, "U1", Vote.UP)
    assert approval.auto_approve(store, BOTH, record.answer_id)
    [example] = logged(store.redis)
    assert example.messages == [*record.messages, {"role": "assistant", "content": record.answer}]
    assert example.approved_by == approval.AUTO_APPROVER
    assert approval.decision_of(store.redis, record.answer_id)["decision"] == "approved"
    assert not approval.auto_approve(store, BOTH, record.answer_id), "decided once"
    assert len(logged(store.redis)) == 1


def test_enough_thumbs_up_and_no_thumbs_down_approve(store: Store) -> None:
    record = answer(store)
    vote(store, record.answer_id, "U2", Vote.UP)
    assert not approval.auto_approve(store, BOTH, record.answer_id)
    vote(store, record.answer_id, "U3", Vote.UP)
    assert approval.auto_approve(store, BOTH, record.answer_id)


def test_a_thumbs_down_or_a_correction_leaves_it_to_an_admin(store: Store) -> None:
    disputed = answer(store, "C1-1")
    for user in ("U1", "U2", "U3"):
        vote(store, disputed.answer_id, user, Vote.UP)
    vote(store, disputed.answer_id, "U4", Vote.DOWN)
    assert not approval.auto_approve(store, BOTH, disputed.answer_id)
    corrected = answer(store, "C1-2")
    vote(store, corrected.answer_id, "U1", Vote.UP)
    store.add_correction(corrected.answer_id, "U2", "Better answer.")
    assert not approval.auto_approve(store, BOTH, corrected.answer_id)
    assert logged(store.redis) == []


def test_admin_mode_never_approves_automatically(store: Store) -> None:
    record = answer(store)
    for user in ("U1", "U2", "U3"):
        vote(store, record.answer_id, user, Vote.UP)
    admin_only = ApprovalSettings(mode=ApprovalMode.ADMIN)
    assert not approval.auto_approve(store, admin_only, record.answer_id)
    no_asker_rule = ApprovalSettings(
        mode=ApprovalMode.AUTO, asker_upvote_approves=False, min_upvotes=4
    )
    assert not approval.auto_approve(store, no_asker_rule, record.answer_id)
    assert logged(store.redis) == []


def test_admin_decisions_log_the_right_example_once(store: Store) -> None:
    plain = answer(store, "C1-1")
    corrected = answer(store, "C1-2")
    edited = answer(store, "C1-3")
    rejected = answer(store, "C1-4")
    store.add_correction(corrected.answer_id, "U2", "First try.")
    time.sleep(0.01)
    store.add_correction(corrected.answer_id, "U3", "The newest correction.")

    assert (
        approval.decide(store, plain.answer_id, Decision.APPROVED, by="UA").outcome is Outcome.DONE
    )
    assert approval.decide(store, corrected.answer_id, Decision.CORRECTED, by="UA").stream_id
    assert approval.decide(
        store, edited.answer_id, Decision.EDITED, by="UA", text=" Edited by the admin. "
    ).stream_id
    result = approval.decide(store, rejected.answer_id, Decision.REJECTED, by="UA")
    assert result.outcome is Outcome.DONE and result.stream_id is None

    by_answer = {e.answer_id: e for e in logged(store.redis)}
    assert set(by_answer) == {"C1-1", "C1-2", "C1-3"}
    assert by_answer["C1-1"].rejected is None
    assert by_answer["C1-2"].messages[-1]["content"] == "The newest correction."
    assert by_answer["C1-2"].rejected == corrected.answer
    assert by_answer["C1-3"].messages[-1]["content"] == "Edited by the admin."
    assert by_answer["C1-3"].rejected == edited.answer

    again = approval.decide(store, rejected.answer_id, Decision.APPROVED, by="UB")
    assert again.outcome is Outcome.ALREADY_DECIDED
    assert again.previous["decision"] == "rejected" and again.previous["by"] == "UA"
    assert len(logged(store.redis)) == 3
    assert approval.decide(store, "C1-404", Decision.APPROVED, by="UA").outcome is (
        Outcome.NO_SUCH_ANSWER
    )
    no_correction = answer(store, "C1-5")
    assert approval.decide(store, no_correction.answer_id, Decision.CORRECTED, by="UA").outcome is (
        Outcome.NO_CORRECTION
    )
    assert not store.redis.hexists(keys.REVIEWED, "C1-5")


def test_pending_lists_undecided_rated_answers_oldest_first(store: Store) -> None:
    for n in range(1, 5):
        record = answer(store, f"C1-{n}")
        vote(store, record.answer_id, "U2", Vote.UP if n % 2 else Vote.DOWN)
    answer(store, "C1-9")  # never rated: not for review
    store.add_correction("C1-2", "U2", "Say it better.")
    approval.decide(store, "C1-3", Decision.REJECTED, by="UA")

    items = approval.pending(store, 10)
    assert [i.answer_id for i in items] == ["C1-1", "C1-2", "C1-4"]
    second = items[1]
    assert (second.up, second.down) == (0, 1)
    assert second.question == "Question of C1-2?"
    assert (
        second.latest_correction is not None and second.latest_correction.text == "Say it better."
    )
    assert approval.pending_count(store.redis) == 3
    assert [i.answer_id for i in approval.pending(store, 2)] == ["C1-1", "C1-2"]


def test_every_logged_example_enters_the_replay_reservoir_with_its_append(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(approved, "RESERVOIR_SIZE", 8)
    redis = store.redis
    logged = []
    for i in range(4):
        answer(store, f"C1-{i}")
        logged.append(approval.decide(store, f"C1-{i}", Decision.APPROVED, by="UA").stream_id)
    for i in range(4, 40):
        example = approved.Example(
            messages=[
                SYSTEM,
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": "a"},
            ],
            source="import:x.jsonl",
        )
        logged.append(approved.append(redis, example))
    approval.decide(store, "C1-0", Decision.APPROVED, by="UB")  # decided before: nothing logged

    sample = {raw.decode() for raw in redis.hvals(keys.APPROVED_RESERVOIR)}
    assert int(redis.get(keys.APPROVED_RESERVOIR_SEEN)) == 40
    assert len(sample) == 8 and sample <= set(logged)
    # A uniform sample of the whole log, not its first 8 (the chance of keeping exactly
    # those is 1 / C(40, 8), one in 76,904,685).
    assert sample != set(logged[:8])
    assert approved.replay_pool(redis, logged[-1]) == sorted(sample, key=approved.position)
    assert approved.replay_pool(redis, "0-1") == []
