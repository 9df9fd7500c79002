"""Answers written by the web process itself, and what happens to them if it dies.

Most questions are answered in the web process, as coroutines on its answer engine
(:mod:`bot.engine`): no hop through a queue, so the model is called as soon as the
question arrives. To keep the crash safety of a queued job, the claim that makes a
message ours, written before Slack gets its ack, also writes an entry in the in-flight
journal (one Lua script, see :meth:`Store.claim_message`); the entry goes when the answer
is shown in full (feedback row and all), or in the same transaction that queues it for
the answer workers. Every web process refreshes a heartbeat key while it lives and sweeps
the journal: an entry whose owner has stopped beating for ``recover_after_s`` is adopted
by exactly one sweeper and queued as an ordinary answer job for the answer workers.

Only a process whose heartbeat runs (:meth:`AnswerJournal.start`) answers in-process;
any other hands every question to the queue.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.client import Pipeline
from redis.exceptions import RedisError

from core.store import AnswerState, Store

logger = logging.getLogger(__name__)

Requeue = Callable[[dict[str, Any], list[str], Pipeline], None]
"""Queues a recovered question again: its fields, the ts of the messages the dead process
had already shown (an unfinished answer to mark as cut off), and the pipeline the job's
writes join (executed with the journal entry's removal)."""


@dataclass
class Entry:
    """One answer being written in this process, as its journal entry records it."""

    answer_id: str
    owner: str
    at: float
    question: dict[str, Any]
    shown: list[str] = field(default_factory=list)

    def dumps(self) -> str:
        """The entry's JSON in the journal."""
        return json.dumps(
            {"owner": self.owner, "at": self.at, "question": self.question, "shown": self.shown}
        )

    @classmethod
    def loads(cls, answer_id: str, raw: str) -> Entry:
        """Inverse of :meth:`dumps`; ValueError if ``raw`` is no entry."""
        try:
            data = json.loads(raw)
            return cls(
                answer_id,
                str(data["owner"]),
                float(data["at"]),
                dict(data["question"]),
                [str(ts) for ts in data.get("shown", [])],
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a journal entry: {exc}") from exc


class AnswerJournal:
    """The in-flight answers of one web process: capacity, heartbeat and recovery sweep."""

    def __init__(self, store: Store, *, capacity: int, recover_after_s: float) -> None:
        self.store = store
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.recover_after_s = recover_after_s
        self._slots = threading.BoundedSemaphore(capacity) if capacity else None
        self._unfinished: list[tuple[str, str, AnswerState]] = []
        # Entries this process adopted from dead ones, not yet queued: answer id -> the
        # entry it wrote (kept from before the write, whose reply a Redis restart can lose)
        self._adopted: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, requeue: Requeue, chores: Sequence[Callable[[], object]] = ()) -> None:
        """Beat now (so entries written from here on have a live owner), then keep beating
        and sweeping in the background; orphans are handed to ``requeue``. ``chores`` are
        other periodic checks of the process, run after each sweep."""
        if self._thread is not None:
            return
        self._beat()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(requeue, chores), name="answer-journal", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop beating (call after the listeners have finished): whatever this process
        still holds is recovered by another one from now on."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=10)
        self._retry_unfinished()
        try:
            self.store.stop_beating(self.owner)
        except RedisError:
            logger.warning("Redis unavailable: the answer heartbeat will expire by itself")

    @property
    def interval_s(self) -> float:
        """How often the heartbeat is refreshed and the journal swept."""
        return self.recover_after_s / 3

    def _run(self, requeue: Requeue, chores: Sequence[Callable[[], object]]) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat()
            self._retry_unfinished()
            for chore in (lambda: self.sweep(requeue), *chores):
                try:
                    chore()
                except RedisError:
                    logger.warning("Redis unavailable: a periodic check is skipped this time")
                except Exception:
                    logger.exception("a periodic check failed")

    def _beat(self) -> None:
        try:
            self.store.beat(self.owner, self.recover_after_s)
        except RedisError:
            logger.warning("Redis unavailable: answer heartbeat missed")

    # --- answering ---------------------------------------------------------------------
    def acquire(self) -> bool:
        """A slot for answering in this process, or False (queue the question instead)."""
        if self._thread is None or self._slots is None:
            return False
        return self._slots.acquire(blocking=False)

    def release(self) -> None:
        """Give back the slot of :meth:`acquire`."""
        assert self._slots is not None
        self._slots.release()

    def entry(self, answer_id: str, question: dict[str, Any]) -> Entry:
        """The journal entry for a question this process is about to answer."""
        return Entry(answer_id, self.owner, time.time(), question)

    def finish(self, channel_id: str, message_ts: str, state: AnswerState) -> None:
        """Answering ended: record it, or keep retrying while Redis is away (an entry left
        behind would make another process answer again once this one is gone)."""
        try:
            self.store.finish_answering(channel_id, message_ts, state)
        except RedisError:
            self.finish_later(channel_id, message_ts, state)

    def finish_later(self, channel_id: str, message_ts: str, state: AnswerState) -> None:
        """Recording the end of an answer met a Redis outage: retried on every beat."""
        logger.warning(
            "Redis unavailable: answer %s:%s finished, recorded later", channel_id, message_ts
        )
        with self._lock:
            self._unfinished.append((channel_id, message_ts, state))

    def _retry_unfinished(self) -> None:
        with self._lock:
            pending, self._unfinished = self._unfinished, []
        for args in pending:
            self.finish(*args)

    # --- recovery ----------------------------------------------------------------------
    def sweep(self, requeue: Requeue) -> int:
        """Queue again every answer whose web process died; returns how many.

        An entry counts as orphaned when its owner's heartbeat has expired and it is
        older than ``recover_after_s``. Exactly one sweeper adopts it (the entry, now
        owned by this process, stays in the journal) and then moves it to the queue in
        one transaction: a sweeper killed in between leaves an entry of a dead owner
        again, and one whose queueing failed retries it on the next sweep.
        """
        now = time.time()
        alive: dict[str, bool] = {self.owner: True}
        recovered = 0
        entries = self.store.inflight()
        self._adopted = {a: e for a, e in self._adopted.items() if entries.get(a) == e}
        for answer_id, raw in entries.items():
            try:
                entry = Entry.loads(answer_id, raw)
            except ValueError:
                logger.error("dropping a malformed in-flight entry for %s", answer_id)
                self.store.take_inflight(answer_id, raw)
                continue
            if self._adopted.get(answer_id) != raw:
                if now - entry.at < self.recover_after_s:
                    continue
                if entry.owner not in alive:
                    alive[entry.owner] = self.store.owner_alive(entry.owner)
                if alive[entry.owner]:
                    continue
                mine = dataclasses.replace(entry, owner=self.owner, at=now).dumps()
                self._adopted[answer_id] = mine
                if not self.store.adopt_inflight(answer_id, raw, mine):
                    del self._adopted[answer_id]
                    continue
            self.store.hand_to_queue(answer_id, functools.partial(_requeue, requeue, entry))
            self._adopted.pop(answer_id, None)
            logger.warning("answer %s queued again: the process writing it stopped", answer_id)
            recovered += 1
        return recovered


def _requeue(requeue: Requeue, entry: Entry, pipeline: Pipeline) -> None:
    """Queue ``entry``'s question again, its job's writes joining ``pipeline``."""
    requeue(entry.question, entry.shown, pipeline)
