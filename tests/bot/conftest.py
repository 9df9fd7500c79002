"""The bot as it runs in production (HTTP mode, real Redis, real RQ worker) on loopback."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis import Redis
from rq import Queue, SimpleWorker

from bot.app import LISTENER_THREADS, build_app
from bot.dispatch import start_journal
from bot.engine import AnswerEngine
from bot.runtime import Services, build_services, reset_worker_services
from bot.server import EVENTS_PATH, create_server, make_wsgi
from core import keys
from core.settings import ROOT, Settings, load_settings
from tests import payloads
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator

SIGNING_SECRET = "test-signing-secret"
ADMIN = "UADMIN"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def write_config(path: Path, overrides: dict[str, Any] | None = None) -> Path:
    """The shipped settings with test admins and ``overrides`` merged in."""
    base = yaml.safe_load((ROOT / "config" / "settings.yaml").read_text())
    base = _merge(base, {"slack": {"admins": [ADMIN], "fallback_update_interval_s": 0.0}})
    path.write_text(yaml.safe_dump(_merge(base, overrides or {})))
    return path


class TrackingExecutor(ThreadPoolExecutor):
    """Bolt's listener pool, able to say when every listener it was given has finished.

    Slack gets its 200 before a listener's work is done (Bolt acks events at once), so a
    test that sent a request waits on this before looking for the work's effects; given
    the answer engine, it also waits for the answers the listeners handed to it.
    """

    def __init__(self, engine: AnswerEngine | None = None) -> None:
        super().__init__(max_workers=LISTENER_THREADS)
        self._pending: set[Future] = set()
        self._guard = threading.Lock()
        self.engine = engine

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        future = super().submit(fn, *args, **kwargs)
        with self._guard:
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future) -> None:
        with self._guard:
            self._pending.discard(future)

    def wait_idle(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self._guard:
                pending = list(self._pending)
            remaining = deadline - time.monotonic()
            if not pending:
                # Listeners hand answers to the engine: those must be finished too.
                if self.engine is not None:
                    assert self.engine.wait_idle(max(remaining, 0)), "answers still running"
                return
            assert remaining > 0, "listeners still running"
            wait(pending, timeout=remaining)


@dataclass
class Bot:
    """A running bot plus the emulators it talks to, with helpers to drive it like Slack."""

    url: str
    settings: Settings
    services: Services
    slack: SlackEmulator
    openai: OpenAIEmulator
    redis: Redis
    listeners: TrackingExecutor

    def event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> payloads.Response:
        """Deliver an event and wait until the listeners are done with it."""
        response = self.post_event(event, event_id=event_id, headers=headers)
        self.listeners.wait_idle()
        return response

    def post_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> payloads.Response:
        """Deliver an event; return once it is acknowledged (its work may still run)."""
        body = payloads.json_body(payloads.event_envelope(event, event_id=event_id))
        return payloads.post(
            self.url, body, "application/json", secret=SIGNING_SECRET, headers=headers
        )

    def interact(self, payload: dict[str, Any]) -> payloads.Response:
        response = payloads.post(
            self.url,
            payloads.interactive_body(payload),
            "application/x-www-form-urlencoded",
            secret=SIGNING_SECRET,
        )
        self.listeners.wait_idle()
        return response

    def command(
        self, text: str, *, user: str = ADMIN, channel: str = "C1"
    ) -> tuple[payloads.Response, str]:
        response_url = self.slack.new_response_url()
        fields = payloads.command_form(text, user=user, channel=channel, response_url=response_url)
        response = payloads.post(
            self.url,
            payloads.form_body(fields),
            "application/x-www-form-urlencoded",
            secret=SIGNING_SECRET,
        )
        self.listeners.wait_idle()
        return response, response_url

    def says(
        self,
        text: str,
        *,
        user: str = "U1",
        channel: str = "C1",
        thread_ts: str | None = None,
        mention: bool = False,
        channel_type: str = "channel",
    ) -> dict[str, Any]:
        """A person posts ``text``: it lands in Slack's history; returns the event Slack sends."""
        full = f"<@UBOT> {text}" if mention else text
        ts = self.slack.add_message(channel, full, user, thread_ts=thread_ts)
        if mention:
            event = payloads.mention(text, user=user, channel=channel, ts=ts, thread_ts=thread_ts)
        else:
            event = payloads.message(
                text,
                user=user,
                channel=channel,
                ts=ts,
                thread_ts=thread_ts,
                channel_type=channel_type,
            )
        return event

    def run_worker(self, *queues: str) -> None:
        """Run every queued job in this process, as an RQ worker would, then return."""
        names = queues or (keys.QUEUE_ANSWERS,)
        worker = SimpleWorker(
            [Queue(n, connection=self.redis) for n in names], connection=self.redis
        )
        worker.work(burst=True)

    def ask(self, event: dict[str, Any]) -> str:
        """Deliver a message event, run the worker, return the ts of the bot's last answer."""
        response = self.event(event)
        assert response.status == 200, response
        self.run_worker()
        thread = event.get("thread_ts") or event["ts"]
        return self.last_answer_ts(event["channel"], thread)

    def last_answer_ts(self, channel: str, thread_ts: str) -> str:
        """The ts of the bot's last message in a thread (streamed or posted)."""
        mine = [m for m in self.slack.messages(channel, thread_ts) if m.get("user") == "UBOT"]
        assert mine, f"no answer in the thread: {[c.method for c in self.slack.calls()]}"
        return mine[-1]["ts"]


@pytest.fixture
def bot_settings() -> dict[str, Any]:
    """Overrides of config/settings.yaml for one test (override this fixture)."""
    return {}


@pytest.fixture
def bot_redis_url(redis_url: str) -> str:
    """The Redis the bot is given (override to simulate an outage)."""
    return redis_url


@pytest.fixture
def bot(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    slack_api: SlackEmulator,
    openai_api: OpenAIEmulator,
    redis_conn: Redis,
    bot_redis_url: str,
    bot_settings: dict[str, Any],
) -> Iterator[Bot]:
    env = {
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": openai_api.url,
        "SLACK_API_URL": slack_api.url,
        "REDIS_URL": bot_redis_url,
        "CONFIG_FILE": str(write_config(tmp_path / "settings.yaml", bot_settings)),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_worker_services()
    settings = load_settings()
    services = build_services(settings)
    listeners = TrackingExecutor(services.engine)
    server = create_server(
        make_wsgi(build_app(services, listeners), services), host="127.0.0.1", port=0, threads=8
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    services.engine.start()
    start_journal(services)
    url = f"http://127.0.0.1:{server.effective_port}{EVENTS_PATH}"
    try:
        yield Bot(url, settings, services, slack_api, openai_api, services.redis, listeners)
    finally:
        server.close()
        server.task_dispatcher.shutdown()  # close() leaves waitress's request threads running
        thread.join(timeout=5)
        listeners.shutdown(wait=True)
        services.engine.stop(timeout=30)
        services.journal.stop()
        reset_worker_services()
