"""The HTTP front: ``POST /slack/events`` for Slack; ``/healthz`` and ``/metrics`` for operators."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import signal
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.exceptions import RedisError
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.runtime import Services
from core.metrics import RedisCollector

logger = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
MAX_BODY_BYTES = 1_000_000  # Slack's payloads are far smaller; more is not from Slack
CONNECTION_LIMIT = 1000  # open connections waitress serves at once; more wait in the backlog
SIGNATURE_MAX_AGE_S = 300
StartResponse = Callable[..., Any]


def health(services: Services) -> tuple[int, dict[str, str]]:
    """200 when Redis answers; 503 naming what failed otherwise."""
    try:
        services.redis.ping()
    except RedisError as exc:
        return 503, {"status": "degraded", "redis": f"unreachable: {type(exc).__name__}"}
    return 200, {"status": "ok", "redis": "ok"}


def signed_by_slack(secret: bytes, body: bytes, timestamp: str, signature: str) -> bool:
    """Slack's v0 signature over the raw bytes, from the last five minutes."""
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > SIGNATURE_MAX_AGE_S:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def malformed(body: bytes, content_type: str) -> str | None:
    """Why a signed body is not something Slack sends, or None if it is well-formed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8"
    try:
        if content_type.startswith("application/json"):
            data = json.loads(text)
            return None if isinstance(data, dict) else "JSON body is not an object"
        form = urllib.parse.parse_qs(text, keep_blank_values=True)
        if "payload" in form:
            data = json.loads(form["payload"][0])
            return None if isinstance(data, dict) else "payload is not a JSON object"
    except ValueError as exc:
        return f"malformed JSON: {exc.args[0] if exc.args else exc}"
    except RecursionError:
        return "JSON nested too deeply"
    if "command" in form or "ssl_check" in form:
        return None
    return "neither an event, an interaction nor a command"


def _plain(start_response: StartResponse, status: int, text: str) -> list[bytes]:
    payload = text.encode()
    reasons = {400: "Bad Request", 401: "Unauthorized", 413: "Payload Too Large"}
    start_response(
        f"{status} {reasons[status]}",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


def make_wsgi(
    app: App, services: Services
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """One WSGI callable serving Slack's requests and the health check."""
    slack = SlackRequestHandler(app, path=EVENTS_PATH)
    registry = CollectorRegistry()
    registry.register(RedisCollector(services.redis))
    secret = services.settings.secrets.slack_signing_secret.encode()

    def handle_slack(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Check signature and shape first: Bolt answers 500 to a body it cannot parse."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:
            return _plain(start_response, 413, "request body too large")
        body = environ["wsgi.input"].read(length) if length else b""
        signature = environ.get("HTTP_X_SLACK_SIGNATURE", "")
        timestamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")
        if not signed_by_slack(secret, body, timestamp, signature):
            return _plain(start_response, 401, "invalid or stale signature")
        problem = malformed(body, environ.get("CONTENT_TYPE", ""))
        if problem:
            logger.warning("refused a signed request: %s", problem)
            return _plain(start_response, 400, problem)
        environ["wsgi.input"] = io.BytesIO(body)
        return slack(environ, start_response)

    def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == EVENTS_PATH and method == "POST":
            return handle_slack(environ, start_response)
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


def create_server(
    wsgi: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
    *,
    host: str,
    port: int,
    threads: int = 16,
) -> Any:
    """The waitress server, hardened: it refuses a body over ``MAX_BODY_BYTES`` while
    reading it (waitress would otherwise buffer up to 1 GiB to disk before the app sees
    the request) and holds at most ``CONNECTION_LIMIT`` connections."""
    import waitress

    return waitress.create_server(
        wsgi,
        host=host,
        port=port,
        threads=threads,
        ident="tuneloop",
        max_request_body_size=MAX_BODY_BYTES,
        connection_limit=CONNECTION_LIMIT,
    )


def serve(
    app: App, services: Services, executor: Executor, *, host: str, port: int, threads: int = 16
) -> None:
    """Serve until SIGTERM/SIGINT, then finish in-flight requests, listener work and the
    answers in flight."""
    server = create_server(make_wsgi(app, services), host=host, port=port, threads=threads)

    def stop(signum: int, frame: Any) -> None:
        logger.info("stopping: finishing in-flight work", extra={"signal": signum})
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("listening", extra={"host": host, "port": server.effective_port})
    server.run()  # returns after SystemExit, once the request threads are done
    server.close()
    executor.shutdown(wait=True)
    services.engine.stop()
    services.journal.stop()
    logger.info("stopped")
