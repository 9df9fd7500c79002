"""A loopback emulator of the Slack Web API for tests.

The real ``slack_sdk.WebClient`` talks to it over HTTP::

    emu = SlackEmulator(bot_token="xoxb-test").start()
    client = WebClient(token="xoxb-test", base_url=emu.url)
    client.chat_postMessage(channel="C1", text="hi")
    assert emu.messages("C1")[0]["text"] == "hi"
    emu.stop()

It is as strict as Slack's reference pages (each handler names its page): unknown
arguments are refused (``invalid_arguments``), blocks are checked against Block Kit's
limits (``invalid_blocks``, also for response URLs), ``markdown_text`` is limited to
12,000 characters, streaming chunks are checked (``invalid_chunks``), and
``chat.startStream`` outside a DM needs ``recipient_user_id`` and ``recipient_team_id``.
Files people share (:meth:`SlackEmulator.add_file`) are found by ``files.info`` and served
from ``url_private_download`` to the bot token only; uploads go through
``files.getUploadURLExternal``, the upload URL and ``files.completeUploadExternal``. The
AI-app events (Messages tab opened, app_context_changed, assistant threads) are built by
the emulator in Slack's shape, and ``experience`` says whether it acts as an agent_view or
an assistant_view app.

State (messages, streams, files, views, response URLs) lives in memory behind one lock.
Every API call is recorded as a :class:`Call`, including the ones that were answered
with an error (``Call.error``).

Socket Mode: ``apps.connections.open`` takes the app-level token (``xapp-...``, in the
Authorization header, as Slack requires) and answers a one-time ``ws://127.0.0.1`` URL of
:attr:`SlackEmulator.socket_mode`, the WebSocket endpoint that pushes envelopes and
records acknowledgements (see :mod:`tests.emulators.socket_mode`).
"""

from __future__ import annotations

import base64
import copy
import json
import mimetypes
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.emulators import LoopbackServer, Request, Responder
from tests.emulators.socket_mode import SocketModeServer

__all__ = ["Call", "SlackEmulator", "SlackFault"]

# Arguments that slack_sdk may send as JSON strings inside form / multipart bodies.
_JSON_ARGS = frozenset(
    {
        "attachments",
        "blocks",
        "chunks",
        "files",
        "loading_messages",
        "metadata",
        "outputs",
        "prompts",
        "unfurls",
        "view",
    }
)

BOT_ID = "BBOT"
APP_ID = "ABOT"

# Methods called with the app-level token instead of the bot token.
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})


@dataclass(frozen=True)
class Call:
    """One Web API call received by the emulator.

    ``args`` are the decoded arguments (query string, form, multipart or JSON body merged;
    the token removed). ``error`` is the Slack error the emulator answered with, or None.
    """

    method: str
    args: dict
    at: float
    error: str | None = None


@dataclass
class SlackFault:
    """A scripted failure for the next call(s) of one method."""

    method: str
    error: str
    status: int
    retry_after: int | None
    times: int


class _SlackError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _ts_key(ts: str) -> int:
    """A ts string as integer microseconds (for ordering)."""
    sec, _, frac = str(ts).partition(".")
    return int(sec or 0) * 1_000_000 + int((frac + "000000")[:6] or 0)


def _format_ts(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _encode_cursor(ts: str) -> str:
    return base64.b64encode(f"next_ts:{ts}".encode()).decode()


def _decode_cursor(cursor: str) -> str:
    try:
        raw = base64.b64decode(cursor.encode(), validate=True).decode()
    except Exception as exc:  # noqa: BLE001 - any garbage is an invalid cursor
        raise _SlackError("invalid_cursor") from exc
    if not raw.startswith("next_ts:"):
        raise _SlackError("invalid_cursor")
    return raw[len("next_ts:") :]


def _chunks_text(chunks: Any) -> str:
    if not isinstance(chunks, list):
        return ""
    return "".join(
        str(c.get("text", ""))
        for c in chunks
        if isinstance(c, dict) and c.get("type") == "markdown_text"
    )


REF = "https://docs.slack.dev/reference/methods/"

# The arguments each method accepts besides ``token``, as its reference page lists them
# (REF + method name); any other argument is refused with ``invalid_arguments``, so code
# that sends a misspelt or invented argument fails here as it would risk failing at Slack.
_ARGS: dict[str, frozenset[str]] = {
    name: frozenset(args.split())
    for name, args in {
        "auth.test": "",
        "apps.connections.open": "",
        "chat.postMessage": (
            "channel text as_user attachments blocks thread_ts reply_broadcast unfurl_links "
            "unfurl_media container_id icon_emoji icon_url mrkdwn link_names username parse "
            "metadata markdown_text"
        ),
        "chat.update": (
            "channel ts text attachments blocks as_user file_ids link_names parse "
            "reply_broadcast metadata markdown_text"
        ),
        "chat.delete": "channel ts as_user",
        "chat.postEphemeral": (
            "channel user text as_user attachments blocks thread_ts icon_emoji icon_url "
            "link_names username parse markdown_text"
        ),
        "chat.startStream": (
            "channel thread_ts markdown_text recipient_team_id recipient_user_id chunks "
            "task_display_mode icon_emoji icon_url username"
        ),
        "chat.appendStream": "channel ts markdown_text chunks",
        "chat.stopStream": "channel ts markdown_text blocks metadata chunks session_status",
        "assistant.threads.setStatus": (
            "channel_id thread_ts status loading_messages icon_emoji icon_url username"
        ),
        "assistant.threads.setSuggestedPrompts": "channel_id thread_ts title prompts",
        "assistant.threads.setTitle": "channel_id thread_ts title",
        "conversations.replies": (
            "channel ts cursor inclusive include_all_metadata latest limit oldest"
        ),
        "conversations.history": (
            "channel cursor inclusive include_all_metadata latest limit oldest"
        ),
        "conversations.info": "channel include_locale include_num_members",
        "conversations.open": "users channel return_im prevent_creation",
        "reactions.add": "channel name timestamp",
        "users.info": "user include_locale",
        "views.open": "trigger_id interactivity_pointer view",
        "views.update": "view external_id view_id hash",
        "views.publish": "user_id view hash",
        "files.info": "file count cursor limit page",
        "files.getUploadURLExternal": "filename length alt_txt snippet_type",
        "files.completeUploadExternal": "files channel_id channels initial_comment thread_ts blocks",
    }.items()
}

# Block Kit limits from the reference (docs.slack.dev/reference/block-kit/blocks/...).
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_MARKDOWN_CHARS = 12_000  # markdown_text arguments, and markdown blocks in one message
MAX_TEXT_CHARS = 40_000  # a message's text; longer is msg_too_long
MAX_SECTION_TEXT = 3_000
MAX_HEADER_TEXT = 150
_BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "context_actions",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)
_TEXT_TYPES = frozenset({"plain_text", "mrkdwn"})
_CONTEXT_ACTION_ELEMENTS = frozenset({"feedback_buttons", "icon_button"})


