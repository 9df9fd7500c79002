"""A loopback emulator of Slack's Socket Mode WebSocket endpoint (``wss://.../link/``).

Slack hands an app a one-time WebSocket URL from ``apps.connections.open``; the app
connects, Slack says ``hello``, then pushes envelopes (``events_api``, ``interactive``,
``slash_commands``) that the app must acknowledge with ``{"envelope_id": ...}`` (plus a
``payload`` where the envelope accepts one). This module is the WebSocket side, served by
:class:`SocketModeServer` on ``ws://127.0.0.1:PORT``; :class:`tests.emulators.slack.
SlackEmulator` owns one and answers ``apps.connections.open`` with its URLs::

    emu = SlackEmulator(app_token="xapp-test").start()
    # ... start the app in Socket Mode against emu.url ...
    emu.socket_mode.wait_connected()
    envelope_id = emu.socket_mode.push_event(event_callback_body)
    ack = emu.socket_mode.wait_for_ack(envelope_id)

The WebSocket protocol (RFC 6455) is written out here with the stdlib rather than taken
from a server library: the app under test speaks to Slack through slack_sdk's own
hand-written client, so a small server that is strict about what a client must do
(masked frames, a valid handshake, a known ticket) tests that client better than a
library that forgives, and the project needs no extra dependency for it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Ack", "SocketModeConnection", "SocketModeServer"]

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_MAX_HANDSHAKE_BYTES = 16_384
_MAX_MESSAGE_BYTES = 4_000_000  # far above any ack; more means a broken client
_HANDSHAKE_TIMEOUT_S = 5.0
_POLL_S = 0.1  # how often blocked reads and accepts look at the stop flag

# Interactions whose envelope lets the app answer with a payload (Slack sets
# accepts_response_payload for these: the answer changes what the user sees).
_INTERACTIVE_WITH_RESPONSE = frozenset({"view_submission", "block_suggestion"})


@dataclass(frozen=True)
class Ack:
    """One acknowledgement the app sent back: ``{"envelope_id": ..., "payload": ...}``."""

    envelope_id: str
    payload: dict[str, Any] | None
    raw: dict[str, Any]
    at: float


@dataclass
class _Envelope:
    envelope_id: str
    type: str
    message: dict[str, Any]
    connection: int
    at: float = field(default_factory=time.time)


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + _GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame, as a server sends it."""
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([size])
    elif size < 65_536:
        head += bytes([126]) + struct.pack("!H", size)
    else:
        head += bytes([127]) + struct.pack("!Q", size)
    return head + payload


class _Closed(ConnectionError):
    """The peer went away, the server is stopping, or the client broke the protocol."""


