"""``python -m bot``: start the Slack bot in Socket Mode or HTTP mode."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

from bot.app import LISTENER_THREADS, build_app
from bot.runtime import build_services
from bot.server import serve
from workers import logs
from workers.errors import ConfigError
from workers.settings import load_settings


def main() -> int:
    """Validate the settings, then serve; a bad setting stops with one clear line."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"tuneloop: {exc}", file=sys.stderr)
        return 2
    logs.configure(os.environ.get("LOG_LEVEL", "INFO"), settings.secrets.model_dump().values())
    services = build_services(settings)
    executor = ThreadPoolExecutor(max_workers=LISTENER_THREADS, thread_name_prefix="listener")
    app = build_app(services, executor)
    if settings.socket_mode:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        SocketModeHandler(app, settings.secrets.slack_app_token).start()
        return 0
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
