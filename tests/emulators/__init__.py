"""Loopback HTTP emulators of the Slack Web API and the OpenAI API for tests.

The emulators are real HTTP/1.1 servers on 127.0.0.1 (port 0, so the OS picks a free
port) that the real ``slack_sdk.WebClient`` and ``openai.OpenAI`` clients talk to:

    from tests.emulators.slack import SlackEmulator
    from tests.emulators.openai import OpenAIEmulator

This package module holds the shared plumbing: a threaded stdlib server that keeps
track of its connections (so ``stop()`` is prompt), a parsed-request object, response
helpers (Content-Length or chunked transfer encoding, so keep-alive clients work) and a
small multipart/form-data parser.
"""

from __future__ import annotations

import email.message
import email.utils
import json
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "LoopbackServer",
    "MultipartPart",
    "Request",
    "Responder",
    "parse_multipart",
]


@dataclass(frozen=True)
class MultipartPart:
    """One part of a multipart/form-data body."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    def text(self) -> str:
        """The part's bytes decoded as UTF-8 (invalid bytes replaced)."""
        return self.data.decode("utf-8", errors="replace")


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    msg = email.message.Message()
    msg["content-type"] = value
    params = {k.lower(): v for k, v in msg.get_params(header="content-type")[1:]}
    return msg.get_content_type(), params


def _disposition_params(value: str) -> dict[str, str]:
    msg = email.message.Message()
    msg["content-disposition"] = value
    out: dict[str, str] = {}
    for k, v in msg.get_params(header="content-disposition")[1:]:
        out[k.lower()] = email.utils.collapse_rfc2231_value(v) if isinstance(v, tuple) else v
    return out


def parse_multipart(body: bytes, content_type: str) -> list[MultipartPart]:
    """Split a multipart/form-data body into its parts (stdlib only)."""
    _, params = _header_params(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise ValueError("multipart body without boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    parts: list[MultipartPart] = []
    segments = body.split(delimiter)
    # segments[0] is the preamble; the last one starts with "--" (the close delimiter)
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            break
        if segment.startswith(b"\r\n"):
            segment = segment[2:]
        elif segment.startswith(b"\n"):
            segment = segment[1:]
        head, sep, data = segment.partition(b"\r\n\r\n")
        if not sep:
            head, sep, data = segment.partition(b"\n\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", errors="replace").splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        disp = _disposition_params(headers.get("content-disposition", "form-data"))
        parts.append(
            MultipartPart(
                name=disp.get("name", ""),
                data=data,
                filename=disp.get("filename"),
                content_type=headers.get("content-type"),
            )
        )
    return parts


@dataclass
class Request:
    """A parsed HTTP request as seen by an emulator."""

    method: str
    path: str  # percent-decoded, without the query string
    raw_path: str  # as sent, without the query string
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float = field(default_factory=time.time)

    @property
    def content_type(self) -> str:
        """The media type of the body, lower-case, without parameters."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def json(self) -> Any:
        """The body parsed as JSON (None when empty)."""
        if not self.body:
            return None
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, str]:
        """The body parsed as application/x-www-form-urlencoded (last value wins)."""
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))

    def multipart(self) -> list[MultipartPart]:
        """The body parsed as multipart/form-data."""
        return parse_multipart(self.body, self.headers.get("content-type", ""))

    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer ...`` header, if any."""
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return None


class Responder:
    """Writes one HTTP response to a handler's socket.

    Either :meth:`send` a whole body (Content-Length), or :meth:`start_chunked`, then
    :meth:`write_chunk` as often as needed, then :meth:`end_chunked`.
    """

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self._h = handler
        self.status: int | None = None

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send a complete response with a Content-Length."""
        self.status = status
        h = self._h
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)
        h.wfile.flush()

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        """Send ``obj`` as a JSON body."""
        self.send(status, json.dumps(obj).encode("utf-8"), headers=headers)

    def start_chunked(
        self, status: int, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        """Start a response with ``Transfer-Encoding: chunked``."""
        self.status = status
        h = self._h
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.flush()

    def write_chunk(self, data: bytes) -> None:
        """Write and flush one chunk (empty data is skipped: it would end the body)."""
        if not data:
            return
        w = self._h.wfile
        w.write(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")
        w.flush()

    def end_chunked(self) -> None:
        """Write the terminating zero-length chunk."""
        self._h.wfile.write(b"0\r\n\r\n")
        self._h.wfile.flush()

    def drop(self) -> None:
        """Close the connection mid-response, as a crashed server or a cut cable would."""
        self._h.wfile.flush()
        self._h.close_connection = True
        self._h.connection.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # hundreds of clients connect at once in the benchmarks
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type, owner: LoopbackServer) -> None:
        self.owner = owner
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's socket.getfqdn(): reverse DNS can be slow offline.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (timeouts, stop()) is normal here: stay quiet about it.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)) or self.owner._stopping.is_set():
            return
        super().handle_error(request, client_address)

    def close_all_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                conn.close()
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms Nagle/delayed-ACK stalls on keep-alive connections
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers, up to the empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                out += self.rfile.read(size)
                self.rfile.readline()
            return bytes(out)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        body = self._read_body()
        split = urlsplit(self.path)
        req = Request(
            method=self.command,
            path=unquote(split.path),
            raw_path=split.path,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        resp = Responder(self)
        owner = self.server.owner
        try:
            owner._dispatch(req, resp)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception:  # an emulator bug: answer 500 and keep it for the test to see
            tb = traceback.format_exc()
            owner._server_errors.append(tb)
            self.close_connection = True
            if resp.status is None:
                try:
                    resp.send_json(500, {"ok": False, "error": "emulator_error", "traceback": tb})
                except OSError:
                    pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle  # noqa: N815


class LoopbackServer:
    """Base class: a threaded HTTP server on 127.0.0.1 with a random port.

    Subclasses implement ``_dispatch(request, responder)``.
    """

    def __init__(self) -> None:
        self._httpd: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._server_errors: list[str] = []

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> LoopbackServer:
        """Bind 127.0.0.1:0 and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self)
        self._serve_thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-{self.port}",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (idempotent)."""
        server, self._httpd = self._httpd, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_all_connections()
        if self._serve_thread is not None:
            self._serve_thread.join(timeout=5)
            self._serve_thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (the server must be started)."""
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._httpd.server_address[1])

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def server_errors(self) -> list[str]:
        """Tracebacks of exceptions raised inside the emulator (each answered 500)."""
        return list(self._server_errors)

    def _sleep(self, seconds: float) -> None:
        """Sleep; when the server is stopped meanwhile, drop the connection unanswered."""
        if seconds > 0 and self._stopping.wait(seconds):
            raise ConnectionAbortedError("emulator stopped")

    def _dispatch(self, req: Request, resp: Responder) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def poll_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.01) -> Any:
    """Call ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