class SocketModeConnection:
    """One app connection: the handshake, then frames both ways until either side closes."""

    def __init__(self, server: SocketModeServer, sock: socket.socket, number: int) -> None:
        self.number = number
        self.ticket: str | None = None
        self.close_code: int | None = None
        self._server = server
        self._sock = sock
        self._send_lock = threading.Lock()
        self._buffer = b""
        self._open = threading.Event()
        self._closed = threading.Event()

    # -- state --------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """True from the hello until either side closed the connection."""
        return self._open.is_set() and not self._closed.is_set()

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """Wait until the connection is closed; True if it is."""
        return self._closed.wait(timeout)

    # -- sending ------------------------------------------------------------------------
    def send_json(self, message: dict[str, Any]) -> None:
        """Send one text frame holding ``message`` as JSON."""
        self._send(_OP_TEXT, json.dumps(message).encode("utf-8"))

    def close(self, code: int = 1001, reason: str = "") -> None:
        """Send a close frame, then drop the TCP connection (Slack does not linger)."""
        if self._closed.is_set():
            return
        try:
            self._send(_OP_CLOSE, struct.pack("!H", code) + reason.encode("utf-8"))
        except _Closed:
            pass
        self._drop()

    def _send(self, opcode: int, payload: bytes) -> None:
        frame = encode_frame(opcode, payload)
        with self._send_lock:
            if self._closed.is_set():
                raise _Closed("connection closed")
            try:
                self._sock.sendall(frame)
            except OSError as exc:
                raise _Closed(str(exc)) from exc

    def _drop(self) -> None:
        self._closed.set()
        self._open.clear()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._sock.close()
        except OSError:
            pass

    # -- receiving ----------------------------------------------------------------------
    def _recv_some(self, deadline: float | None) -> bytes:
        """Bytes from the socket; gives up when the server stops or ``deadline`` passes."""
        while True:
            if self._server._stopping.is_set() or self._closed.is_set():
                raise _Closed("stopping")
            if deadline is not None and time.monotonic() >= deadline:
                raise _Closed("handshake timed out")
            try:
                data = self._sock.recv(65_536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise _Closed(str(exc)) from exc
            if not data:
                raise _Closed("peer closed the TCP connection")
            return data

    def _read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._buffer += self._recv_some(None)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def _read_frame(self) -> tuple[bool, int, bytes]:
        b1, b2 = self._read_exact(2)
        fin, opcode, masked, size = bool(b1 & 0x80), b1 & 0x0F, bool(b2 & 0x80), b2 & 0x7F
        if b1 & 0x70:
            raise self._protocol_error("reserved bits set without an extension")
        if not masked:
            raise self._protocol_error("client frames must be masked")
        if size == 126:
            (size,) = struct.unpack("!H", self._read_exact(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._read_exact(8))
        if size > _MAX_MESSAGE_BYTES:
            raise self._protocol_error("frame too large", code=1009)
        if opcode >= _OP_CLOSE and (size > 125 or not fin):
            raise self._protocol_error("control frames are short and not fragmented")
        mask = self._read_exact(4)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(self._read_exact(size)))
        return fin, opcode, data

    def _protocol_error(self, why: str, code: int = 1002) -> _Closed:
        self._server._record_error(f"connection {self.number}: {why}")
        self.close(code, why)
        return _Closed(why)

    # -- the connection's life ----------------------------------------------------------
    def run(self) -> None:
        """Handshake, hello, then read frames until the connection ends."""
        try:
            if not self._handshake():
                return
            self._open.set()
            self.send_json(self._server._hello())
            self._server._connected(self)
            self._read_loop()
        except OSError:  # _Closed included: the connection is over either way
            pass
        finally:
            self._drop()
            self._server._disconnected(self)

    def _handshake(self) -> bool:
        deadline = time.monotonic() + _HANDSHAKE_TIMEOUT_S
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > _MAX_HANDSHAKE_BYTES:
                self._refuse(431, "Request Header Fields Too Large")
                return False
            self._buffer += self._recv_some(deadline)
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if len(parts) != 3 or parts[0] != "GET" or not parts[2].startswith("HTTP/1.1"):
            self._refuse(400, "Bad Request")
            return False
        key = headers.get("sec-websocket-key", "")
        if (
            headers.get("upgrade", "").lower() != "websocket"
            or "upgrade" not in headers.get("connection", "").lower()
            or headers.get("sec-websocket-version") != "13"
            or not key
        ):
            self._refuse(400, "Bad Request")
            return False
        target = urlsplit(parts[1])
        ticket = (parse_qs(target.query).get("ticket") or [""])[0]
        if target.path.rstrip("/") != "/link" or not self._server._redeem(ticket):
            self._refuse(401, "Unauthorized")
            return False
        self.ticket = ticket
        response = (
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
        )
        with self._send_lock:
            self._sock.sendall(response.encode("ascii"))
        return True

    def _refuse(self, status: int, reason: str) -> None:
        self._server._record_error(f"connection {self.number}: handshake refused ({status})")
        body = reason.encode("ascii")
        response = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        try:
            with self._send_lock:
                self._sock.sendall(response + body)
        except OSError:
            pass

    def _read_loop(self) -> None:
        fragments: list[bytes] = []
        fragmented_opcode: int | None = None
        while True:
            fin, opcode, data = self._read_frame()
            if opcode == _OP_PING:
                self._server._count_ping()
                self._send(_OP_PONG, data)
            elif opcode == _OP_PONG:
                continue
            elif opcode == _OP_CLOSE:
                self.close_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                self.close(self.close_code if self.close_code != 1005 else 1000)
                return
            elif opcode in (_OP_TEXT, _OP_BINARY, _OP_CONT):
                if opcode == _OP_CONT and fragmented_opcode is None:
                    raise self._protocol_error("continuation without a first fragment")
                if opcode != _OP_CONT and fragmented_opcode is not None:
                    raise self._protocol_error("new message inside a fragmented one")
                if opcode != _OP_CONT:
                    fragmented_opcode = opcode
                fragments.append(data)
                if sum(len(f) for f in fragments) > _MAX_MESSAGE_BYTES:
                    raise self._protocol_error("message too large", code=1009)
                if fin:
                    message, kind = b"".join(fragments), fragmented_opcode
                    fragments, fragmented_opcode = [], None
                    if kind == _OP_TEXT:
                        self._server._received_text(self, message)
                    else:
                        self._server._record_error(
                            f"connection {self.number}: binary message ignored"
                        )
            else:
                raise self._protocol_error(f"unknown opcode {opcode}")


class SocketModeServer:
    """Slack's Socket Mode endpoint on ``ws://127.0.0.1:PORT/link/?ticket=...``.

    Tickets come from :meth:`issue_url` (``apps.connections.open``); each is good for one
    connection (strict on purpose: slack_sdk asks for a fresh URL on every reconnect, and
    a client that reused one would be relying on luck). Every text message the app sends is kept; those with an ``envelope_id``
    are its acknowledgements (:meth:`acks`). Pings are answered with pongs.
    """

    def __init__(self, app_id: str = "A1") -> None:
        self.app_id = app_id
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._init_state()

    def _init_state(self) -> None:
        self._tickets: dict[str, bool] = {}  # ticket -> used
        self._connections: list[SocketModeConnection] = []
        self._ever_connected: list[SocketModeConnection] = []
        self._envelopes: list[_Envelope] = []
        self._acks: list[Ack] = []
        self._other_messages: list[Any] = []
        self._errors: list[str] = []
        self._pings = 0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> SocketModeServer:
        """Listen on 127.0.0.1 (port 0: the OS picks) and accept in a daemon thread."""
        if self._listener is not None:
            return self
        self._stopping.clear()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(_POLL_S)
        self._listener = listener
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"socket-mode-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Close every connection (close code 1001) and stop listening (idempotent)."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopping.set()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.close(1001, "server stopping")
        listener.close()
        threads = [t for t in (self._accept_thread, *self._threads) if t is not None]
        for thread in threads:
            thread.join(timeout=5)
        self._accept_thread, self._threads = None, []

    @property
    def port(self) -> int:
        """The bound TCP port (the server must be started)."""
        if self._listener is None:
            raise RuntimeError("SocketModeServer is not started")
        return int(self._listener.getsockname()[1])

    def reset(self) -> None:
        """Forget tickets, envelopes, acks and messages (open connections stay open)."""
        with self._lock:
            connections = self._connections
            self._init_state()
            self._connections = connections

    # -- what apps.connections.open hands out -------------------------------------------
    def issue_url(self) -> str:
        """A fresh one-time WebSocket URL, shaped like Slack's."""
        ticket = str(uuid.uuid4())
        with self._lock:
            self._tickets[ticket] = False
        return f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={self.app_id}"

    # -- pushing envelopes ----------------------------------------------------------------
    def push(
        self,
        envelope_type: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        envelope_id: str | None = None,
    ) -> str:
        """Send one envelope to the newest open connection; returns its envelope_id."""
        envelope_id = envelope_id or str(uuid.uuid4())
        message: dict[str, Any] = {
            "envelope_id": envelope_id,
            "payload": copy.deepcopy(payload),
            "type": envelope_type,
            "accepts_response_payload": accepts_response_payload,
        }
        if retry_attempt is not None:
            message["retry_attempt"] = retry_attempt
            message["retry_reason"] = retry_reason or ""
        conn = self._newest_open()
        with self._lock:
            self._envelopes.append(_Envelope(envelope_id, envelope_type, message, conn.number))
        conn.send_json(message)
        return envelope_id

    def push_event(
        self, body: dict[str, Any], *, retry_attempt: int = 0, retry_reason: str = ""
    ) -> str:
        """An Events API envelope around an ``event_callback`` body (as HTTP mode gets it).

        A redelivery keeps the body (and its ``event_id``) and raises ``retry_attempt``;
        Slack's reasons are e.g. ``timeout`` or ``http_timeout``.
        """
        return self.push(
            "events_api",
            body,
            accepts_response_payload=False,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
        )

    def push_interactive(self, payload: dict[str, Any]) -> str:
        """An interactivity envelope (block_actions, view_submission, shortcut, ...)."""
        accepts = payload.get("type") in _INTERACTIVE_WITH_RESPONSE
        return self.push("interactive", payload, accepts_response_payload=accepts)

    def push_slash_command(self, fields: dict[str, str]) -> str:
        """A slash command envelope: the HTTP form fields as a JSON object."""
        return self.push("slash_commands", fields, accepts_response_payload=True)

    def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the newest connection to reconnect, as Slack does before it recycles one."""
        self._newest_open().send_json(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "127.0.0.1"}}
        )

    def close_connections(self, code: int = 1001) -> None:
        """Close every open connection from the server's side."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.close(code)

    # -- what the test looks at -----------------------------------------------------------
    def connections(self) -> list[SocketModeConnection]:
        """Connections that said hello and are still open, oldest first."""
        with self._lock:
            return [c for c in self._connections if c.is_open]

    def connection_count(self) -> int:
        """How many connections were ever established (reconnects included)."""
        with self._lock:
            return len(self._ever_connected)

    def wait_connected(self, count: int = 1, timeout: float = 20.0) -> SocketModeConnection:
        """Wait until ``count`` connections were ever established; returns the newest open one.

        Raises AssertionError when that does not happen within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._ever_connected) < count or not any(
                c.is_open for c in self._connections
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} Socket Mode connection(s) within {timeout}s, "
                        f"got {len(self._ever_connected)}; errors: {self._errors}"
                    )
                self._changed.wait(min(remaining, _POLL_S))
            return [c for c in self._connections if c.is_open][-1]

    def wait_disconnected(self, timeout: float = 20.0) -> None:
        """Wait until no connection is open; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while any(c.is_open for c in self._connections):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"a Socket Mode connection still open after {timeout}s")
                self._changed.wait(min(remaining, _POLL_S))

    def acks(self, envelope_id: str | None = None) -> list[Ack]:
        """Acknowledgements received (optionally of one envelope), oldest first."""
        with self._lock:
            return [a for a in self._acks if envelope_id is None or a.envelope_id == envelope_id]

    def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> Ack:
        """Wait for the app's acknowledgement of ``envelope_id``; returns it.

        Raises AssertionError (listing what arrived) on timeout.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [a for a in self._acks if a.envelope_id == envelope_id]
                if found:
                    return found[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no ack of {envelope_id} within {timeout}s; acks: "
                        f"{[a.envelope_id for a in self._acks]}, other messages: "
                        f"{self._other_messages}, errors: {self._errors}"
                    )
                self._changed.wait(min(remaining, _POLL_S))

    def unacknowledged(self) -> list[str]:
        """Envelope ids pushed that the app has not acknowledged (yet)."""
        with self._lock:
            acked = {a.envelope_id for a in self._acks}
            return [e.envelope_id for e in self._envelopes if e.envelope_id not in acked]

    def other_messages(self) -> list[Any]:
        """Text messages from the app that are not acknowledgements (parsed when JSON)."""
        with self._lock:
            return copy.deepcopy(self._other_messages)

    def pings(self) -> int:
        """How many pings the app sent (each answered with a pong)."""
        with self._lock:
            return self._pings

    def errors(self) -> list[str]:
        """Protocol errors and refused handshakes, for a failing test to show."""
        with self._lock:
            return list(self._errors)

    # -- internals ------------------------------------------------------------------------
    def _hello(self) -> dict[str, Any]:
        with self._lock:
            open_now = sum(1 for c in self._connections if c.is_open) + 1
        return {
            "type": "hello",
            "num_connections": open_now,
            "debug_info": {
                "host": "applink-emulator",
                "build_number": 1,
                "approximate_connection_time": 18_060,
            },
            "connection_info": {"app_id": self.app_id},
        }

    def _newest_open(self) -> SocketModeConnection:
        with self._lock:
            open_now = [c for c in self._connections if c.is_open]
        if not open_now:
            raise AssertionError("no open Socket Mode connection to send to")
        return open_now[-1]

    def _redeem(self, ticket: str) -> bool:
        with self._lock:
            if self._tickets.get(ticket) is not False:
                return False
            self._tickets[ticket] = True
            return True

    def _accept_loop(self) -> None:
        number = 0
        while not self._stopping.is_set():
            listener = self._listener
            if listener is None:
                return
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(_POLL_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            number += 1
            conn = SocketModeConnection(self, sock, number)
            thread = threading.Thread(target=conn.run, name=f"socket-mode-conn-{number}")
            thread.daemon = True
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _connected(self, conn: SocketModeConnection) -> None:
        with self._changed:
            self._connections.append(conn)
            self._ever_connected.append(conn)
            self._changed.notify_all()

    def _disconnected(self, conn: SocketModeConnection) -> None:
        with self._changed:
            if conn in self._connections:
                self._connections.remove(conn)
            self._changed.notify_all()

    def _received_text(self, conn: SocketModeConnection, data: bytes) -> None:
        try:
            message: Any = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            message = data.decode("utf-8", errors="replace")
        with self._changed:
            if isinstance(message, dict) and isinstance(message.get("envelope_id"), str):
                payload = message.get("payload")
                self._acks.append(
                    Ack(
                        envelope_id=message["envelope_id"],
                        payload=payload if isinstance(payload, dict) else None,
                        raw=message,
                        at=time.time(),
                    )
                )
            else:
                self._other_messages.append(message)
            self._changed.notify_all()

    def _count_ping(self) -> None:
        with self._lock:
            self._pings += 1

    def _record_error(self, error: str) -> None:
        with self._lock:
            self._errors.append(error)
