"""The in-flight journal: answers a dead web process left are queued again, exactly once."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from slack_bolt import BoltRequest

from bot import messages
from bot.answering import Question
from bot.app import build_app
from bot.dispatch import enqueue_answer
from bot.journal import AnswerJournal
from core import keys
from core.store import AnswerState, Store, answer_id_for
from tests import payloads
from tests.bot.conftest import SIGNING_SECRET, Bot
from tests.bot.test_finetune import wait

QUESTION = {
    "team_id": "T1",
    "channel_id": "C1",
    "user_id": "U1",
    "message_ts": "1700000000.000100",
    "thread_ts": "",
    "text": "<@UBOT> hello?",
}


def _store(redis: Redis) -> Store:
    return Store(redis, retention_s=3600)


def _journal(redis: Redis, recover_after_s: float = 3.0) -> AnswerJournal:
    return AnswerJournal(_store(redis), capacity=2, recover_after_s=recover_after_s)


def _claim_as(journal: AnswerJournal, question: dict[str, Any], *, age_s: float = 0.0) -> None:
    entry = journal.entry(answer_id_for(question["channel_id"], question["message_ts"]), question)
    entry.at -= age_s
    journal.store.claim_message(
        question["channel_id"], question["message_ts"], journal_entry=entry.dumps()
    )


class Queued(list):
    """A requeue callable that remembers what it was given."""

    def __call__(self, question: dict[str, Any], shown: list[str], *pipeline: Any) -> None:
        self.append(question)


def test_an_entry_of_a_dead_process_is_queued_again_by_exactly_one_sweeper(
    redis_conn: Redis,
) -> None:
    dead = _journal(redis_conn)
    _claim_as(dead, QUESTION, age_s=10)  # the dead process never beat again
    queued: list[dict[str, Any]] = []
    lock = threading.Lock()

    def requeue(question: dict[str, Any], shown: list[str], pipeline: Any) -> None:
        with lock:
            queued.append(question)

    sweepers = [_journal(redis_conn) for _ in range(4)]
    threads = [threading.Thread(target=s.sweep, args=(requeue,)) for s in sweepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert queued == [QUESTION]
    assert redis_conn.hlen(keys.INFLIGHT) == 0


def test_entries_of_a_live_process_and_young_entries_stay(redis_conn: Redis) -> None:
    alive = _journal(redis_conn)
    alive.store.beat(alive.owner, 30)
    _claim_as(alive, QUESTION, age_s=60)
    dead = _journal(redis_conn)
    young = {**QUESTION, "message_ts": "1700000000.000200"}
    _claim_as(dead, young, age_s=0)

    queued = Queued()
    assert _journal(redis_conn).sweep(queued) == 0
    assert queued == []
    assert redis_conn.hlen(keys.INFLIGHT) == 2


def test_a_failed_requeue_is_retried_by_the_same_sweeper(redis_conn: Redis) -> None:
    _claim_as(_journal(redis_conn), QUESTION, age_s=10)

    def broken(question: dict[str, Any], shown: list[str], pipeline: Any) -> None:
        raise RuntimeError("queue unavailable")

    sweeper = _journal(redis_conn)
    with pytest.raises(RuntimeError):
        sweeper.sweep(broken)
    assert redis_conn.hlen(keys.INFLIGHT) == 1
    queued = Queued()
    assert sweeper.sweep(queued) == 1
    assert queued == [QUESTION]
    assert redis_conn.hlen(keys.INFLIGHT) == 0


def test_a_sweeper_killed_between_taking_an_entry_and_queueing_it_leaves_it_to_another(
    redis_conn: Redis,
) -> None:
    _claim_as(_journal(redis_conn), QUESTION, age_s=10)
    pool = redis_conn.connection_pool.connection_kwargs
    url = f"redis://{pool['host']}:{pool['port']}/{pool.get('db', 0)}"

    def dying_sweep() -> None:  # in a child process: SIGKILLed inside requeue
        def die(question: dict[str, Any], shown: list[str], *pipeline: Any) -> None:
            os.kill(os.getpid(), signal.SIGKILL)

        _journal(Redis.from_url(url), recover_after_s=0.2).sweep(die)

    child = multiprocessing.get_context("fork").Process(target=dying_sweep)
    child.start()
    child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL

    sweeper, queued = _journal(redis_conn, recover_after_s=0.2), Queued()
    wait(lambda: sweeper.sweep(queued), timeout=10, what="the entry the dead sweeper took")
    assert queued == [QUESTION]
    assert redis_conn.hlen(keys.INFLIGHT) == 0


def test_an_adoption_whose_reply_redis_lost_is_still_queued_by_its_sweeper(
    redis_conn: Redis,
) -> None:
    # Redis restarts right after executing the adoption: the sweeper never hears back,
    # but the entry now names it (alive), so no other sweeper will ever take it.
    _claim_as(_journal(redis_conn), QUESTION, age_s=10)
    sweeper = _journal(redis_conn)
    sweeper.store.beat(sweeper.owner, 30)
    adopt = sweeper.store.adopt_inflight

    def adopt_then_lose_the_reply(answer_id: str, entry: str, adopted: str) -> bool:
        adopt(answer_id, entry, adopted)
        raise RedisConnectionError("Connection closed by server.")

    sweeper.store.adopt_inflight = adopt_then_lose_the_reply  # type: ignore[method-assign]
    with pytest.raises(RedisConnectionError):
        sweeper.sweep(Queued())
    sweeper.store.adopt_inflight = adopt  # type: ignore[method-assign]
    queued = Queued()
    assert sweeper.sweep(queued) == 1
    assert queued == [QUESTION]
    assert redis_conn.hlen(keys.INFLIGHT) == 0


def test_a_malformed_entry_is_dropped_not_fatal(redis_conn: Redis) -> None:
    redis_conn.hset(keys.INFLIGHT, "C1-1.2", "{not json")
    _claim_as(_journal(redis_conn), QUESTION, age_s=10)
    queued = Queued()
    assert _journal(redis_conn).sweep(queued) == 1
    assert queued == [QUESTION]
    assert redis_conn.hlen(keys.INFLIGHT) == 0


def test_a_finish_that_meets_a_redis_outage_is_recorded_once_redis_is_back(
    redis_conn: Redis,
) -> None:
    journal = _journal(redis_conn)
    _claim_as(journal, QUESTION)
    nobody = Redis(port=payloads.free_port(), socket_connect_timeout=0.5)
    journal.store = _store(nobody)
    journal.finish("C1", QUESTION["message_ts"], AnswerState.DONE)
    assert redis_conn.hlen(keys.INFLIGHT) == 1, "nothing recorded while Redis is away"
    journal.store = _store(redis_conn)
    journal.start(lambda question, shown: None)
    journal.stop()  # retries what is unfinished
    assert redis_conn.hlen(keys.INFLIGHT) == 0
    assert journal.store.answer_state("C1", QUESTION["message_ts"]) is AnswerState.DONE


def test_a_process_without_a_heartbeat_answers_nothing_in_process(bot: Bot) -> None:
    bot.services.journal.stop()
    bot.event(bot.says("queue me", mention=True))
    assert bot.slack.calls("chat.postMessage") == []
    assert bot.redis.hlen(keys.INFLIGHT) == 0
    bot.run_worker()
    assert bot.slack.calls("chat.postMessage")[0].args["text"] == "Echo: queue me"


@pytest.mark.parametrize("bot_settings", [{"slack": {"inline_answers": 1}}])
def test_questions_beyond_the_in_process_slots_go_to_the_queue(bot: Bot) -> None:
    bot.openai.script_answer("slow, in process", first_token_delay_s=1.0)
    slow = bot.says("first", mention=True)
    bot.post_event(slow)
    bot.openai.wait_for_request("/v1/chat/completions")
    queued = bot.says("second", mention=True, user="U2")
    bot.post_event(queued)
    deadline = time.monotonic() + 5
    while not bot.redis.keys("rq:job:answer-*") and time.monotonic() < deadline:
        time.sleep(0.02)
    bot.listeners.wait_idle()
    assert [m["text"] for m in bot.slack.messages("C1", slow["ts"]) if m["user"] == "UBOT"] == [
        "slow, in process"
    ]
    assert [m for m in bot.slack.messages("C1", queued["ts"]) if m["user"] == "UBOT"] == []
    bot.run_worker()
    assert [m["text"] for m in bot.slack.messages("C1", queued["ts"]) if m["user"] == "UBOT"] == [
        "Echo: second"
    ]


def test_redelivery_during_an_in_process_answer_gives_one_answer(bot: Bot) -> None:
    bot.openai.script_answer("only once", first_token_delay_s=0.5)
    event = bot.says("once please", mention=True)
    bot.post_event(event, event_id="Ev1")
    bot.openai.wait_for_request("/v1/chat/completions")
    assert bot.redis.hlen(keys.INFLIGHT) == 1
    body = payloads.json_body(payloads.event_envelope(event, event_id="Ev2"))
    payloads.post(bot.url, body, "application/json", secret=SIGNING_SECRET)
    bot.listeners.wait_idle()
    bot.run_worker()
    answers = [m for m in bot.slack.messages("C1", event["ts"]) if m["user"] == "UBOT"]
    assert [m["text"] for m in answers] == ["only once"]
    assert bot.redis.hlen(keys.INFLIGHT) == 0


def test_a_recovered_answer_marks_the_dead_attempts_finished_stream_as_cut_off(bot: Bot) -> None:
    event = bot.says("answer me again", mention=True)
    # The dead attempt's message: Slack already ended its stream (no longer streaming).
    partial = bot.slack.add_message("C1", "half an ans", "UBOT", thread_ts=event["ts"])
    question = Question("T1", "C1", "U1", event["ts"], "", event["text"])
    assert bot.services.store.claim_message("C1", event["ts"]) is not None
    enqueue_answer(bot.services, question, cut_off=[partial])
    bot.run_worker()
    texts = [m["text"] for m in bot.slack.messages("C1", event["ts"]) if m["user"] == "UBOT"]
    assert texts == [messages.CUT_OFF, "Echo: answer me again"]


class _DiesAfterTheAck(ThreadPoolExecutor):
    """Bolt's listener pool in a process killed right after Slack got its ack: the
    listener it is handed never runs."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        future.set_result(None)
        return future


