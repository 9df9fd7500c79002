"""The long-lived clients of a process (Redis, Slack, OpenAI), built once from the settings.

The bot process builds them at start-up and passes them to the app; an RQ worker
builds them on its first job (RQ passes jobs only ids and strings) and keeps them.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

from openai import OpenAI
from redis import Redis
from rq import Queue
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bot.engine import AnswerEngine
from bot.journal import AnswerJournal
from core import keys, logs
from core.llm import make_client
from core.settings import Settings, load_settings
from core.store import Store

SLACK_RATE_LIMIT_RETRIES = 5
LOCAL_CLAIMS_MAX = 10_000


class LocalClaims:
    """De-duplication that needs no Redis: this process's most recent message ids."""

    def __init__(self, size: int) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def claim(self, key: str) -> bool:
        """True the first time ``key`` is seen (among the last ``size`` keys)."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True


def make_redis(url: str) -> Redis:
    """A Redis client that fails fast when Redis is down, so the bot can degrade."""
    return Redis.from_url(
        url, socket_connect_timeout=1.0, socket_timeout=5.0, health_check_interval=15
    )


def make_slack_client(settings: Settings) -> WebClient:
    """A Slack Web API client that honours 429 Retry-After and retries dropped connections."""
    return WebClient(
        token=settings.secrets.slack_bot_token,
        base_url=settings.endpoints.slack_api_url,
        timeout=15,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=SLACK_RATE_LIMIT_RETRIES),
        ],
    )


@dataclass(frozen=True)
class Services:
    """Everything a listener or job needs besides its own plain arguments."""

    settings: Settings
    redis: Redis
    slack: WebClient
    llm: OpenAI

    @cached_property
    def store(self) -> Store:
        """Answers, votes and corrections."""
        return Store(
            self.redis,
            retention_s=self.settings.retention.unrated_days * 86400,
            dedup_s=self.settings.retention.event_dedup_s,
        )

    @cached_property
    def journal(self) -> AnswerJournal:
        """Answers this process writes itself, with their crash recovery."""
        return AnswerJournal(
            self.store,
            capacity=self.settings.slack.inline_answers,
            recover_after_s=self.settings.slack.recover_after_s,
        )

    @cached_property
    def engine(self) -> AnswerEngine:
        """The event loop this process's answers run on (started on first use)."""
        return AnswerEngine(self.settings, lambda: self.bot_user_id)

    @cached_property
    def local_claims(self) -> LocalClaims:
        """Fallback de-duplication of questions while Redis is unreachable."""
        return LocalClaims(LOCAL_CLAIMS_MAX)

    @cached_property
    def answers_queue(self) -> Queue:
        """Where answering jobs go."""
        return Queue(keys.QUEUE_ANSWERS, connection=self.redis)

    @cached_property
    def training_queue(self) -> Queue:
        """Where training-loop jobs go."""
        return Queue(keys.QUEUE_TRAINING, connection=self.redis)

    @cached_property
    def bot_user_id(self) -> str:
        """The bot's own Slack user id (auth.test), to tell its messages from people's."""
        return str(self.slack.auth_test()["user_id"])


def build_services(settings: Settings) -> Services:
    """Create the clients for one process."""
    return Services(
        settings=settings,
        redis=make_redis(settings.endpoints.redis_url),
        slack=make_slack_client(settings),
        llm=make_client(settings),
    )


_worker_services: Services | None = None
_worker_lock = threading.Lock()


def worker_services() -> Services:
    """The services of this worker process, built from the environment on first use."""
    global _worker_services
    with _worker_lock:
        if _worker_services is None:
            settings = load_settings()
            logs.configure(
                os.environ.get("LOG_LEVEL", "INFO"), settings.secrets.model_dump().values()
            )
            _worker_services = build_services(settings)
        return _worker_services


def reset_worker_services() -> None:
    """Forget the cached services (a test that changes the environment calls this)."""
    global _worker_services
    with _worker_lock:
        _worker_services = None
