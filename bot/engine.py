"""The answer engine: one asyncio event loop, in a thread of the web process, on which
every answer the process writes itself runs as a coroutine.

An answer spends nearly all its time waiting: for the model's next token, for Slack.
A coroutine waits for the price of a few kilobytes, where a thread held a stack and an
OS thread each; so the number of answers in flight is bounded by the model, Slack and
the CPU, not by a pool size (numbers in bench/README.md). The clients on the loop are
async (aiohttp for Slack, sharing one session; the OpenAI async client; redis.asyncio)
so no answer ever blocks the loop on a socket.

Bolt's listeners stay synchronous and fast: they record the question (see
:mod:`bot.dispatch`) and hand the answer to :meth:`AnswerEngine.submit`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

import aiohttp
from openai import AsyncOpenAI
from redis.asyncio import BlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from core.llm import make_async_client
from core.settings import Settings
from core.store import AsyncStore

logger = logging.getLogger(__name__)

SLACK_RATE_LIMIT_RETRIES = 5
SLACK_CONNECTIONS = 1000  # aiohttp's default of 100 would queue answers beyond it
REDIS_CONNECTIONS = 100
REDIS_POOL_WAIT_S = 20.0  # how long an answer waits for a free Redis connection


@dataclass(frozen=True)
class AsyncServices:
    """The clients an answer coroutine uses; they belong to one event loop."""

    settings: Settings
    bot_user_id: str
    slack: AsyncWebClient
    llm: AsyncOpenAI
    redis: AsyncRedis
    store: AsyncStore
    session: aiohttp.ClientSession

    @classmethod
    async def open(cls, settings: Settings, bot_user_id: str) -> AsyncServices:
        """Create the clients on the running loop (aiohttp binds its session to it)."""
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=SLACK_CONNECTIONS))
        slack = AsyncWebClient(
            token=settings.secrets.slack_bot_token,
            base_url=settings.endpoints.slack_api_url,
            timeout=15,
            session=session,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(max_retry_count=2),
                AsyncRateLimitErrorRetryHandler(max_retry_count=SLACK_RATE_LIMIT_RETRIES),
            ],
        )
        # Hundreds of answers reach Redis at the same moments (the thread's model when they
        # start, the record when they end): past the pool's size they wait their turn for
        # a connection, where redis-py's default pool would fail them (MaxConnectionsError).
        redis = AsyncRedis(
            connection_pool=BlockingConnectionPool.from_url(
                settings.endpoints.redis_url,
                max_connections=REDIS_CONNECTIONS,
                timeout=REDIS_POOL_WAIT_S,
                socket_connect_timeout=1.0,
                socket_timeout=5.0,
                health_check_interval=15,
            )
        )
        store = AsyncStore(
            redis,
            retention_s=settings.retention.unrated_days * 86400,
            dedup_s=settings.retention.event_dedup_s,
        )
        return cls(settings, bot_user_id, slack, make_async_client(settings), redis, store, session)

    async def close(self) -> None:
        """Close every connection the clients hold."""
        await self.session.close()
        await self.llm.close()
        await self.redis.aclose()


class AnswerEngine:
    """Runs answer coroutines on the process's event loop; :meth:`wait_idle` and
    :meth:`stop` wait for those submitted (SIGTERM drains them)."""

    def __init__(self, settings: Settings, bot_user_id: Callable[[], str]) -> None:
        self._settings = settings
        self._bot_user_id = bot_user_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._services: AsyncServices | None = None
        self._pending: set[Future] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the loop and open its clients (idempotent): the first answer then pays
        for neither."""
        with self._lock:
            if self._loop is not None:
                return
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="answers", daemon=True)
            thread.start()
            opened = asyncio.run_coroutine_threadsafe(
                AsyncServices.open(self._settings, self._bot_user_id()), loop
            )
            self._services = opened.result()
            self._loop, self._thread = loop, thread

    def submit(self, work: Callable[[AsyncServices], Coroutine[Any, Any, object]]) -> Future:
        """Run ``work(services)`` on the loop; returns at once (a future of its result).

        Exceptions are the coroutine's to log; one that escapes is logged here too, so
        nothing fails silently.
        """
        self.start()
        assert self._loop is not None and self._services is not None
        future = asyncio.run_coroutine_threadsafe(work(self._services), self._loop)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future) -> None:
        with self._lock:
            self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            logger.error("an answer failed", exc_info=future.exception())

    @property
    def in_flight(self) -> int:
        """Answers submitted and not finished."""
        with self._lock:
            return len(self._pending)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted answer has finished (answers submitted meanwhile
        too); False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._pending)
            remaining = deadline - time.monotonic()
            if not pending:
                return True
            if remaining <= 0:
                return False
            wait(pending, timeout=remaining)

    def stop(self, timeout: float | None = None) -> None:
        """Let the answers in flight finish, then close the clients and the loop."""
        with self._lock:
            loop, thread, services = self._loop, self._thread, self._services
            self._loop = self._thread = self._services = None
        if loop is None or thread is None or services is None:
            return
        with self._lock:
            pending = list(self._pending)
        wait(pending, timeout=timeout)
        asyncio.run_coroutine_threadsafe(services.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
