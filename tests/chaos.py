"""Chaos trials against the real processes, shared by tests/test_chaos.py (short, in CI)
and bench/chaos.py (longer): two web processes and an answer worker SIGKILLed at random
while dozens of questions are in flight, Redis restarted while answers stream, Slack
answering 429 beyond the client's retries. A ledger keeps every question and vote Slack
got a 200 for; the result lists what was lost or doubled.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from redis import Redis
from redis.exceptions import RedisError
from rq.registry import StartedJobRegistry

from core import keys
from tests import payloads
from tests.bot.conftest import SIGNING_SECRET
from tests.emulators.slack import SlackEmulator
from tests.processes import Process, start

SENDERS = 16
ANSWER = " ".join(f"word{i}" for i in range(40))  # streams (over one buffer) in ~0.3 s
CHAOS_SETTINGS = {"slack": {"recover_after_s": 3, "inline_answers": 24}}


class Restartable(Protocol):
    """A Redis server the trials can stop and start again (its data on disk)."""

    port: int

    def stop(self) -> None: ...

    def start(self) -> None: ...


@dataclass
class Ledger:
    """What Slack was told: questions and votes acknowledged with a 200."""

    questions: dict[str, str] = field(default_factory=dict)  # question ts -> channel
    votes: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    """(answer ts, user) -> (channel, vote)"""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Result:
    """What the trials found: acknowledged counts, and the ts of what went wrong."""

    trials: int = 0
    questions: int = 0
    votes: int = 0
    unanswered: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    votes_lost: list[tuple[str, str]] = field(default_factory=list)
    kills: int = 0
    details: list[str] = field(default_factory=list)
    """For each question unanswered or doubled: what Redis and Slack hold about it."""


class Cluster:
    """Two web processes and one answer worker, each restartable after a SIGKILL."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = {**env, "LOG_LEVEL": "WARNING"}
        self.redis = Redis.from_url(env["REDIS_URL"])
        self.logs = logs
        self.lock = threading.Lock()
        self.webs: list[tuple[Process, str]] = [self._start_web(i) for i in range(2)]
        self.worker = self._start_worker()

    def _start_web(self, i: int) -> tuple[Process, str]:
        port = payloads.free_port()
        log = self.logs / f"web{i}-{time.monotonic_ns()}.log"
        web = start([sys.executable, "-m", "bot"], {**self.env, "PORT": str(port)}, log)
        deadline = time.monotonic() + 60
        while True:  # /healthz answers 200 only once the process is ready
            assert web.proc.poll() is None, web.output()[-2000:]
            health = f"http://127.0.0.1:{port}/healthz"
            with (
                suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(health, timeout=2),
            ):
                return web, f"http://127.0.0.1:{port}/slack/events"
            assert time.monotonic() < deadline, "the web process did not become ready"
            time.sleep(0.1)

    def _start_worker(self) -> Process:
        rq = str(Path(sys.executable).parent / "rq")
        args = [rq, "worker", "-w", "rq.worker.SimpleWorker", "--url", self.env["REDIS_URL"]]
        log = self.logs / f"worker-{time.monotonic_ns()}.log"
        return start([*args, keys.QUEUE_ANSWERS], self.env, log)

    def url(self, rng: random.Random) -> str:
        with self.lock:
            return rng.choice(self.webs)[1]

    def kill_web(self, i: int) -> None:
        """SIGKILL web process ``i`` (a crash: no drain) and start a new one in its place."""
        with self.lock:
            web, _ = self.webs[i]
        web.stop(signal.SIGKILL)
        replacement = self._start_web(i)
        with self.lock:
            self.webs[i] = replacement

    def kill_worker(self) -> None:
        """SIGKILL the answer worker and start another."""
        self.worker.stop(signal.SIGKILL)
        self._replace_worker()

    def ensure_worker(self) -> None:
        """Start a worker again if it exited (an RQ worker quits when Redis goes away)."""
        if self.worker.proc.poll() is not None:
            self._replace_worker()

    def _replace_worker(self) -> None:
        """Start the next worker once the dead one's jobs count as abandoned. RQ notices
        that only when their heartbeat expires (minutes); the single worker being dead,
        every job still marked running is abandoned, so the trials let that time pass
        (as tests/bot/test_faults.py does) and RQ's retry queues them again."""
        with suppress(RedisError):
            registry = StartedJobRegistry(keys.QUEUE_ANSWERS, connection=self.redis)
            registry.cleanup(timestamp=time.time() + 3600)
        self.worker = self._start_worker()

    def stop(self) -> None:
        for web, _ in self.webs:
            web.stop()
        self.worker.stop()


def complete_answers(slack: SlackEmulator, channel: str, ts: str) -> list[dict]:
    """The bot's finished answers to a question: its messages carrying the feedback row
    (a dead attempt's message is cut off without one)."""
    return [
        m
        for m in slack.messages(channel, ts)
        if m.get("user") == "UBOT"
        and any(b.get("type") == "context_actions" for b in m.get("blocks") or [])
    ]


def _ask(cluster: Cluster, slack: SlackEmulator, ledger: Ledger, rng: random.Random) -> None:
    channel = f"C{rng.randrange(4)}"
    ts = slack.add_message(channel, "<@UBOT> chaos?", "U1")
    event = payloads.mention("chaos?", channel=channel, ts=ts)
    body = payloads.json_body(payloads.event_envelope(event))
    with suppress(OSError):  # a process killed mid-request: no 200, so not acknowledged
        response = payloads.post(cluster.url(rng), body, "application/json", secret=SIGNING_SECRET)
        if response.status == 200:
            with ledger.lock:
                ledger.questions[ts] = channel


