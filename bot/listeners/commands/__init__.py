"""Slash commands: ``/finetune``."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond

from bot import finetune, ids
from bot.runtime import Services


def register(app: App, services: Services) -> None:
    """Attach the command listeners."""

    @app.command(ids.SLASH_COMMAND)
    def on_finetune(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        ack()
        reply = finetune.handle(
            services,
            user_id=command.get("user_id", ""),
            channel_id=command.get("channel_id", ""),
            text=command.get("text") or "",
            trigger_id=command.get("trigger_id") or "",
        )
        respond(text=reply.text, blocks=reply.blocks, response_type="ephemeral")