def _text_object(obj: Any, limit: int, types: frozenset[str] = _TEXT_TYPES) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("type") in types
        and isinstance(obj.get("text"), str)
        and 0 < len(obj["text"]) <= limit
    )


def _block_problem(block: Any) -> str | None:
    """What is wrong with one block, per its reference page, or None."""
    if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
        return "unknown block type"
    kind = block["type"]
    block_id = block.get("block_id")
    if block_id is not None and (not isinstance(block_id, str) or len(block_id) > 255):
        return "block_id must be a string of at most 255 characters"
    elements = block.get("elements")
    if kind == "section":
        fields = block.get("fields")
        if "text" not in block and not fields:
            return "a section needs text or fields"
        if "text" in block and not _text_object(block["text"], MAX_SECTION_TEXT):
            return f"section text must be a text object of 1-{MAX_SECTION_TEXT} characters"
        if fields is not None and (
            not isinstance(fields, list)
            or len(fields) > 10
            or not all(_text_object(f, 2000) for f in fields)
        ):
            return "section fields: at most 10 text objects of 1-2000 characters"
    elif kind == "header":
        if not _text_object(block.get("text"), MAX_HEADER_TEXT, frozenset({"plain_text"})):
            return f"header text must be plain_text of 1-{MAX_HEADER_TEXT} characters"
    elif kind == "markdown":
        if not isinstance(block.get("text"), str) or not block["text"]:
            return "a markdown block needs text"
    elif kind == "context":
        if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
            return "a context block holds 1-10 elements"
    elif kind == "actions":
        if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
            return "an actions block holds 1-25 elements"
    elif kind == "context_actions":
        if (
            not isinstance(elements, list)
            or not 1 <= len(elements) <= 5
            or not all(
                isinstance(e, dict) and e.get("type") in _CONTEXT_ACTION_ELEMENTS for e in elements
            )
        ):
            return "context_actions holds 1-5 feedback_buttons / icon_button elements"
    elif kind == "input":
        if not _text_object(block.get("label"), 2000, frozenset({"plain_text"})):
            return "an input block needs a plain_text label"
        if not isinstance(block.get("element"), dict):
            return "an input block needs an element"
    elif kind == "rich_text" and not isinstance(elements, list):
        return "a rich_text block needs elements"
    return None


def _blocks_problem(blocks: Any, limit: int) -> str | None:
    if not isinstance(blocks, list):
        return "blocks must be an array"
    if len(blocks) > limit:
        return f"no more than {limit} items allowed"
    seen: set[str] = set()
    markdown = 0
    for index, block in enumerate(blocks):
        problem = _block_problem(block)
        if problem:
            return f"[{index}] {problem}"
        if block.get("block_id"):
            if block["block_id"] in seen:
                return f"[{index}] duplicate block_id"
            seen.add(block["block_id"])
        if block["type"] == "markdown":
            markdown += len(block["text"])
    if markdown > MAX_MARKDOWN_CHARS:
        return f"markdown blocks hold at most {MAX_MARKDOWN_CHARS} characters in total"
    return None


_CHUNK_TYPES = frozenset({"markdown_text", "task_update", "plan_update", "blocks"})


def _chunks_problem(chunks: Any) -> str | None:
    """What is wrong with the streaming chunks of chat.*Stream, or None."""
    if not isinstance(chunks, list):
        return "chunks must be an array"
    for index, chunk in enumerate(chunks):
        if not isinstance(chunk, dict) or chunk.get("type") not in _CHUNK_TYPES:
            return f"[{index}] unknown chunk type"
        if chunk["type"] == "markdown_text" and (
            not isinstance(chunk.get("text"), str) or len(chunk["text"]) > MAX_MARKDOWN_CHARS
        ):
            return f"[{index}] markdown_text chunks hold text of at most {MAX_MARKDOWN_CHARS}"
    return None


