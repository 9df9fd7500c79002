"""The HTTP front: ``POST /slack/events`` for Slack; ``/healthz`` and ``/metrics`` for operators."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.exceptions import RedisError
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.runtime import Services
from workers.metrics import RedisCollector

logger = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
StartResponse = Callable[..., Any]


def health(services: Services) -> tuple[int, dict[str, str]]:
    """200 when Redis answers; 503 naming what failed otherwise."""
    try:
        services.redis.ping()
    except RedisError as exc:
        return 503, {"status": "degraded", "redis": f"unreachable: {type(exc).__name__}"}
    return 200, {"status": "ok", "redis": "ok"}


def make_wsgi(
    app: App, services: Services
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """One WSGI callable serving Slack's requests and the health check."""
    slack = SlackRequestHandler(app, path=EVENTS_PATH)
    registry = CollectorRegistry()
    registry.register(RedisCollector(services.redis))

    def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == EVENTS_PATH and method == "POST":
            return slack(environ, start_response)
        if path == "/healthz" and method == "GET":
            status, body = health(services)
            payload = json.dumps(body).encode()
            reason = "OK" if status == 200 else "Service Unavailable"
            start_response(
                f"{status} {reason}",
                [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
            )
            return [payload]
        if path == "/metrics" and method == "GET":
            payload = generate_latest(registry)
            start_response(
                "200 OK",
                [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(payload)))],
            )
            return [payload]
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"not found"]

    return wsgi


def serve(app: App, services: Services, *, host: str, port: int, threads: int = 16) -> None:
    """Serve until SIGTERM/SIGINT with waitress (threads finish their requests)."""
    from waitress import serve as waitress_serve

    waitress_serve(
        make_wsgi(app, services), host=host, port=port, threads=threads, ident="tuneloop"
    )