@pytest.mark.parametrize(
    "bot_settings",
    [{"slack": {"inline_answers": 16}}, {"slack": {"inline_answers": 0}}],
    ids=["answered-in-process", "queued"],
)
def test_a_question_acknowledged_just_before_the_process_died_is_answered_once(
    bot: Bot, redis_conn: Redis
) -> None:
    # The same bot, but whose process dies between the ack and the listener: on the
    # in-process path before the answer starts, on the queue path before the enqueue.
    dying = _DiesAfterTheAck(max_workers=1)
    app = build_app(bot.services, dying)
    event = bot.says("do not lose me", mention=True)
    body = payloads.json_body(payloads.event_envelope(event))
    response = app.dispatch(_bolt_request(body))
    assert response.status == 200, "Slack was told the question is taken"
    assert bot.openai.completions() == [] and redis_conn.llen("rq:queue:answers") == 0

    # Another web process sweeps once the dead one's heartbeat has expired.
    bot.services.store.stop_beating(bot.services.journal.owner)
    sweeper = _journal(redis_conn, recover_after_s=0.2)
    wait(
        lambda: sweeper.sweep(
            lambda q, shown, pipe: enqueue_answer(bot.services, Question(**q), shown, pipe)
        ),
        timeout=10,
        what="the acknowledged question to be recovered",
    )
    bot.run_worker()
    answers = [m["text"] for m in bot.slack.messages("C1", event["ts"]) if m["user"] == "UBOT"]
    assert answers == ["Echo: do not lose me"]
    assert redis_conn.hlen(keys.INFLIGHT) == 0


def _bolt_request(body: bytes) -> BoltRequest:
    timestamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": payloads.sign(SIGNING_SECRET, timestamp, body),
    }
    return BoltRequest(body=body.decode(), headers=headers)
