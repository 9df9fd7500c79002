"""Faults injected for real: a worker SIGKILLed mid-answer, Redis restarted mid-conversation."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.registry import StartedJobRegistry

from bot.dispatch import StuckJobs, post_unposted
from core import keys
from core.settings import ROOT
from core.store import AnswerState, AsyncStore, Vote, answer_id_for
from tests import payloads
from tests.bot.conftest import Bot
from tests.bot.test_finetune import wait


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


def kill_worker(proc: subprocess.Popen) -> None:
    """SIGKILL the worker's process group and its work horse at once, as a crash would.

    RQ's forking worker runs each job in a work horse that calls ``setpgrp``: killing the
    group the worker was started in leaves the horse running the job to its end."""
    horses = children(proc.pid)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in horses:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)
    wait(lambda: all(gone(pid) for pid in horses), timeout=10, what="the work horse to die")


@pytest.mark.parametrize("bot_settings", [{"slack": {"inline_answers": 0}}])
def test_a_queued_answer_whose_worker_is_killed_is_answered_by_the_next_worker(bot: Bot) -> None:
    event = bot.says("survive a crash", mention=True)
    bot.openai.script_answer("too slow to finish", first_token_delay_s=30)
    assert bot.event(event).status == 200
    queue = Queue(keys.QUEUE_ANSWERS, connection=bot.redis)
    deadline = time.monotonic() + 5
    while queue.count == 0 and time.monotonic() < deadline:
        time.sleep(0.02)

    rq = str(Path(sys.executable).parent / "rq")
    worker = subprocess.Popen(
        [rq, "worker", "--url", os.environ["REDIS_URL"], "answers"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        bot.openai.wait_for_request("/v1/chat/completions", timeout=20)
    finally:
        kill_worker(worker)

    # The killed worker's heartbeat expires; the next worker's maintenance finds the job.
    registry = StartedJobRegistry(queue=queue)
    assert registry.get_job_ids(cleanup=False), "the killed job is still marked as running"
    registry.cleanup(timestamp=time.time() + 3600)
    bot.openai.reset()
    bot.openai.script_answer("answered after the crash")
    bot.run_worker()

    answers = [m for m in bot.slack.messages("C1", event["ts"]) if m.get("user") == "UBOT"]
    assert [m["text"] for m in answers] == ["answered after the crash"]
    assert bot.services.store.get_answer(answer_id_for("C1", event["ts"])) is not None
    assert queue.failed_job_registry.count == 0


class RedisServer:
    """A redis-server of the test's own, with the append-only file on, restartable."""

    def __init__(self, directory: Path) -> None:
        self.port = payloads.free_port()
        self.directory = directory
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except Exception:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bot_redis_url(own_redis: RedisServer) -> str:
    return f"redis://127.0.0.1:{own_redis.port}/0"


def test_redis_restarted_mid_conversation_keeps_the_thread_and_the_votes(
    bot: Bot, own_redis: RedisServer
) -> None:
    first = bot.says("remember me", mention=True)
    ts = bot.ask(first)
    bot.interact(payloads.feedback_click("up", user="U2", channel="C1", message_ts=ts))
    bot.slack.wait_for("chat.postEphemeral")
    answer_id = answer_id_for("C1", first["ts"])

    own_redis.stop()
    own_redis.start()

    assert bot.services.store.votes(answer_id) == {"U2": Vote.UP}
    follow = bot.says("still there?", thread_ts=first["ts"])
    bot.ask(follow)
    answers = [m for m in bot.slack.messages("C1", first["ts"]) if m.get("user") == "UBOT"]
    assert len(answers) == 2, "the follow-up without mention was answered after the restart"
    assert bot.openai.completions()[-1]["messages"][-2]["content"] == "Echo: remember me"


@pytest.mark.parametrize("bot_settings", [{"slack": {"recover_after_s": 3}}])
def test_an_answer_slack_keeps_refusing_with_429_is_stored_and_posted_later(bot: Bot) -> None:
    # Every post is refused with 429 beyond the client's retries (1 try + 5 retries).
    bot.slack.fail_next("chat.postMessage", status=429, retry_after=0, times=6)
    event = bot.says("are you there?", mention=True)
    bot.event(event)

    answer_id = answer_id_for("C1", event["ts"])
    stored = bot.services.store.get_answer(answer_id)
    assert stored is not None and stored.answer == "Echo: are you there?"
    assert bot.services.store.answer_state("C1", event["ts"]).value == "done"

    # Slack takes messages again: a beat of the web process posts it, feedback row and all.
    def posted() -> list[dict]:
        return [m for m in bot.slack.messages("C1", event["ts"]) if m["user"] == "UBOT"]

    wait(posted, timeout=15, what="the refused answer to be posted")
    [message] = posted()
    assert message["text"] == "Echo: are you there?"
    assert message["blocks"][-1]["type"] == "context_actions"
    # It leaves the unposted hash with the record of its message, just after the post.
    wait(
        lambda: not bot.redis.hexists(keys.UNPOSTED, answer_id),
        timeout=15,
        what="the posted answer to leave tl:unposted",
    )
    bot.interact(payloads.feedback_click("up", user="U1", channel="C1", message_ts=message["ts"]))
    assert bot.services.store.votes(answer_id) == {"U1": Vote.UP}


