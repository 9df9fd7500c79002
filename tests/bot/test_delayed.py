"""Delayed calls (the "thinking…" status): due calls run, cancelled ones never do."""

from __future__ import annotations

import threading

from bot.delayed import Scheduler


def test_a_due_call_runs_and_a_cancelled_one_never_does() -> None:
    scheduler = Scheduler()
    ran: list[str] = []
    done = threading.Event()
    cancelled = scheduler.call_later(0.05, lambda: ran.append("cancelled"))
    cancelled.cancel_or_wait()
    cancelled.cancel_or_wait()  # settling twice is harmless
    scheduler.call_later(0.1, lambda: (ran.append("due"), done.set()))
    assert done.wait(5)
    assert ran == ["due"]


def test_cancel_or_wait_waits_for_a_call_already_running() -> None:
    scheduler = Scheduler()
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def slow() -> None:
        started.set()
        release.wait(5)
        finished.append(True)

    call = scheduler.call_later(0.0, slow)
    assert started.wait(5)
    threading.Timer(0.2, release.set).start()
    call.cancel_or_wait(timeout=5)
    assert finished == [True], "returned only once the running call had finished"


def test_a_slow_call_does_not_hold_up_the_next_one() -> None:
    scheduler = Scheduler()
    release, second = threading.Event(), threading.Event()
    scheduler.call_later(0.0, lambda: release.wait(5))
    scheduler.call_later(0.05, second.set)
    assert second.wait(4), "the second call ran while the first was still blocked"
    release.set()
