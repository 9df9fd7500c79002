"""Slack request payloads shaped as Slack sends them, and signing, for tests and benchmarks."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

TEAM = "T1"
APP_ID = "A1"
_counter = itertools.count(1)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature of a request body."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def post(
    url: str,
    body: bytes,
    content_type: str,
    *,
    secret: str | None,
    timestamp: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Response:
    """POST like Slack does: signed with ``secret`` (None sends no signature headers)."""
    all_headers = {"Content-Type": content_type, **(headers or {})}
    if secret is not None:
        ts = timestamp or str(int(time.time()))
        all_headers["X-Slack-Request-Timestamp"] = ts
        all_headers["X-Slack-Signature"] = sign(secret, ts, body)
    request = urllib.request.Request(url, data=body, headers=all_headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return Response(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, dict(exc.headers), exc.read())


def free_port() -> int:
    """A loopback port nothing listens on right now (for a server to start, or a dead one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_ts() -> str:
    """A unique message ts like Slack's."""
    return f"{int(time.time())}.{next(_counter):06d}"


def event_envelope(event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """The Events API wrapper around one event."""
    return {
        "token": "verification-token-unused",
        "team_id": TEAM,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_counter):08d}",
        "event_time": int(time.time()),
        "authorizations": [
            {"team_id": TEAM, "user_id": "UBOT", "is_bot": True, "enterprise_id": None}
        ],
    }


def mention(
    text: str,
    *,
    user: str = "U1",
    channel: str = "C1",
    ts: str | None = None,
    thread_ts: str | None = None,
) -> dict[str, Any]:
    """An app_mention event."""
    event = {
        "type": "app_mention",
        "user": user,
        "text": f"<@UBOT> {text}",
        "ts": ts or new_ts(),
        "channel": channel,
        "team": TEAM,
        "event_ts": ts,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def message(
    text: str,
    *,
    user: str = "U1",
    channel: str = "C1",
    channel_type: str = "channel",
    ts: str | None = None,
    thread_ts: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A message event (channel_type "im" for a DM)."""
    event = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts or new_ts(),
        "channel": channel,
        "channel_type": channel_type,
        "team": TEAM,
        **extra,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def reaction(
    name: str, *, user: str, channel: str, message_ts: str, added: bool = True
) -> dict[str, Any]:
    """A reaction_added / reaction_removed event on a message."""
    return {
        "type": "reaction_added" if added else "reaction_removed",
        "user": user,
        "reaction": name,
        "item_user": "UBOT",
        "item": {"type": "message", "channel": channel, "ts": message_ts},
        "event_ts": new_ts(),
    }


def feedback_click(
    value: str, *, user: str, channel: str, message_ts: str, thread_ts: str | None = None
) -> dict[str, Any]:
    """A block_actions payload for a click on the feedback buttons."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user, "team_id": TEAM},
        "api_app_id": APP_ID,
        "team": {"id": TEAM, "domain": "example"},
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
            "thread_ts": thread_ts,
        },
        "trigger_id": f"trigger-{next(_counter)}",
        "channel": {"id": channel, "name": "general"},
        "message": {
            "type": "message",
            "ts": message_ts,
            "thread_ts": thread_ts,
            "user": "UBOT",
            "bot_id": "BBOT",
            "text": "answer",
        },
        "response_url": "http://127.0.0.1:9/unused",
        "actions": [
            {
                "type": "feedback_buttons",
                "action_id": "feedback",
                "block_id": "tl_feedback",
                "value": value,
                "action_ts": new_ts(),
            }
        ],
    }


def view_submission(
    callback_id: str, *, user: str, private_metadata: str, values: dict[str, Any]
) -> dict[str, Any]:
    """A view_submission payload."""
    return {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "example"},
        "user": {"id": user, "username": user, "team_id": TEAM},
        "api_app_id": APP_ID,
        "trigger_id": f"trigger-{next(_counter)}",
        "view": {
            "id": f"V{next(_counter)}",
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": private_metadata,
            "state": {"values": values},
            "hash": "h",
            "team_id": TEAM,
            "app_id": APP_ID,
        },
    }


def command_form(
    text: str, *, user: str, channel: str = "C1", response_url: str, command: str = "/finetune"
) -> dict[str, str]:
    """The form fields of a slash command."""
    return {
        "token": "unused",
        "team_id": TEAM,
        "team_domain": "example",
        "channel_id": channel,
        "channel_name": "general",
        "user_id": user,
        "user_name": user,
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "response_url": response_url,
        "trigger_id": f"trigger-{next(_counter)}",
    }


def json_body(payload: dict[str, Any]) -> bytes:
    """An Events API request body."""
    return json.dumps(payload).encode()


def form_body(fields: dict[str, str]) -> bytes:
    """A form-encoded body (slash commands)."""
    return urllib.parse.urlencode(fields).encode()


def interactive_body(payload: dict[str, Any]) -> bytes:
    """An interactivity body: ``payload=<json>``."""
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
