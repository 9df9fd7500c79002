"""The Slack app manifests ask for exactly the scopes and events the code uses.

The Web API methods are found by scanning bot/ and core/ for client calls; each maps to
the bot scope its reference page (docs.slack.dev/reference/methods/<method>) lists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from slack_sdk import WebClient

from bot import finetune
from core.settings import ROOT

MANIFESTS = {
    "agent": ROOT / "config" / "slack_manifest.yaml",
    "assistant": ROOT / "config" / "slack_manifest.assistant_view.yaml",
}

# Web API method -> bot scopes it needs (reference page "Scopes", bot token).
METHOD_SCOPES: dict[str, frozenset[str]] = {
    "auth.test": frozenset(),
    "chat.postMessage": frozenset({"chat:write"}),
    "chat.update": frozenset({"chat:write"}),
    "chat.delete": frozenset({"chat:write"}),
    "chat.postEphemeral": frozenset({"chat:write"}),
    "chat.startStream": frozenset({"chat:write"}),
    "chat.appendStream": frozenset({"chat:write"}),
    "chat.stopStream": frozenset({"chat:write"}),
    # Slack moved setStatus to chat:write (assistant:write is no longer needed for it).
    "assistant.threads.setStatus": frozenset({"chat:write"}),
    "assistant.threads.setSuggestedPrompts": frozenset({"assistant:write"}),
    "assistant.threads.setTitle": frozenset({"assistant:write"}),
    # Threads are read wherever the bot answers: channels, private channels, DMs, group DMs.
    "conversations.replies": frozenset(
        {"channels:history", "groups:history", "im:history", "mpim:history"}
    ),
    "users.info": frozenset({"users:read"}),
    "views.open": frozenset(),
    "views.publish": frozenset(),
    "views.update": frozenset(),
    "files.info": frozenset({"files:read"}),
    "files.getUploadURLExternal": frozenset({"files:write"}),
    "files.completeUploadExternal": frozenset({"files:write"}),
    "reactions.add": frozenset({"reactions:write"}),
    "conversations.open": frozenset({"im:write"}),
    "conversations.info": frozenset({"channels:read", "groups:read", "im:read", "mpim:read"}),
}
# Helpers of slack_sdk that call several methods.
SDK_HELPERS: dict[str, tuple[str, ...]] = {
    "chat_stream": ("chat.startStream", "chat.appendStream", "chat.stopStream"),
    "files_upload_v2": ("files.getUploadURLExternal", "files.completeUploadExternal"),
}
# Calls made with the app-level token (Socket Mode), not the bot token.
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})

# Event subscription -> bot scope (docs.slack.dev/reference/events/<event>).
EVENT_SCOPES: dict[str, frozenset[str]] = {
    "app_home_opened": frozenset(),
    "app_context_changed": frozenset(),
    "app_mention": frozenset({"app_mentions:read"}),
    "assistant_thread_started": frozenset({"assistant:write"}),
    "assistant_thread_context_changed": frozenset({"assistant:write"}),
    "message.channels": frozenset({"channels:history"}),
    "message.groups": frozenset({"groups:history"}),
    "message.im": frozenset({"im:history"}),
    "message.mpim": frozenset({"mpim:history"}),
    "reaction_added": frozenset({"reactions:read"}),
    "reaction_removed": frozenset({"reactions:read"}),
}

_CALL = re.compile(r"\.([a-z]+_[A-Za-z0-9_]+)\(")
_API_CALL = re.compile(r"api_call\(\s*[\"']([A-Za-z.]+)[\"']")
_EVENT = re.compile(r"app\.event\(\s*[\"']([a-z_]+)[\"']")
_EVENT_PATTERN = re.compile(r"app\.event\(\s*re\.compile\(r?[\"']([^\"']+)[\"']\)")


def _sources() -> list[Path]:
    return sorted([*ROOT.glob("bot/**/*.py"), *ROOT.glob("core/**/*.py")])


def called_methods() -> set[str]:
    """Every Web API method bot/ and core/ call through slack_sdk."""
    methods: set[str] = set()
    for path in _sources():
        source = path.read_text(encoding="utf-8")
        methods.update(_API_CALL.findall(source))
        for name in _CALL.findall(source):
            if name in SDK_HELPERS:
                methods.update(SDK_HELPERS[name])
            elif callable(getattr(WebClient, name, None)) and name != "api_call":
                methods.add(name.replace("_", "."))
    return methods


def downloads_files() -> bool:
    """Whether the code fetches files people shared (url_private_download: files:read)."""
    return any("url_private_download" in p.read_text(encoding="utf-8") for p in _sources())


def listened_events() -> tuple[set[str], list[re.Pattern[str]]]:
    """Event types with a listener, and the patterns of regex listeners (catch-all left out)."""
    names: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for path in ROOT.glob("bot/listeners/**/*.py"):
        source = path.read_text(encoding="utf-8")
        names.update(_EVENT.findall(source))
        patterns += [re.compile(p) for p in _EVENT_PATTERN.findall(source) if p != ".*"]
    return names, patterns


def _manifest(kind: str) -> dict[str, Any]:
    return yaml.safe_load(MANIFESTS[kind].read_text(encoding="utf-8"))


def test_the_scan_finds_the_calls_the_bot_makes() -> None:
    methods = called_methods()
    # A few the answer path cannot do without: the scan must see them.
    assert {"chat.startStream", "chat.postMessage", "conversations.replies"} <= methods
    assert {"assistant.threads.setTitle", "files.info"} <= methods
    unknown = methods - set(METHOD_SCOPES) - APP_TOKEN_METHODS
    assert not unknown, f"add these methods and their scopes to METHOD_SCOPES: {unknown}"


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_the_manifest_scopes_are_exactly_what_the_code_uses(kind: str) -> None:
    manifest = _manifest(kind)
    needed: set[str] = set()
    for method in called_methods() - APP_TOKEN_METHODS:
        needed |= METHOD_SCOPES[method]
    if downloads_files():
        needed.add("files:read")
    for event in manifest["settings"]["event_subscriptions"]["bot_events"]:
        needed |= EVENT_SCOPES[event]
    if manifest["features"].get("slash_commands"):
        needed.add("commands")
    granted = set(manifest["oauth_config"]["scopes"]["bot"])
    assert granted == needed, (
        f"missing: {sorted(needed - granted)}, not used: {sorted(granted - needed)}"
    )
    assert not {"reactions:write", "im:read"} & granted


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_every_subscribed_event_has_a_listener_and_every_listener_a_subscription(
    kind: str,
) -> None:
    subscribed = set(_manifest(kind)["settings"]["event_subscriptions"]["bot_events"])
    names, patterns = listened_events()

    def handled(event: str) -> bool:
        base = event.split(".", 1)[0]
        return base in names or any(p.match(base) for p in patterns)

    assert all(handled(e) for e in subscribed), sorted(e for e in subscribed if not handled(e))
    types = {e.split(".", 1)[0] for e in subscribed}
    # Listeners for the other experience's events may exist: one code base serves both.
    other = {
        "agent": {"assistant_thread_started", "assistant_thread_context_changed"},
        "assistant": {"app_context_changed"},
    }[kind]
    assert names - types == other
    assert {f"message.{t}" for t in ("channels", "groups", "im", "mpim")} <= subscribed


def test_the_agent_manifest_uses_agent_view_and_the_variant_assistant_view() -> None:
    agent, assistant = _manifest("agent"), _manifest("assistant")
    assert "agent_view" in agent["features"] and "assistant_view" not in agent["features"]
    assert agent["features"]["agent_view"]["agent_description"]
    assert "assistant_view" in assistant["features"] and "agent_view" not in assistant["features"]
    assert assistant["features"]["assistant_view"]["assistant_description"]
    assert agent["features"]["app_home"]["messages_tab_enabled"] is True
    # Apart from the view and its events the two are the same app.
    for manifest in (agent, assistant):
        manifest["features"].pop("agent_view", None)
        manifest["features"].pop("assistant_view", None)
        manifest["settings"]["event_subscriptions"].pop("bot_events")
    assert agent == assistant


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_the_manifest_prompts_are_the_configured_ones(kind: str) -> None:
    view = _manifest(kind)["features"][f"{kind}_view"]
    settings = yaml.safe_load((ROOT / "config" / "settings.yaml").read_text(encoding="utf-8"))
    assert view["suggested_prompts"] == settings["agent"]["suggested_prompts"]
    assert len(view["suggested_prompts"]) <= 4


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_the_usage_hint_lists_every_subcommand(kind: str) -> None:
    (command,) = _manifest(kind)["features"]["slash_commands"]
    listed = {part.split()[0] for part in command["usage_hint"].split("|")}
    assert listed == set(finetune.PUBLIC) | set(finetune.ADMIN)