@pytest.mark.parametrize("bot_settings", [{"slack": {"recover_after_s": 600}}])
def test_an_unposted_answer_whose_poster_died_is_posted_by_another_process(bot: Bot) -> None:
    # Stored unposted (Slack refused it beyond the client's retries); the beat is slow
    # here, so only the explicit calls below post it.
    bot.slack.fail_next("chat.postMessage", status=429, retry_after=0, times=6)
    event = bot.says("are you there?", mention=True)
    bot.event(event)
    answer_id = answer_id_for("C1", event["ts"])
    raw = bot.services.store.unposted()[answer_id]

    # A process that is alive took it and is posting it: nobody else posts it meanwhile.
    store = bot.services.store
    store.beat("web-b", 30)
    assert store.take_unposted(answer_id, raw, "web-b")
    assert post_unposted(bot.services) == 0
    # Then it is SIGKILLed before Slack got the post: its heartbeat stops.
    store.stop_beating("web-b")
    assert post_unposted(bot.services) == 1
    posted = [m for m in bot.slack.messages("C1", event["ts"]) if m["user"] == "UBOT"]
    assert [m["text"] for m in posted] == ["Echo: are you there?"]
    assert not bot.redis.hexists(keys.UNPOSTED, answer_id)
    assert post_unposted(bot.services) == 0, "posted once"


@pytest.mark.parametrize("bot_settings", [{"slack": {"inline_answers": 0}}])
def test_a_worker_killed_after_storing_an_answer_before_its_feedback_row_leaves_it_to_retry(
    bot: Bot,
) -> None:
    # The answer is stored just before its feedback row is shown (so a click always
    # finds it); a worker SIGKILLed right there must not leave the question marked done.
    long_answer = " ".join(f"word{i}" for i in range(40))  # streamed, over several chunks
    bot.openai.chunk_delay_s = 0.02
    bot.openai.answer_fn = lambda body: long_answer
    event = bot.says("finish me", mention=True)
    assert bot.event(event).status == 200

    def dies_after_storing() -> None:  # a forked worker, killed right after the store write
        save = AsyncStore.save_answer

        async def save_then_die(self: AsyncStore, *args: Any, **kwargs: Any) -> None:
            await save(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        AsyncStore.save_answer = save_then_die  # type: ignore[method-assign]
        bot.run_worker()

    child = multiprocessing.get_context("fork").Process(target=dies_after_storing)
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    assert bot.services.store.get_answer(answer_id_for("C1", event["ts"])) is not None

    # RQ finds the abandoned job (the dead worker's heartbeat expired) and retries it.
    StartedJobRegistry(keys.QUEUE_ANSWERS, connection=bot.redis).cleanup(time.time() + 3600)
    bot.run_worker()
    finished = [
        m
        for m in bot.slack.messages("C1", event["ts"])
        if m.get("user") == "UBOT"
        and any(b.get("type") == "context_actions" for b in m.get("blocks") or [])
    ]
    assert [m["text"] for m in finished] == [long_answer]
    assert bot.services.store.answer_state("C1", event["ts"]) is AnswerState.DONE


@pytest.mark.parametrize("bot_settings", [{"slack": {"inline_answers": 0}}])
def test_an_answer_job_taken_by_a_worker_that_died_before_starting_it_is_queued_again(
    bot: Bot,
) -> None:
    event = bot.says("taken, never started", mention=True)
    assert bot.event(event).status == 200
    queue = Queue(keys.QUEUE_ANSWERS, connection=bot.redis)
    # What rq's worker does first (BLMOVE to the intermediate list); it died before
    # registering the job as started (SIGKILL, or Redis restarted under it).
    job_id = bot.redis.lmove(queue.key, queue.intermediate_queue_key)
    assert job_id is not None and queue.count == 0

    rescue = StuckJobs(bot.services, after_s=0.2)
    wait(
        rescue,
        timeout=10,
        what="the taken job to leave the intermediate list (it stayed in no queue)",
    )
    assert rescue() == 0, "queued again once"
    bot.run_worker()
    answers = [m["text"] for m in bot.slack.messages("C1", event["ts"]) if m["user"] == "UBOT"]
    assert answers == ["Echo: taken, never started"]