def _vote(
    cluster: Cluster, ledger: Ledger, rng: random.Random, channel: str, answer_ts: str
) -> None:
    user, vote = f"U{rng.randrange(100, 999)}", rng.choice(["up", "down"])
    click = payloads.feedback_click(vote, user=user, channel=channel, message_ts=answer_ts)
    with suppress(OSError):
        response = payloads.post(
            cluster.url(rng),
            payloads.interactive_body(click),
            "application/x-www-form-urlencoded",
            secret=SIGNING_SECRET,
        )
        if response.status == 200:
            with ledger.lock:
                ledger.votes[(answer_ts, user)] = (channel, vote)


def _answer_counts(
    cluster: Cluster, slack: SlackEmulator, ledger: Ledger, within_s: float
) -> dict[str, int]:
    """Wait (bounded) until every acknowledged question has a finished answer, restarting
    the worker whenever it exits (as the Procfile's supervisor would); returns question
    ts -> number of finished answers."""
    deadline = time.monotonic() + within_s
    while True:
        cluster.ensure_worker()
        with ledger.lock:
            questions = dict(ledger.questions)
        counts = {ts: len(complete_answers(slack, ch, ts)) for ts, ch in questions.items()}
        if all(counts.values()) or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def _what_happened(redis: Redis, slack: SlackEmulator, channel: str, ts: str) -> str:
    answer_id = f"{channel}-{ts}"
    job = redis.hgetall(f"rq:job:answer-{answer_id.replace('.', '_')}")
    calls = [(c.method, c.error) for c in slack.calls() if c.args.get("thread_ts") == ts]
    return (
        f"{answer_id}: claimed={redis.get(keys.claimed_message(channel, ts))!r} "
        f"inflight={redis.hget(keys.INFLIGHT, answer_id)!r} "
        f"unposted={redis.hexists(keys.UNPOSTED, answer_id)} "
        f"stored={redis.exists(keys.answer(answer_id))} "
        f"job_status={job.get(b'status')!r} exc={(job.get(b'exc_info') or b'')[-300:]!r} "
        f"messages={[(m.get('user'), m.get('text', '')[:30]) for m in slack.messages(channel, ts)]} "
        f"calls={calls}"
    )


def run(
    cluster: Cluster,
    slack: SlackEmulator,
    redis_server: Restartable,
    *,
    trials: int,
    questions: int,
    seed: int,
    answered_within_s: float = 90.0,
) -> Result:
    """Run ``trials`` rounds of ``questions`` sent at once, with one web process and the
    worker SIGKILLed at random moments in each; Slack rate limits in every third trial and
    Redis restarts in every other one. Then votes on stored answers, checked at the end."""
    rng = random.Random(seed)
    ledger = Ledger()
    result = Result()
    redis = Redis(port=redis_server.port)
    for trial in range(trials):
        if trial % 3 == 0:  # Slack rate limits beyond the client's retries for a while
            slack.fail_next("chat.startStream", status=429, retry_after=0, times=8)
            slack.fail_next("chat.postMessage", status=429, retry_after=0, times=8)
        web_kill = threading.Timer(rng.uniform(0.2, 1.0), cluster.kill_web, args=(trial % 2,))
        worker_kill = threading.Timer(rng.uniform(0.3, 1.5), cluster.kill_worker)
        web_kill.start()
        worker_kill.start()
        before = set(ledger.questions)
        with ThreadPoolExecutor(SENDERS) as pool:
            list(pool.map(lambda _: _ask(cluster, slack, ledger, rng), range(questions)))
        web_kill.join()
        worker_kill.join()
        result.kills += 2
        if trial % 2 == 0:  # Redis restarts while answers are still streaming
            redis_server.stop()
            redis_server.start()
        counts = _answer_counts(cluster, slack, ledger, answered_within_s)
        fresh = {ts: n for ts, n in counts.items() if ts not in before}
        result.unanswered += [ts for ts, n in fresh.items() if n == 0]
        result.doubled += [ts for ts, n in fresh.items() if n > 1]
        for ts, n in fresh.items():
            if n != 1:
                result.details.append(_what_happened(redis, slack, ledger.questions[ts], ts))

        # Votes on stored answers (one stored unrecorded while Redis was away is answered
        # "no longer in my records", which tells the user the vote was not stored).
        stored = []
        for ts in sorted(fresh):
            channel = ledger.questions[ts]
            for message in complete_answers(slack, channel, ts)[:1]:
                if redis.exists(keys.message_answer(channel, message["ts"])):
                    stored.append((channel, message["ts"]))
        with ThreadPoolExecutor(SENDERS) as pool:
            for channel, answer_ts in rng.sample(stored, min(16, len(stored))):
                pool.submit(_vote, cluster, ledger, rng, channel, answer_ts)
        result.trials += 1

    for (answer_ts, user), (channel, vote) in ledger.votes.items():
        answer_id = redis.get(keys.message_answer(channel, answer_ts))
        recorded = redis.hget(keys.votes(answer_id.decode()), user) if answer_id else None
        if recorded != vote.encode():
            result.votes_lost.append((answer_ts, user))
    result.questions, result.votes = len(ledger.questions), len(ledger.votes)
    return result
