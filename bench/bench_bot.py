"""The bot next to a minimal Bolt app doing the same work, in the same run.

Both apps answer a mention inside a thread: they read the thread's history, stream the
same chat completion from the OpenAI emulator (0.5 s to the first token, then 40 pieces
0.05 s apart, about 2.5 s in all) and stream the text into the thread with Slack's
streaming messages. The bot also claims, journals and stores the answer with its
feedback buttons; the minimal app (bench/minimal_app.py, Bolt's AsyncApp) does nothing
else. Both run as separate processes behind their own servers, on the same loopback
emulators.

1. One question at a time, alternating between the apps (which goes first alternates too):
   answer latency (signed event sent → the call completing the answer), time from the
   model's first token to the first visible text in Slack, and the web process's CPU per
   answer. The difference between the apps is the bot's overhead per answer.
2. The concurrency curve: N questions sent at once (N = 10, 100, 200, 500 by default),
   apps alternating which goes first: acknowledgement latency, answer latency, answers
   in flight at the peak, the web process's CPU and its peak RSS, and the memory per
   answer in flight ((peak RSS − RSS before) / peak in flight).

    python -m bench.bench_bot --answers 40 --levels 10,100,200,500
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml
from redis import Redis

from core import keys
from tests import payloads
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-signing-secret"
MODEL = "gpt-4o-mini-2024-07-18"
FINAL_METHODS = ("chat.postMessage", "chat.stopStream")  # the call that completes an answer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def service_env(slack: SlackEmulator, llm: OpenAIEmulator, redis_url: str) -> dict[str, str]:
    """The environment the bot's processes get: the emulators, Redis, quiet logs."""
    return {
        **os.environ,
        "SLACK_BOT_TOKEN": "xoxb-bench",
        "SLACK_SIGNING_SECRET": SECRET,
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": llm.url,
        "SLACK_API_URL": slack.url,
        "REDIS_URL": redis_url,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


def start_bot(env: dict[str, str], port: int, workers: int) -> list[subprocess.Popen]:
    """The web process and a pool of answer workers, as the Procfile runs them."""
    rq = str(Path(sys.executable).parent / "rq")
    return [
        subprocess.Popen([sys.executable, "-m", "bot"], cwd=ROOT, env={**env, "PORT": str(port)}),
        subprocess.Popen(
            [
                rq,
                "worker-pool",
                "-w",
                "workers.rqworker.PooledWorker",
                "-q",
                "--url",
                env["REDIS_URL"],
                "-n",
                str(workers),
                keys.QUEUE_ANSWERS,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM, then wait (and kill what does not stop)."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    channel: str
    pid: int


@dataclass
class Asked:
    """One question sent: its thread, when it was sent and acknowledged."""

    text: str
    thread_ts: str
    sent: float
    ack_s: float


def _ask(target: Target, slack: SlackEmulator, text: str) -> Asked:
    """Post a question as a mention in a thread that already has history, signed."""
    root = slack.add_message(target.channel, f"a thread about {text}", "U2")
    slack.add_message(target.channel, "An earlier answer.", "UBOT", thread_ts=root)
    ts = slack.add_message(target.channel, f"<@UBOT> {text}", "U1", thread_ts=root)
    event = payloads.mention(text, channel=target.channel, ts=ts, thread_ts=root)
    body = payloads.json_body(payloads.event_envelope(event))
    sent = time.time()
    response = payloads.post(target.url, body, "application/json", secret=SECRET, timeout=30)
    assert response.status == 200, response
    return Asked(text, root, sent, time.time() - sent)


@dataclass
class Outcome:
    """What the emulators saw of a batch of questions."""

    answer_s: list[float]
    first_visible_s: list[float]
    peak_in_flight: int


def _outcome(
    target: Target,
    slack: SlackEmulator,
    llm: OpenAIEmulator,
    asked: list[Asked],
    since: int,
    first_token_s: float,
    timeout_s: float,
) -> Outcome:
    """Wait (bounded) until every question's answer is complete, then read its timings."""
    by_thread = {a.thread_ts: a for a in asked}
    done: dict[str, float] = {}
    visible: dict[str, float] = {}
    index = since
    deadline = time.monotonic() + timeout_s
    while len(done) < len(asked):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"{target.name}: {len(asked) - len(done)} answers missing")
        try:
            slack.wait_for_call(lambda c: True, since=index, timeout=remaining)
        except AssertionError:
            continue
        new = slack.calls()[index:]
        index += len(new)
        for call in new:
            if call.method not in ("chat.startStream", *FINAL_METHODS) or call.error:
                continue
            if call.args.get("channel") != target.channel:
                continue
            thread = _thread_of(slack, call)
            if thread not in by_thread:
                continue
            if call.method in ("chat.startStream", "chat.postMessage"):
                visible.setdefault(thread, call.at)
            if call.method in FINAL_METHODS:
                done.setdefault(thread, call.at)
    model_at: dict[str, float] = {}
    texts = {a.text: a.thread_ts for a in asked}
    for request in llm.requests("/v1/chat/completions"):
        content = str(request.body["messages"][-1]["content"])
        for text, thread in texts.items():
            if content.endswith(text):
                model_at.setdefault(thread, request.at)
    edges = sorted(
        [(a.sent, 1) for a in asked] + [(done[a.thread_ts], -1) for a in asked],
    )
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return Outcome(
        answer_s=[done[a.thread_ts] - a.sent for a in asked],
        first_visible_s=[
            visible[a.thread_ts] - (model_at[a.thread_ts] + first_token_s)
            for a in asked
            if a.thread_ts in model_at
        ],
        peak_in_flight=peak,
    )


def _cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = _rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb(self.pid))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def _thread_of(slack: SlackEmulator, call) -> str | None:  # noqa: ANN001
    if "thread_ts" in call.args:
        return call.args["thread_ts"]
    message = slack.message(call.args["channel"], call.args.get("ts", ""))
    return message.get("thread_ts") if message else None


@dataclass
class Row:
    app: str
    n: int
    ack_p50: float
    ack_p99: float
    answer_p50: float
    answer_p99: float
    visible_p50: float
    in_flight: int
    cpu_ms: float
    cpu_pct: float
    rss_before: float
    rss_peak: float

    @property
    def kb_per_answer(self) -> float:
        return (self.rss_peak - self.rss_before) * 1024 / max(self.in_flight, 1)


def _batch(
    target: Target,
    slack: SlackEmulator,
    llm: OpenAIEmulator,
    n: int,
    label: str,
    args: argparse.Namespace,
    senders: int,
) -> Row:
    """Send ``n`` questions as fast as ``senders`` threads can, wait for every answer."""
    since = slack.call_count()
    rss_before = _rss_mb(target.pid)
    cpu_before, wall_before = _cpu_s(target.pid), time.monotonic()
    with PeakRss(target.pid) as rss, ThreadPoolExecutor(senders) as pool:
        asked = list(
            pool.map(lambda i: _ask(target, slack, f"{target.channel} {label} q{i}"), range(n))
        )
        outcome = _outcome(
            target, slack, llm, asked, since, args.first_token_s, timeout_s=60 + n * 0.5
        )
    cpu_s, wall_s = _cpu_s(target.pid) - cpu_before, time.monotonic() - wall_before
    acks = [a.ack_s for a in asked]
    return Row(
        target.name,
        n,
        _percentile(acks, 0.5) * 1000,
        _percentile(acks, 0.99) * 1000,
        _percentile(outcome.answer_s, 0.5),
        _percentile(outcome.answer_s, 0.99),
        _percentile(outcome.first_visible_s, 0.5) * 1000,
        outcome.peak_in_flight,
        cpu_s * 1000 / n,
        cpu_s * 100 / wall_s,
        rss_before,
        rss.peak,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=40, help="one-at-a-time questions")
    parser.add_argument("--levels", default="10,100,200,500", help="questions sent at once")
    parser.add_argument("--senders", type=int, default=50, help="threads sending questions")
    parser.add_argument("--first-token-s", type=float, default=0.5)
    parser.add_argument("--chunk-delay-s", type=float, default=0.05)
    parser.add_argument("--words", type=int, default=120, help="answer length (3 a chunk)")
    parser.add_argument("--workers", type=int, default=4, help="answer workers of the bot")
    parser.add_argument(
        "--inline-answers", type=int, help="slack.inline_answers of the bot (else the default)"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",") if n]

    redis = Redis.from_url(args.redis_url)
    if redis.dbsize():
        sys.exit(f"{args.redis_url} is not empty; give --redis-url of an empty db")
    slack = SlackEmulator(bot_token="xoxb-bench").start()
    llm = OpenAIEmulator(api_key="sk-bench").start()
    llm.first_token_delay_s = args.first_token_s
    llm.chunk_delay_s = args.chunk_delay_s
    answer = " ".join(f"word{i}" for i in range(args.words))
    llm.answer_fn = lambda body: answer
    env = {**service_env(slack, llm, args.redis_url), "MODEL": MODEL}
    config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)  # noqa: SIM115
    if args.inline_answers is not None:
        settings = yaml.safe_load((ROOT / "config" / "settings.yaml").read_text())
        settings["slack"]["inline_answers"] = args.inline_answers
        yaml.safe_dump(settings, config)
        config.close()
        env["CONFIG_FILE"] = config.name
    bot_port, base_port = _free_port(), _free_port()
    procs = [
        *start_bot(env, bot_port, args.workers),
        subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "minimal_app.py")],
            cwd=ROOT,
            env={**env, "PORT": str(base_port)},
        ),
    ]
    rows: list[Row] = []
    try:
        _wait_http(bot_port)
        _wait_http(base_port)
        time.sleep(2)  # let the worker pool start
        targets = (
            Target(
                "minimal Bolt app",
                f"http://127.0.0.1:{base_port}/slack/events",
                "CBASE",
                procs[-1].pid,
            ),
            Target(
                "tuneloop bot", f"http://127.0.0.1:{bot_port}/slack/events", "CBOT", procs[0].pid
            ),
        )
        for target in targets:  # warm up connections and imports
            _batch(target, slack, llm, 5, "warm-up", args, senders=5)
        for i in range(args.answers):  # one at a time, alternating, same order flipping
            for target in targets if i % 2 == 0 else targets[::-1]:
                rows.append(_batch(target, slack, llm, 1, f"one-{i}", args, senders=1))
        for n in levels:
            for target in targets if n % 2 == 0 else targets[::-1]:
                rows.append(_batch(target, slack, llm, n, f"level-{n}", args, args.senders))
        queued = len(redis.keys("rq:job:answer-*"))
    finally:
        stop(procs)
        slack.stop()
        llm.stop()
        redis.flushdb()
        Path(config.name).unlink()
    _report(rows, targets, args, queued)


