"""Calls made after a delay unless cancelled first, timed by one thread per process.

Every answer schedules a "thinking…" status that almost never fires (fast models answer
before it is due). A ``threading.Timer`` per answer costs a thread start and join, about
0.2 ms, on every answer; here scheduling is a heap push and cancelling a flag, and the
timer thread wakes at most about every ``COALESCE_S`` however many answers pass. Calls
that do come due run (up to ``COALESCE_S`` late) on a small pool, so one slow Slack call
never holds up another.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import Enum

logger = logging.getLogger(__name__)

RUNNER_THREADS = 4
COALESCE_S = 0.05


class _State(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class Delayed:
    """One scheduled call: cancel it, or wait for it if it has already started."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn
        self._state = _State.PENDING
        self._lock = threading.Lock()
        self._finished = threading.Event()

    @property
    def pending(self) -> bool:
        """Neither started nor cancelled."""
        return self._state is _State.PENDING

    def cancel_or_wait(self, timeout: float | None = None) -> None:
        """Cancel the call if it has not started; otherwise wait until it has returned."""
        with self._lock:
            if self._state is _State.PENDING:
                self._state = _State.CANCELLED
            if self._state is not _State.RUNNING:
                return
        self._finished.wait(timeout)

    def _run(self) -> None:
        with self._lock:
            if self._state is not _State.PENDING:
                return
            self._state = _State.RUNNING
        try:
            self._fn()
        except Exception:
            logger.exception("a delayed call failed")
        finally:
            self._state = _State.DONE
            self._finished.set()


class Scheduler:
    """Runs :class:`Delayed` calls when they are due; starts its thread on first use."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Delayed]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._runners = ThreadPoolExecutor(RUNNER_THREADS, thread_name_prefix="delayed")

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Delayed:
        """Call ``fn`` in ``delay_s`` seconds unless the returned handle cancels it first."""
        call = Delayed(fn)
        entry = (time.monotonic() + delay_s, next(self._order), call)
        with self._wake:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
                self._thread.start()
            if self._heap[0] is entry:  # due before everything else: the timer must know
                self._wake.notify()
        return call

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._heap:
                    self._wake.wait()
                due, _, call = self._heap[0]
                wait_s = due - time.monotonic()
                if wait_s > 0:
                    # Oversleep a little: one wake-up then serves every call due meanwhile
                    # (most were cancelled long before), rather than one per answer.
                    self._wake.wait(wait_s + COALESCE_S)
                    continue
                heapq.heappop(self._heap)
            if call.pending:
                self._runners.submit(call._run)


SCHEDULER = Scheduler()
"""The process's scheduler."""
