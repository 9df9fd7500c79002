"""``python -m bot``: start the Slack bot in Socket Mode or HTTP mode."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from redis.exceptions import RedisError
from slack_bolt import App
from slack_sdk.errors import SlackApiError

from bot.app import LISTENER_THREADS, build_app
from bot.dispatch import start_journal
from bot.runtime import Services, build_services
from bot.server import serve
from core import logs
from core.errors import ConfigError
from core.settings import load_settings
from core.tokens import counter_for_model

logger = logging.getLogger("bot")

ACK_SWITCH_INTERVAL_S = 0.001


def serve_socket_mode(app: App, services: Services, executor: Executor, app_token: str) -> int:
    """Connect out to Slack over Socket Mode until SIGTERM/SIGINT, then drain; exit status.

    Slack resends an envelope that was not acknowledged, never one that was; and Bolt
    acknowledges before the listener's work is done. So on a signal the process stops
    taking envelopes, lets those being handled send their acks over the still-open
    connection, closes it, and waits for the listener work those acks promised (then
    stops the answer journal, as the HTTP server does). A token Slack refuses stops the
    process with one line, like a bad setting.
    """
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    handler = SocketModeHandler(app, app_token)
    client = handler.client
    try:
        # The call slack_sdk's connect() would make, made here so that a refused token
        # is one clear line rather than slack_sdk's error log and a traceback.
        client.wss_uri = app.client.apps_connections_open(app_token=app_token)["url"]
    except SlackApiError as exc:
        handler.close()
        services.engine.stop()
        services.journal.stop()
        error = exc.response.get("error") if exc.response is not None else str(exc)
        print(
            f"tuneloop: SLACK_APP_TOKEN: Slack refused it for Socket Mode ({error}): create an "
            "app-level token with the connections:write scope (Basic Information > "
            "App-Level Tokens), or unset SLACK_APP_TOKEN for HTTP mode",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        logger.info("stopping: finishing in-flight work", extra={"signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    handler.connect()
    if client.is_connected():
        logger.info("connected to Slack in Socket Mode")
    else:
        logger.warning("Socket Mode connection failed; retrying")
    stop.wait()
    client.auto_reconnect_enabled = False  # a connection closing now must not be replaced
    client.closed = True  # no new envelopes handed to the workers (Slack resends them)
    client.message_processor.shutdown()
    client.message_workers.shutdown(wait=True)  # envelopes being handled send their acks
    handler.close()
    executor.shutdown(wait=True)
    services.engine.stop()
    services.journal.stop()
    logger.info("stopped")
    return 0


def get_ready(services: Services) -> None:
    """Load what the first answer needs before anything is served: the tokenizer of the
    current model, the bot's own user id, and the answer engine with its clients. So
    /healthz says 200 only when the next answer pays for nothing but itself."""
    model = services.settings.model.base_model
    try:
        model = services.store.current_model(model)
    except RedisError:
        logger.warning("Redis unavailable at start: warming up the base model's tokenizer")
    counter_for_model(model).count("warm up")
    services.engine.start()


def main() -> int:
    """Validate the settings, then serve; a bad setting stops with one clear line."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"tuneloop: {exc}", file=sys.stderr)
        return 2
    logs.configure(os.environ.get("LOG_LEVEL", "INFO"), settings.secrets.model_dump().values())
    # Request threads take the GIL from the answer loop within 1 ms instead of the default
    # 5: Slack's acknowledgements stay fast however many answers stream (bench/README.md).
    sys.setswitchinterval(ACK_SWITCH_INTERVAL_S)
    services = build_services(settings)
    executor = ThreadPoolExecutor(max_workers=LISTENER_THREADS, thread_name_prefix="listener")
    app = build_app(services, executor)
    get_ready(services)
    start_journal(services)
    if settings.socket_mode:
        return serve_socket_mode(app, services, executor, str(settings.secrets.slack_app_token))
    serve(
        app,
        services,
        executor,
        host=os.environ.get("HOST", "0.0.0.0"),
        port=settings.endpoints.port,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