def _report(
    rows: list[Row], targets: tuple[Target, ...], args: argparse.Namespace, queued: int
) -> None:
    print(
        f"model: {args.first_token_s:g} s to the first token, {args.words // 3} pieces "
        f"{args.chunk_delay_s:g} s apart; bot answers that overflowed to the queue: {queued}"
    )
    print(
        "\n| app, one question at a time | answer p50 s | first token → visible p50 ms "
        "| CPU ms per answer |"
    )
    print("|---|---:|---:|---:|")
    singles: dict[str, list[Row]] = {
        t.name: [r for r in rows if r.n == 1 and r.app == t.name] for t in targets
    }
    medians = {}
    for name, mine in singles.items():
        medians[name] = (
            statistics.median(r.answer_p50 for r in mine),
            statistics.median(r.visible_p50 for r in mine),
            statistics.mean(r.cpu_ms for r in mine),
        )
        a, v, c = medians[name]
        print(f"| {name} | {a:.3f} | {v:.1f} | {c:.2f} |")
    (ba, bv, bc), (fa, fv, fc) = medians[targets[0].name], medians[targets[1].name]
    print(f"| bot − minimal | {(fa - ba) * 1000:+.1f} ms | {fv - bv:+.1f} | {fc - bc:+.2f} |")
    print(
        "\n| app | sent at once | ack p50 ms | ack p99 ms | answer p50 s | answer p99 s "
        "| peak in flight | CPU % | CPU ms/answer | RSS before → peak MB | KB per answer in flight |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        if r.n > 1:
            print(
                f"| {r.app} | {r.n} | {r.ack_p50:.1f} | {r.ack_p99:.1f} | {r.answer_p50:.2f} | "
                f"{r.answer_p99:.2f} | {r.in_flight} | {r.cpu_pct:.0f} | {r.cpu_ms:.1f} | "
                f"{r.rss_before:.0f} → {r.rss_peak:.0f} | {r.kb_per_answer:.0f} |"
            )


if __name__ == "__main__":
    main()