class SlackEmulator(LoopbackServer):
    """In-memory Slack Web API served on ``http://127.0.0.1:PORT/api/``."""

    def __init__(
        self,
        bot_token: str = "xoxb-test",
        bot_user_id: str = "UBOT",
        team_id: str = "T1",
        latency_s: float = 0.0,
        app_token: str = "xapp-test",
    ) -> None:
        super().__init__()
        self.bot_token = bot_token
        self.app_token = app_token
        self.socket_mode = SocketModeServer(app_id=APP_ID)
        self.bot_user_id = bot_user_id
        self.team_id = team_id
        self.latency_s = latency_s
        self.refuse_streaming = False
        self.experience = "agent"
        """``agent`` (manifest agent_view) or ``assistant`` (assistant_view): decides
        whether setSuggestedPrompts honours ``thread_ts``."""
        self._lock = threading.RLock()
        self._new_call = threading.Condition(self._lock)
        self._ts_micros = 1_700_000_000_000_000
        self._id_counter = 0
        self._init_state()
        self._handlers: dict[str, Callable[[dict], dict]] = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.startStream": self._chat_start_stream,
            "chat.appendStream": self._chat_append_stream,
            "chat.stopStream": self._chat_stop_stream,
            "assistant.threads.setStatus": self._assistant_set_status,
            "assistant.threads.setSuggestedPrompts": self._assistant_set_prompts,
            "assistant.threads.setTitle": self._assistant_set_title,
            "files.info": self._files_info,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "conversations.info": self._conversations_info,
            "conversations.open": self._conversations_open,
            "reactions.add": self._reactions_add,
            "users.info": self._users_info,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
        }

    def _init_state(self) -> None:
        self._calls: list[Call] = []
        self._channels: dict[str, dict[str, dict]] = {}
        self._streams: dict[tuple[str, str], dict] = {}
        self._faults: list[SlackFault] = []
        self._users: dict[str, dict] = {}
        self._channel_info: dict[str, dict] = {}
        self._ephemerals: list[dict] = []
        self._views: dict[str, dict] = {}
        self._pending_files: dict[str, dict] = {}
        self._uploaded_files: list[dict] = []
        self._response_urls: dict[str, int] = {}
        self._responses: list[tuple[str, Any]] = []
        self._rejected_responses: list[tuple[str, str]] = []
        self._files: dict[str, dict] = {}
        self._file_content: dict[str, bytes] = {}
        self._downloads: list[tuple[str, bool]] = []
        self._prompts: dict[tuple[str, str | None], dict] = {}
        self._titles: dict[tuple[str, str], str] = {}

    # -- public API -------------------------------------------------------------------
    def start(self) -> SlackEmulator:
        """Start serving the Web API and the Socket Mode endpoint; returns self."""
        super().start()
        self.socket_mode.start()
        return self

    def stop(self) -> None:
        """Stop the Web API, then the Socket Mode endpoint (closing its connections): a
        client that reconnects on the close finds no ``apps.connections.open`` to call."""
        super().stop()
        self.socket_mode.stop()

    def __enter__(self) -> SlackEmulator:
        return self.start()

    @property
    def url(self) -> str:
        """The ``base_url`` for ``slack_sdk.WebClient`` (with a trailing slash)."""
        return f"{self.base}/api/"

    def reset(self) -> None:
        """Forget calls, messages, streams, faults, users, files, views, responses and the
        Socket Mode envelopes and acks (open Socket Mode connections stay open)."""
        with self._lock:
            self._init_state()
            self.refuse_streaming = False
            self.experience = "agent"
        self.socket_mode.reset()

    def calls(self, method: str | None = None) -> list[Call]:
        """Calls received so far (optionally of one method), oldest first."""
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Wait until ``count`` calls of ``method`` arrived; returns them.

        Raises AssertionError (listing the calls seen) on timeout.
        """
        deadline = time.monotonic() + timeout
        with self._new_call:
            while True:
                calls = self.calls(method)
                if len(calls) >= count:
                    return calls
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = "\n  ".join(
                        f"{c.method} {c.args!r} error={c.error}" for c in self._calls
                    )
                    raise AssertionError(
                        f"expected {count} call(s) of {method} within {timeout}s, got "
                        f"{len(calls)}; calls seen:\n  {seen or '(none)'}"
                    )
                self._new_call.wait(remaining)

    def wait_for_call(
        self, match: Callable[[Call], bool], *, since: int = 0, timeout: float = 5.0
    ) -> Call:
        """The first call from index ``since`` on for which ``match`` is true, waiting for
        it without polling (a benchmark's waiting must not load the emulator)."""
        deadline = time.monotonic() + timeout
        with self._new_call:
            index = since
            while True:
                while index < len(self._calls):
                    call = self._calls[index]
                    if match(call):
                        return call
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching call within {timeout}s")
                self._new_call.wait(remaining)

    def call_count(self) -> int:
        """How many calls arrived so far (a ``since`` for :meth:`wait_for_call`)."""
        with self._lock:
            return len(self._calls)

    def fail_next(
        self,
        method: str,
        *,
        error: str = "ratelimited",
        status: int = 429,
        retry_after: int | None = 1,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail.

        status 429 answers HTTP 429 with ``Retry-After`` and ``{"ok": false, "error":
        "ratelimited"}``; status 200 answers ``{"ok": false, "error": error}``; any other
        status answers that HTTP status with ``{"ok": false, "error": error}``.
        """
        with self._lock:
            self._faults.append(SlackFault(method, error, status, retry_after, times))

    def add_message(
        self,
        channel: str,
        text: str,
        user: str,
        *,
        ts: str | None = None,
        thread_ts: str | None = None,
        bot_id: str | None = None,
        **extra: Any,
    ) -> str:
        """Seed a message into history (a thread reply when ``thread_ts``); returns its ts."""
        with self._lock:
            if ts is None:
                ts = self._next_ts()
            else:
                self._ts_micros = max(self._ts_micros, _ts_key(ts))
            msg: dict[str, Any] = {
                "type": "message",
                "user": user,
                "text": text,
                "ts": ts,
                "team": self.team_id,
            }
            if bot_id:
                msg["bot_id"] = bot_id
            if thread_ts and thread_ts != ts:
                msg["thread_ts"] = thread_ts
            msg.update(extra)
            self._store(channel, msg)
            return ts

    def messages(self, channel: str, thread_ts: str | None = None) -> list[dict]:
        """Stored messages, oldest first.

        With ``thread_ts``: the thread (parent first, then replies). Without: the
        channel's top-level messages.
        """
        with self._lock:
            if thread_ts is None:
                return copy.deepcopy(self._top_level(channel))
            return copy.deepcopy(self._thread_messages(channel, thread_ts))

    def message(self, channel: str, ts: str) -> dict | None:
        """One stored message (a copy), or None."""
        with self._lock:
            msg = self._channels.get(channel, {}).get(ts)
            return copy.deepcopy(msg) if msg is not None else None

    def set_user(
        self,
        user_id: str,
        *,
        is_admin: bool = False,
        is_owner: bool = False,
        is_bot: bool = False,
        deleted: bool = False,
        name: str | None = None,
        real_name: str | None = None,
        display_name: str | None = None,
        email: str | None = None,
        tz: str = "UTC",
        tz_offset: int = 0,
    ) -> None:
        """Register a user for ``users.info`` (unregistered users get a default profile)."""
        with self._lock:
            self._users[user_id] = self._default_user(user_id)
            u = self._users[user_id]
            u.update(
                is_admin=is_admin,
                is_owner=is_owner,
                is_bot=is_bot,
                deleted=deleted,
                tz=tz,
                tz_offset=tz_offset,
            )
            if name:
                u["name"] = name
            if real_name:
                u["real_name"] = real_name
                u["profile"]["real_name"] = real_name
            if display_name:
                u["profile"]["display_name"] = display_name
            if email:
                u["profile"]["email"] = email

    def set_channel(self, channel_id: str, **fields: Any) -> None:
        """Override fields of the ``conversations.info`` answer for a channel."""
        with self._lock:
            self._channel_info.setdefault(channel_id, {}).update(fields)

    def stream_state(self, channel: str, ts: str) -> str | None:
        """``"streaming"``, ``"stopped"`` or None (not a stream)."""
        with self._lock:
            s = self._streams.get((channel, ts))
            return s["state"] if s else None

    def stream_chunks(self, channel: str, ts: str) -> list[dict]:
        """Every chunk received for a stream (start, append and stop), in order."""
        with self._lock:
            s = self._streams.get((channel, ts))
            return copy.deepcopy(s["chunks"]) if s else []

    def end_stream(self, channel: str, ts: str) -> None:
        """Simulate Slack ending a stream server-side: later appends and stops fail with
        ``message_not_in_streaming_state``."""
        with self._lock:
            if (channel, ts) in self._streams:
                self._streams[(channel, ts)]["state"] = "stopped"

    def ephemerals(self) -> list[dict]:
        """Ephemeral messages posted (not part of history), oldest first."""
        with self._lock:
            return copy.deepcopy(self._ephemerals)

    def views(self) -> list[dict]:
        """Views opened, updated or published (their latest state), in creation order."""
        with self._lock:
            return copy.deepcopy(list(self._views.values()))

    def uploaded_files(self) -> list[dict]:
        """Files completed via files.completeUploadExternal, with ``content`` bytes."""
        with self._lock:
            return copy.deepcopy(self._uploaded_files)

    def rejected_responses(self) -> list[tuple[str, str]]:
        """Posts to response URLs refused for malformed blocks: (url, problem)."""
        with self._lock:
            return list(self._rejected_responses)

    def add_file(
        self,
        name: str,
        content: bytes,
        *,
        user: str = "U1",
        mimetype: str | None = None,
        filetype: str | None = None,
    ) -> dict:
        """A file a person uploaded; returns its object as message events carry it
        (put it in ``add_message(..., files=[...])`` and in the event's ``files``).

        Its ``url_private_download`` serves ``content`` only with the bot token, like
        Slack's (files:read); without it the answer is an HTML login page.
        """
        with self._lock:
            return copy.deepcopy(self._new_file(name, content, user, mimetype, filetype))

    def downloads(self) -> list[tuple[str, bool]]:
        """Private file URLs fetched so far, each with whether the bot token came along."""
        with self._lock:
            return list(self._downloads)

    def suggested_prompts(self, channel: str, thread_ts: str | None = None) -> dict | None:
        """The prompts last set for a DM (agent experience) or one assistant thread:
        ``{"title", "prompts"}``, or None."""
        with self._lock:
            found = self._prompts.get((channel, thread_ts))
            return copy.deepcopy(found) if found else None

    def thread_title(self, channel: str, thread_ts: str) -> str | None:
        """The title assistant.threads.setTitle gave a thread, or None."""
        with self._lock:
            return self._titles.get((channel, thread_ts))

    # -- AI-app events, as Slack sends them (docs.slack.dev/reference/events/...) ----
    def dm_channel(self, user: str) -> str:
        """The app's DM with ``user`` (its Messages tab): ``D`` + the user id's tail."""
        return "D" + user[1:]

    def messages_tab_opened(self, user: str = "U1") -> dict:
        """app_home_opened with tab "messages": the agent experience's replacement of
        assistant_thread_started (reference/events/app_home_opened)."""
        return {
            "type": "app_home_opened",
            "user": user,
            "channel": self.dm_channel(user),
            "tab": "messages",
            "event_ts": self._event_ts(),
        }

    def app_context_changed(self, user: str, entities: list[dict]) -> dict:
        """What the user looks at while the agent is visible, most relevant first
        (reference/events/app_context_changed); ``entities=[]`` sends ``context: {}``."""
        return {
            "type": "app_context_changed",
            "user": user,
            "channel": self.dm_channel(user),
            "context": {"entities": copy.deepcopy(entities)} if entities else {},
            "event_ts": self._event_ts(),
        }

    def assistant_thread_started(self, user: str = "U1", context_channel: str = "") -> dict:
        """An assistant thread opened (assistant_view apps; reference/events/
        assistant_thread_started): its root message is stored as Slack stores it."""
        channel = self.dm_channel(user)
        with self._lock:
            ts = self._next_ts()
        self.add_message(
            channel, "New chat", user, ts=ts, subtype="assistant_app_thread", thread_ts=ts
        )
        context = (
            {"channel_id": context_channel, "team_id": self.team_id} if context_channel else {}
        )
        return {
            "type": "assistant_thread_started",
            "assistant_thread": {
                "user_id": user,
                "context": context,
                "channel_id": channel,
                "thread_ts": ts,
            },
            "event_ts": self._event_ts(),
        }

    def assistant_thread_context_changed(self, user: str, thread_ts: str, channel: str) -> dict:
        """The user switched channel beside an assistant thread (reference/events/
        assistant_thread_context_changed)."""
        return {
            "type": "assistant_thread_context_changed",
            "assistant_thread": {
                "user_id": user,
                "context": {"channel_id": channel, "team_id": self.team_id},
                "channel_id": self.dm_channel(user),
                "thread_ts": thread_ts,
            },
            "event_ts": self._event_ts(),
        }

    def _event_ts(self) -> str:
        with self._lock:
            return self._next_ts()

    def new_response_url(self) -> str:
        """A fresh response_url on the emulator (5 uses, like Slack's)."""
        with self._lock:
            path = f"/actions/{self.team_id}/{self._next_id()}/{secrets.token_hex(12)}"
            self._response_urls[path] = 0
        return self.base + path

    def responses(self, url: str | None = None) -> list[dict]:
        """JSON bodies POSTed to response URLs (optionally one URL), in order."""
        with self._lock:
            return [copy.deepcopy(b) for u, b in self._responses if url is None or u == url]

    # -- internals: ids and storage ---------------------------------------------------
    def _next_ts(self) -> str:
        self._ts_micros += 100
        return _format_ts(self._ts_micros)

    def _next_id(self) -> int:
        self._id_counter += 1
        return self._id_counter

    def _store(self, channel: str, msg: dict) -> None:
        self._channels.setdefault(channel, {})[msg["ts"]] = msg
        parent_ts = msg.get("thread_ts")
        if parent_ts and parent_ts != msg["ts"]:
            parent = self._channels[channel].get(parent_ts)
            if parent is not None:
                msg.setdefault("parent_user_id", parent.get("user"))
            self._refresh_parent(channel, parent_ts)

    def _refresh_parent(self, channel: str, parent_ts: str) -> None:
        msgs = self._channels.get(channel, {})
        parent = msgs.get(parent_ts)
        if parent is None:
            return
        replies = sorted(
            (m for m in msgs.values() if m.get("thread_ts") == parent_ts and m["ts"] != parent_ts),
            key=lambda m: _ts_key(m["ts"]),
        )
        if replies:
            users: list[str] = []
            for r in replies:
                if r.get("user") and r["user"] not in users:
                    users.append(r["user"])
            parent.update(
                thread_ts=parent_ts,
                reply_count=len(replies),
                reply_users=users,
                reply_users_count=len(users),
                latest_reply=replies[-1]["ts"],
            )
        else:
            for k in ("reply_count", "reply_users", "reply_users_count", "latest_reply"):
                parent.pop(k, None)
            if parent.get("thread_ts") == parent_ts:
                parent.pop("thread_ts")

    def _top_level(self, channel: str) -> list[dict]:
        msgs = self._channels.get(channel, {}).values()
        top = [m for m in msgs if not m.get("thread_ts") or m["thread_ts"] == m["ts"]]
        return sorted(top, key=lambda m: _ts_key(m["ts"]))

    def _thread_messages(self, channel: str, thread_ts: str) -> list[dict]:
        msgs = self._channels.get(channel, {})
        out = [m for m in msgs.values() if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts]
        return sorted(out, key=lambda m: (m["ts"] != thread_ts, _ts_key(m["ts"])))

    def _bot_message(self, text: str, ts: str) -> dict:
        return {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "text": text,
            "ts": ts,
            "team": self.team_id,
            "bot_profile": {
                "id": BOT_ID,
                "app_id": APP_ID,
                "name": "tuneloop",
                "team_id": self.team_id,
            },
        }

    def _new_file(
        self,
        name: str,
        content: bytes,
        user: str,
        mimetype: str | None,
        filetype: str | None,
        file_id: str | None = None,
    ) -> dict:
        file_id = file_id or f"F{self._next_id():010d}"
        mimetype = mimetype or mimetypes.guess_type(name)[0] or "application/octet-stream"
        now = int(time.time())
        private = f"{self.base}/files-pri/{self.team_id}-{file_id}/{name}"
        info = {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": filetype or (name.rsplit(".", 1)[-1].lower() if "." in name else "binary"),
            "pretty_type": (filetype or mimetype).upper(),
            "user": user,
            "user_team": self.team_id,
            "mode": "hosted",
            "editable": False,
            "is_external": False,
            "external_type": "",
            "size": len(content),
            "url_private": private,
            "url_private_download": private.replace(f"/{file_id}/", f"/{file_id}/download/"),
            "permalink": f"https://tuneloop-test.slack.com/files/{user}/{file_id}/{name}",
            "is_public": False,
            "channels": [],
            "groups": [],
            "ims": [],
        }
        self._files[file_id] = info
        self._file_content[file_id] = content
        return info

    def _get_message(self, channel: str, ts: Any) -> dict:
        msg = self._channels.get(channel, {}).get(str(ts)) if ts else None
        if msg is None:
            raise _SlackError("message_not_found")
        return msg

    def _default_user(self, user_id: str) -> dict:
        is_bot = user_id == self.bot_user_id
        name = "tuneloop" if is_bot else user_id.lower()
        return {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": "Tuneloop" if is_bot else f"User {user_id}",
            "tz": "UTC",
            "tz_label": "Coordinated Universal Time",
            "tz_offset": 0,
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": 1_700_000_000,
            "profile": {
                "real_name": "Tuneloop" if is_bot else f"User {user_id}",
                "display_name": name,
                "email": None if is_bot else f"{name}@example.com",
                "team": self.team_id,
                **({"bot_id": BOT_ID} if is_bot else {}),
            },
        }

    # -- HTTP dispatch ----------------------------------------------------------------
    def _dispatch(self, req: Request, resp: Responder) -> None:
        if req.path.startswith("/api/"):
            self._dispatch_api(req.path[len("/api/") :], req, resp)
        elif req.path.startswith("/upload/v1/"):
            self._dispatch_upload(req.path[len("/upload/v1/") :], req, resp)
        elif req.path.startswith("/files-pri/"):
            self._dispatch_file_download(req, resp)
        elif req.path.startswith("/actions/"):
            self._dispatch_response_url(req, resp)
        else:
            resp.send(404, b"not found", "text/plain; charset=utf-8")

    @staticmethod
    def _parse_args(req: Request) -> dict:
        args: dict[str, Any] = dict(req.query)
        ctype = req.content_type
        if ctype == "application/json":
            body = req.json()
            if isinstance(body, dict):
                args.update(body)
            return args
        if ctype == "multipart/form-data":
            for part in req.multipart():
                args[part.name] = part.data if part.filename is not None else part.text()
        elif req.body:
            args.update(req.form())
        for key in _JSON_ARGS & set(args):
            value = args[key]
            if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
                try:
                    args[key] = json.loads(value)
                except ValueError:
                    pass
        return args

    def _take_fault(self, method: str) -> SlackFault | None:
        for fault in self._faults:
            if fault.method == method and fault.times > 0:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _dispatch_api(self, method: str, req: Request, resp: Responder) -> None:
        args = self._parse_args(req)
        if method in _APP_TOKEN_METHODS:
            # Slack wants the app-level token in the header here, never in the body.
            token = req.bearer_token()
            expected, other = self.app_token, self.bot_token
        else:
            token = req.bearer_token() or args.get("token")
            expected, other = self.bot_token, self.app_token
        args.pop("token", None)
        args = {k: v for k, v in args.items() if v is not None}
        status, headers = 200, {}
        with self._lock:
            fault = None
            try:
                if not token:
                    raise _SlackError("not_authed")
                if token == other:
                    raise _SlackError("not_allowed_token_type")
                if token != expected:
                    raise _SlackError("invalid_auth")
                fault = self._take_fault(method)
                if fault is not None:
                    if fault.status == 429:
                        status = 429
                        if fault.retry_after is not None:
                            headers["Retry-After"] = str(fault.retry_after)
                        raise _SlackError("ratelimited")
                    status = fault.status
                    raise _SlackError(fault.error)
                handler = self._handlers.get(method)
                if handler is None:
                    raise _SlackError("unknown_method", req_method=method)
                self._check_args(method, args)
                body = handler(args)
                body = {"ok": True, **body}
                error = None
            except _SlackError as exc:
                body = {"ok": False, "error": exc.error, **exc.extra}
                error = exc.error
            self._calls.append(
                Call(method=method, args=copy.deepcopy(args), at=req.at, error=error)
            )
            self._new_call.notify_all()
            payload = json.dumps(body).encode("utf-8")
        self._sleep(self.latency_s)
        resp.send(status, payload, headers=headers)

    def _dispatch_upload(self, file_id: str, req: Request, resp: Responder) -> None:
        data = req.body
        if req.content_type == "multipart/form-data":
            parts = req.multipart()
            chosen = next((p for p in parts if p.filename is not None), parts[0] if parts else None)
            data = chosen.data if chosen else b""
        with self._lock:
            pending = self._pending_files.get(file_id)
            if pending is None:
                answer = (404, b"file not found")
            else:
                pending["content"] = data
                answer = (200, f"OK - {len(data)}".encode())
        self._sleep(self.latency_s)
        resp.send(answer[0], answer[1], "text/plain; charset=utf-8")

    def _dispatch_file_download(self, req: Request, resp: Responder) -> None:
        """GET url_private / url_private_download (docs.slack.dev/messaging/working-with-
        files): the bot token in ``Authorization: Bearer`` gets the bytes; anything else
        gets Slack's HTML login page with status 200, as Slack answers it."""
        parts = req.path.split("/")  # "", "files-pri", "T1-F…", ["download"], name
        file_id = parts[2].split("-", 1)[-1] if len(parts) > 2 else ""
        authorized = req.bearer_token() == self.bot_token
        with self._lock:
            self._downloads.append((req.path, authorized))
            info = self._files.get(file_id)
            content = self._file_content.get(file_id)
        if not authorized:
            page = b"<!DOCTYPE html><html><body>Sign in to Slack</body></html>"
            resp.send(200, page, "text/html; charset=utf-8")
        elif info is None or content is None:
            resp.send(404, b"file not found", "text/plain; charset=utf-8")
        else:
            resp.send(200, content, info["mimetype"])

    def _dispatch_response_url(self, req: Request, resp: Responder) -> None:
        if req.content_type == "application/json":
            body: Any = req.json()
        else:
            form = req.form()
            body = json.loads(form["payload"]) if "payload" in form else form
        with self._lock:
            uses = self._response_urls.get(req.path)
            if uses is None:
                answer: tuple[int, dict] = (404, {"ok": False, "error": "expired_url"})
            elif uses >= 5:
                answer = (404, {"ok": False, "error": "used_url"})
            elif (
                isinstance(body, dict)
                and "blocks" in body
                and (problem := _blocks_problem(body["blocks"], MAX_MESSAGE_BLOCKS))
            ):
                # Slack checks blocks sent to a response_url as it does for chat.postMessage.
                self._rejected_responses.append((self.base + req.path, problem))
                answer = (400, {"ok": False, "error": "invalid_blocks", "errors": [problem]})
            else:
                self._response_urls[req.path] = uses + 1
                self._responses.append((self.base + req.path, body))
                answer = (200, {"ok": True})
        self._sleep(self.latency_s)
        resp.send_json(*answer)

    # -- method handlers (called with the lock held) ---------------------------------
    @staticmethod
    def _require(args: dict, *names: str) -> None:
        missing = [n for n in names if args.get(n) in (None, "")]
        if missing:
            if missing[0] in ("channel", "channel_id"):
                raise _SlackError("channel_not_found")
            raise _SlackError(
                "invalid_arguments",
                response_metadata={
                    "messages": [f"[ERROR] missing required field: {n}" for n in missing]
                },
            )

    @staticmethod
    def _check_args(method: str, args: dict) -> None:
        # slack_sdk adds team_id to every call of a client that knows its workspace
        # (Bolt's clients do; Slack reads it for org-wide installations).
        unknown = sorted(set(args) - _ARGS[method] - {"team_id"})
        if unknown:
            raise _SlackError(
                "invalid_arguments",
                response_metadata={"messages": [f"[ERROR] unknown argument: {n}" for n in unknown]},
            )
        markdown = args.get("markdown_text")
        if markdown is not None and len(str(markdown)) > MAX_MARKDOWN_CHARS:
            raise _SlackError("msg_too_long")
        if len(str(args.get("text") or "")) > MAX_TEXT_CHARS:
            raise _SlackError("msg_too_long")
        # markdown_text "should not be used in conjunction with blocks or text"
        if (
            markdown is not None
            and (args.get("text") or args.get("blocks"))
            and method in ("chat.postMessage", "chat.update", "chat.postEphemeral")
        ):
            raise _SlackError("invalid_arguments")
        if "chunks" in args:
            problem = _chunks_problem(args["chunks"])
            if problem:
                raise _SlackError("invalid_chunks", errors=[problem])
        if "blocks" in args:
            view = method.startswith("views.")
            problem = _blocks_problem(
                args["blocks"], MAX_VIEW_BLOCKS if view else MAX_MESSAGE_BLOCKS
            )
            if problem:
                raise _SlackError("invalid_blocks", errors=[problem])
        view = args.get("view")
        if isinstance(view, dict) and "blocks" in view:
            problem = _blocks_problem(view["blocks"], MAX_VIEW_BLOCKS)
            if problem:
                raise _SlackError("invalid_blocks", errors=[problem])

    # https://docs.slack.dev/reference/methods/auth.test
    def _auth_test(self, args: dict) -> dict:
        return {
            "url": "https://tuneloop-test.slack.com/",
            "team": "Tuneloop Test",
            "user": "tuneloop",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    # https://docs.slack.dev/reference/methods/apps.connections.open
    def _apps_connections_open(self, args: dict) -> dict:
        return {"url": self.socket_mode.issue_url()}

    def _message_fields(self, msg: dict, args: dict) -> None:
        for key in ("blocks", "attachments", "metadata"):
            if args.get(key) is not None:
                msg[key] = args[key]

    # https://docs.slack.dev/reference/methods/chat.postMessage
    def _chat_post_message(self, args: dict) -> dict:
        self._require(args, "channel")
        text = args.get("text") or args.get("markdown_text") or ""
        if not text and not args.get("blocks") and not args.get("attachments"):
            raise _SlackError("no_text")
        channel = str(args["channel"])
        msg = self._bot_message(text, self._next_ts())
        self._message_fields(msg, args)
        if args.get("thread_ts"):
            msg["thread_ts"] = str(args["thread_ts"])
        self._store(channel, msg)
        return {"channel": channel, "ts": msg["ts"], "message": copy.deepcopy(msg)}

    # https://docs.slack.dev/reference/methods/chat.update
    def _chat_update(self, args: dict) -> dict:
        self._require(args, "channel", "ts")
        channel = str(args["channel"])
        msg = self._get_message(channel, args["ts"])
        if msg.get("user") != self.bot_user_id and msg.get("bot_id") != BOT_ID:
            raise _SlackError("cant_update_message")
        text = args.get("text") if args.get("text") is not None else args.get("markdown_text")
        if text is not None:
            msg["text"] = text
        self._message_fields(msg, args)
        msg["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {
            "channel": channel,
            "ts": msg["ts"],
            "text": msg.get("text", ""),
            "message": copy.deepcopy(msg),
        }

    # https://docs.slack.dev/reference/methods/chat.delete
    def _chat_delete(self, args: dict) -> dict:
        self._require(args, "channel", "ts")
        channel = str(args["channel"])
        msg = self._get_message(channel, args["ts"])
        if msg.get("user") != self.bot_user_id and msg.get("bot_id") != BOT_ID:
            raise _SlackError("cant_delete_message")
        del self._channels[channel][msg["ts"]]
        self._streams.pop((channel, msg["ts"]), None)
        if msg.get("thread_ts") and msg["thread_ts"] != msg["ts"]:
            self._refresh_parent(channel, msg["thread_ts"])
        return {"channel": channel, "ts": msg["ts"]}

    # https://docs.slack.dev/reference/methods/chat.postEphemeral
    def _chat_post_ephemeral(self, args: dict) -> dict:
        self._require(args, "channel", "user")
        text = args.get("text") or args.get("markdown_text") or ""
        if not text and not args.get("blocks") and not args.get("attachments"):
            raise _SlackError("no_text")
        ts = self._next_ts()
        record = {
            "channel": str(args["channel"]),
            "user": str(args["user"]),
            "text": text,
            "message_ts": ts,
        }
        for key in ("blocks", "attachments", "thread_ts"):
            if args.get(key) is not None:
                record[key] = args[key]
        self._ephemerals.append(record)
        return {"message_ts": ts}

    # https://docs.slack.dev/reference/methods/chat.startStream
    def _chat_start_stream(self, args: dict) -> dict:
        if self.refuse_streaming:
            raise _SlackError("feature_not_enabled")
        self._require(args, "channel", "thread_ts")
        channel = str(args["channel"])
        if not channel.startswith("D"):
            # "Required when streaming to channels."
            self._require(args, "recipient_user_id", "recipient_team_id")
        chunks = args.get("chunks") if isinstance(args.get("chunks"), list) else []
        text = (args.get("markdown_text") or "") + _chunks_text(chunks)
        msg = self._bot_message(text, self._next_ts())
        msg["thread_ts"] = str(args["thread_ts"])
        self._store(channel, msg)
        all_chunks = (
            [{"type": "markdown_text", "text": args["markdown_text"]}]
            if args.get("markdown_text")
            else []
        )
        self._streams[(channel, msg["ts"])] = {
            "state": "streaming",
            "chunks": all_chunks + list(chunks),
        }
        return {"channel": channel, "ts": msg["ts"]}

    def _streaming_message(self, args: dict) -> tuple[str, dict, dict]:
        self._require(args, "channel", "ts")
        channel = str(args["channel"])
        stream = self._streams.get((channel, str(args["ts"])))
        msg = self._channels.get(channel, {}).get(str(args["ts"]))
        if stream is None or msg is None or stream["state"] != "streaming":
            raise _SlackError("message_not_in_streaming_state")
        chunks = args.get("chunks") if isinstance(args.get("chunks"), list) else []
        if args.get("markdown_text"):
            stream["chunks"].append({"type": "markdown_text", "text": args["markdown_text"]})
        stream["chunks"].extend(chunks)
        msg["text"] = msg.get("text", "") + (args.get("markdown_text") or "") + _chunks_text(chunks)
        return channel, msg, stream

    # https://docs.slack.dev/reference/methods/chat.appendStream
    def _chat_append_stream(self, args: dict) -> dict:
        channel, msg, _ = self._streaming_message(args)
        return {"channel": channel, "ts": msg["ts"]}

    # https://docs.slack.dev/reference/methods/chat.stopStream
    def _chat_stop_stream(self, args: dict) -> dict:
        channel, msg, stream = self._streaming_message(args)
        self._message_fields(msg, args)
        stream["state"] = "stopped"
        return {"channel": channel, "ts": msg["ts"], "message": copy.deepcopy(msg)}

    # https://docs.slack.dev/reference/methods/assistant.threads.setStatus
    def _assistant_set_status(self, args: dict) -> dict:
        self._require(args, "channel_id", "thread_ts")
        if "status" not in args:
            raise _SlackError("invalid_arguments")
        return {}

    # https://docs.slack.dev/reference/methods/assistant.threads.setSuggestedPrompts
    def _assistant_set_prompts(self, args: dict) -> dict:
        self._require(args, "channel_id", "prompts")
        prompts = args["prompts"]
        if (
            not isinstance(prompts, list)
            or not 1 <= len(prompts) <= 4
            or not all(isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts)
        ):
            raise _SlackError("invalid_arguments")
        thread_ts = str(args["thread_ts"]) if args.get("thread_ts") else None
        if thread_ts and self.experience == "agent":
            return {}  # "Including it in a call for an agent app will cause the call to silently fail."
        self._prompts[(str(args["channel_id"]), thread_ts)] = {
            "title": args.get("title"),
            "prompts": copy.deepcopy(prompts),
        }
        return {}

    # https://docs.slack.dev/reference/methods/assistant.threads.setTitle
    def _assistant_set_title(self, args: dict) -> dict:
        self._require(args, "channel_id", "thread_ts", "title")
        self._titles[(str(args["channel_id"]), str(args["thread_ts"]))] = str(args["title"])
        return {}

    # https://docs.slack.dev/reference/methods/files.info
    def _files_info(self, args: dict) -> dict:
        self._require(args, "file")
        info = self._files.get(str(args["file"]))
        if info is None:
            raise _SlackError("file_not_found")
        return {
            "file": copy.deepcopy(info),
            "comments": [],
            "response_metadata": {"next_cursor": ""},
        }

    @staticmethod
    def _limit(args: dict, default: int, maximum: int) -> int:
        try:
            limit = int(args.get("limit") or default)
        except (TypeError, ValueError) as exc:
            raise _SlackError("invalid_limit") from exc
        return max(1, min(limit, maximum))

    @staticmethod
    def _in_range(msgs: list[dict], args: dict) -> list[dict]:
        inclusive = _truthy(args.get("inclusive", False))
        out = msgs
        if args.get("oldest") not in (None, ""):
            lo = _ts_key(str(args["oldest"]))
            out = [
                m for m in out if _ts_key(m["ts"]) > lo or (inclusive and _ts_key(m["ts"]) == lo)
            ]
        if args.get("latest") not in (None, ""):
            hi = _ts_key(str(args["latest"]))
            out = [
                m for m in out if _ts_key(m["ts"]) < hi or (inclusive and _ts_key(m["ts"]) == hi)
            ]
        return out

    @staticmethod
    def _page(msgs: list[dict], args: dict, limit: int) -> dict:
        start = 0
        if args.get("cursor"):
            cursor_ts = _decode_cursor(str(args["cursor"]))
            idx = next((i for i, m in enumerate(msgs) if m["ts"] == cursor_ts), None)
            if idx is None:
                raise _SlackError("invalid_cursor")
            start = idx
        page = msgs[start : start + limit]
        has_more = start + limit < len(msgs)
        return {
            "messages": copy.deepcopy(page),
            "has_more": has_more,
            "response_metadata": {
                "next_cursor": _encode_cursor(msgs[start + limit]["ts"]) if has_more else ""
            },
        }

    # https://docs.slack.dev/reference/methods/conversations.replies
    def _conversations_replies(self, args: dict) -> dict:
        self._require(args, "channel", "ts")
        channel = str(args["channel"])
        msg = self._channels.get(channel, {}).get(str(args["ts"]))
        if msg is None:
            raise _SlackError("thread_not_found")
        root = msg.get("thread_ts") or msg["ts"]
        thread = self._thread_messages(channel, root)
        parent = [m for m in thread if m["ts"] == root]
        replies = self._in_range([m for m in thread if m["ts"] != root], args)
        return self._page(parent + replies, args, self._limit(args, 1000, 1000))

    # https://docs.slack.dev/reference/methods/conversations.history
    def _conversations_history(self, args: dict) -> dict:
        self._require(args, "channel")
        channel = str(args["channel"])
        msgs = list(reversed(self._in_range(self._top_level(channel), args)))
        return {
            **self._page(msgs, args, self._limit(args, 100, 999)),
            "pin_count": 0,
            "channel_actions_ts": None,
            "channel_actions_count": 0,
        }

    def _conversations_open(self, args: dict) -> dict:
        """A DM with one user: ``D`` + the user id without its ``U`` (as conversations.info)."""
        self._require(args, "users")
        users = [u for u in str(args["users"]).split(",") if u]
        if len(users) != 1 or not users[0].startswith("U"):
            raise _SlackError("not_implemented")
        return {"channel": {"id": "D" + users[0][1:]}, "no_op": True, "already_open": True}

    # https://docs.slack.dev/reference/methods/conversations.info
    def _conversations_info(self, args: dict) -> dict:
        self._require(args, "channel")
        cid = str(args["channel"])
        is_im = cid.startswith("D")
        is_private = cid.startswith("G") or is_im
        name = cid.lower()
        channel: dict[str, Any] = {
            "id": cid,
            "created": 1_700_000_000,
            "is_archived": False,
            "is_org_shared": False,
            "context_team_id": self.team_id,
        }
        if is_im:
            channel.update(is_im=True, user="U" + cid[1:], is_user_deleted=False, priority=0)
        else:
            channel.update(
                name=name,
                name_normalized=name,
                is_channel=cid.startswith("C"),
                is_group=cid.startswith("G"),
                is_im=False,
                is_mpim=False,
                is_private=is_private,
                is_general=False,
                is_member=True,
                is_shared=False,
                is_ext_shared=False,
                creator="UADMIN",
                topic={"value": "", "creator": "", "last_set": 0},
                purpose={"value": "", "creator": "", "last_set": 0},
            )
        channel.update(self._channel_info.get(cid, {}))
        return {"channel": channel}

    # https://docs.slack.dev/reference/methods/reactions.add
    def _reactions_add(self, args: dict) -> dict:
        self._require(args, "channel", "timestamp", "name")
        msg = self._get_message(str(args["channel"]), args["timestamp"])
        name = str(args["name"]).strip(":")
        reactions = msg.setdefault("reactions", [])
        for r in reactions:
            if r["name"] == name:
                if self.bot_user_id in r["users"]:
                    raise _SlackError("already_reacted")
                r["users"].append(self.bot_user_id)
                r["count"] += 1
                return {}
        reactions.append({"name": name, "users": [self.bot_user_id], "count": 1})
        return {}

    # https://docs.slack.dev/reference/methods/users.info
    def _users_info(self, args: dict) -> dict:
        self._require(args, "user")
        uid = str(args["user"])
        user = self._users.get(uid) or self._default_user(uid)
        return {"user": copy.deepcopy(user)}

    def _make_view(self, view: dict, view_id: str, **extra: Any) -> dict:
        return {
            "id": view_id,
            "team_id": self.team_id,
            "type": view.get("type", "modal"),
            "title": view.get("title"),
            "submit": view.get("submit"),
            "close": view.get("close"),
            "blocks": view.get("blocks", []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": APP_ID,
            "app_installed_team_id": self.team_id,
            "bot_id": BOT_ID,
            **extra,
        }

    def _view_arg(self, args: dict) -> dict:
        view = args.get("view")
        if not isinstance(view, dict):
            raise _SlackError("invalid_arguments")
        return view

    # https://docs.slack.dev/reference/methods/views.open
    def _views_open(self, args: dict) -> dict:
        if not args.get("trigger_id") and not args.get("interactivity_pointer"):
            raise _SlackError("invalid_arguments")
        view = self._view_arg(args)
        view_id = f"V{self._next_id():010d}"
        self._views[view_id] = self._make_view(view, view_id)
        return {"view": copy.deepcopy(self._views[view_id])}

    # https://docs.slack.dev/reference/methods/views.update
    def _views_update(self, args: dict) -> dict:
        view = self._view_arg(args)
        current = None
        if args.get("view_id"):
            current = self._views.get(str(args["view_id"]))
        elif args.get("external_id"):
            current = next(
                (v for v in self._views.values() if v["external_id"] == args["external_id"]), None
            )
        if current is None:
            raise _SlackError("not_found")
        if args.get("hash") and args["hash"] != current["hash"]:
            raise _SlackError("hash_conflict")
        updated = self._make_view(view, current["id"], root_view_id=current["root_view_id"])
        self._views[current["id"]] = updated
        return {"view": copy.deepcopy(updated)}

    # https://docs.slack.dev/reference/methods/views.publish
    def _views_publish(self, args: dict) -> dict:
        self._require(args, "user_id")
        view = self._view_arg(args)
        existing = next(
            (
                v
                for v in self._views.values()
                if v["type"] == "home" and v.get("user_id") == args["user_id"]
            ),
            None,
        )
        view_id = existing["id"] if existing else f"V{self._next_id():010d}"
        self._views[view_id] = self._make_view(
            {"type": "home", **view}, view_id, user_id=str(args["user_id"])
        )
        return {"view": copy.deepcopy(self._views[view_id])}

    # https://docs.slack.dev/reference/methods/files.getUploadURLExternal
    def _files_get_upload_url(self, args: dict) -> dict:
        self._require(args, "filename", "length")
        file_id = f"F{self._next_id():010d}"
        self._pending_files[file_id] = {
            "id": file_id,
            "filename": str(args["filename"]),
            "length": int(args["length"]),
            "alt_txt": args.get("alt_txt"),
            "snippet_type": args.get("snippet_type"),
            "content": None,
        }
        return {"upload_url": f"{self.base}/upload/v1/{file_id}", "file_id": file_id}

    # https://docs.slack.dev/reference/methods/files.completeUploadExternal
    def _files_complete_upload(self, args: dict) -> dict:
        files = args.get("files")
        if not isinstance(files, list) or not files:
            raise _SlackError("invalid_arguments")
        channel_id = args.get("channel_id")
        channels = [c for c in str(args.get("channels") or "").split(",") if c]
        if channel_id:
            channels = [str(channel_id), *[c for c in channels if c != channel_id]]
        thread_ts = str(args["thread_ts"]) if args.get("thread_ts") else None
        for f in files:
            pending = self._pending_files.get(str(f.get("id")))
            if pending is None:
                raise _SlackError("file_not_found")
            if pending["content"] is None:
                raise _SlackError("file_upload_not_completed")
        public: list[dict] = []
        for f in files:
            pending = self._pending_files.pop(str(f["id"]))
            name = pending["filename"]
            info = self._new_file(
                name, pending["content"], self.bot_user_id, None, None, file_id=pending["id"]
            )
            info.update(title=f.get("title") or name, channels=channels)
            public.append(copy.deepcopy(info))
            self._uploaded_files.append(
                {
                    **info,
                    "filename": name,
                    "channel_id": channel_id,
                    "thread_ts": thread_ts,
                    "initial_comment": args.get("initial_comment"),
                    "alt_txt": pending["alt_txt"],
                    "content": pending["content"],
                }
            )
        for channel in channels:
            msg = self._bot_message(str(args.get("initial_comment") or ""), self._next_ts())
            msg.update(files=copy.deepcopy(public), upload=True, display_as_bot=False)
            if thread_ts:
                msg["thread_ts"] = thread_ts
            self._store(channel, msg)
        return {"files": copy.deepcopy(public)}
