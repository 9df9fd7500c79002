"""The bot's own cost per answer, next to a minimal Bolt app, in the same run.

Both apps run as separate processes behind waitress and talk to the same loopback Slack
and OpenAI emulators (the model answers instantly). For each mention we measure the time
from sending the signed event to the emulator receiving the call that completes the
answer (chat.postMessage, or chat.stopStream for a streamed answer): first one question
at a time, alternating between the two apps so that a change in the machine's load hits
both alike (latency), then in alternating rounds with several questions in flight
(throughput).

    python -m bench.bench_bot --answers 300 --concurrency 8 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

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


def _ask(target: Target, slack: SlackEmulator, i: int) -> float:
    """Send one signed mention; seconds until the call that completes its answer arrived."""
    event = payloads.mention(f"question {i}", channel=target.channel, ts=payloads.new_ts())
    body = payloads.json_body(payloads.event_envelope(event))
    since = slack.call_count()
    sent = time.time()
    response = payloads.post(target.url, body, "application/json", secret=SECRET)
    assert response.status == 200, response

    def completes_answer(call) -> bool:  # noqa: ANN001
        return (
            call.method in FINAL_METHODS
            and call.args.get("channel") == target.channel
            and _thread_of(slack, call) == event["ts"]
        )

    try:
        return slack.wait_for_call(completes_answer, since=since, timeout=30).at - sent
    except AssertionError:
        raise RuntimeError(f"{target.name}: no answer to {event['ts']}") from None


def _latencies(
    targets: tuple[Target, Target], slack: SlackEmulator, answers: int, pause_s: float
) -> dict[str, list[float]]:
    """One question at a time, alternating between the apps (which goes first alternates
    too), so a change in the machine's load hits both alike; after each answer a short
    pause lets the app finish its own bookkeeping before the other app is measured."""
    out: dict[str, list[float]] = {t.name: [] for t in targets}
    for i in range(answers):
        for target in targets if i % 2 == 0 else targets[::-1]:
            out[target.name].append(_ask(target, slack, i))
            time.sleep(pause_s)
    return out


def _throughput(target: Target, slack: SlackEmulator, answers: int, concurrency: int) -> float:
    """Answers per second with ``concurrency`` questions in flight."""
    started = time.time()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda i: _ask(target, slack, i), range(answers)))
    return answers / (time.time() - started)


def _cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _thread_of(slack: SlackEmulator, call) -> str | None:  # noqa: ANN001
    if "thread_ts" in call.args:
        return call.args["thread_ts"]
    message = slack.message(call.args["channel"], call.args["ts"])
    return message.get("thread_ts") if message else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per app")
    parser.add_argument("--pause-ms", type=float, default=10.0, help="between questions")
    parser.add_argument("--workers", type=int, default=4, help="answer workers of the bot")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    args = parser.parse_args()
    pause_s = args.pause_ms / 1000

    redis = Redis.from_url(args.redis_url)
    if redis.dbsize():
        sys.exit(f"{args.redis_url} is not empty; give --redis-url of an empty db")
    slack = SlackEmulator(bot_token="xoxb-bench").start()
    llm = OpenAIEmulator(api_key="sk-bench").start()
    env = {**service_env(slack, llm, args.redis_url), "MODEL": MODEL}
    bot_port, base_port = _free_port(), _free_port()
    procs = [
        *start_bot(env, bot_port, args.workers),
        subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "minimal_app.py")],
            cwd=ROOT,
            env={**env, "PORT": str(base_port)},
        ),
    ]
    try:
        _wait_http(bot_port)
        _wait_http(base_port)
        time.sleep(2)  # let the worker pool start
        targets = (
            Target("minimal Bolt app", f"http://127.0.0.1:{base_port}/slack/events", "CBASE"),
            Target("tuneloop bot", f"http://127.0.0.1:{bot_port}/slack/events", "CBOT"),
        )
        _latencies(targets, slack, 10, pause_s)  # warm up connections and imports
        web = {targets[0].name: procs[-1].pid, targets[1].name: procs[0].pid}
        cpu_before = {name: _cpu_s(pid) for name, pid in web.items()}
        latencies = _latencies(targets, slack, args.answers, pause_s)
        cpu_ms = {
            name: (_cpu_s(pid) - cpu_before[name]) * 1000 / args.answers
            for name, pid in web.items()
        }
        rates: dict[str, list[float]] = {t.name: [] for t in targets}
        for _ in range(args.rounds):
            for target in targets:
                rates[target.name].append(
                    _throughput(target, slack, args.answers, args.concurrency)
                )
        queued = len(redis.keys("rq:job:answer-*"))
    finally:
        stop(procs)
        slack.stop()
        llm.stop()
        redis.flushdb()
    results = [
        (
            t.name,
            statistics.median(latencies[t.name]) * 1000,
            _percentile(latencies[t.name], 0.99) * 1000,
            statistics.median(rates[t.name]),
            cpu_ms[t.name],
        )
        for t in targets
    ]
    print(
        f"answers: {args.answers} one at a time ({args.pause_ms:g} ms apart), alternating "
        "between the apps; then "
        f"{args.rounds} alternating rounds of {args.answers} with {args.concurrency} in flight "
        f"(median). Bot answers that overflowed to the queue: {queued}"
    )
    print("| app | p50 ms | p99 ms | answers/s | CPU ms per answer (web process) |")
    print("|---|---:|---:|---:|---:|")
    for name, p50, p99, rate, cpu in results:
        print(f"| {name} | {p50:.1f} | {p99:.1f} | {rate:.1f} | {cpu:.2f} |")
    (_, b50, b99, brate, bcpu), (_, f50, f99, frate, fcpu) = results
    print(
        f"| ratio (bot / minimal) | {f50 / b50:.2f}x | {f99 / b99:.2f}x | "
        f"{brate / frate:.2f}x | {fcpu / bcpu:.2f}x |"
    )


if __name__ == "__main__":
    main()
