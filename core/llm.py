"""Talking to the chat model through the ``openai`` client (OpenAI or any compatible server).

Retries of timeouts, 429 and 5xx happen inside the client (exponential backoff with
jitter, honouring Retry-After); what still fails becomes a :class:`ModelError` whose
``kind`` the Slack side turns into a short, friendly message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from enum import Enum
from typing import Any

import openai
from openai import AsyncOpenAI, AsyncStream, OpenAI
from openai.types.chat import ChatCompletion

from core.errors import ModelError
from core.settings import ModelSettings, Settings

logger = logging.getLogger(__name__)


class ModelErrorKind(str, Enum):
    """Why the model gave no answer, in words the user-facing side can map to text."""

    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    CONTEXT_TOO_LONG = "context_too_long"
    MODEL_NOT_FOUND = "model_not_found"
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    INTERRUPTED = "interrupted"


def make_client(settings: Settings) -> OpenAI:
    """The one OpenAI client of a process, with the configured timeout and retries."""
    return OpenAI(
        api_key=settings.secrets.openai_api_key,
        base_url=settings.endpoints.openai_base_url,
        max_retries=settings.model.max_retries,
        timeout=settings.model.request_timeout_s,
    )


def make_async_client(settings: Settings) -> AsyncOpenAI:
    """The async client of the answer path (one per event loop), configured as
    :func:`make_client`."""
    return AsyncOpenAI(
        api_key=settings.secrets.openai_api_key,
        base_url=settings.endpoints.openai_base_url,
        max_retries=settings.model.max_retries,
        timeout=settings.model.request_timeout_s,
    )


def classify(exc: Exception) -> ModelError:
    """Map an ``openai`` exception to a ModelError with a kind."""
    if isinstance(exc, openai.APITimeoutError):
        kind = ModelErrorKind.TIMEOUT
    elif isinstance(exc, openai.RateLimitError):
        kind = ModelErrorKind.RATE_LIMITED
    elif isinstance(exc, openai.InternalServerError | openai.APIConnectionError):
        kind = ModelErrorKind.UNAVAILABLE
    elif isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        kind = ModelErrorKind.AUTH
    elif isinstance(exc, openai.NotFoundError):
        kind = ModelErrorKind.MODEL_NOT_FOUND
    elif isinstance(exc, openai.BadRequestError):
        code = getattr(exc, "code", None) or ""
        kind = (
            ModelErrorKind.CONTEXT_TOO_LONG
            if "context_length" in code or "maximum context length" in str(exc)
            else ModelErrorKind.BAD_REQUEST
        )
    else:
        kind = ModelErrorKind.UNAVAILABLE
    return ModelError(kind.value, str(exc)[:300])


class SSEParser:
    """Server-sent events read incrementally: feed bytes as they arrive, get each event's data.

    Lines end with LF or CRLF (as OpenAI-compatible servers send them); an event's data
    lines are joined with newlines; other fields and comments are ignored. Lines are cut
    on bytes and decoded whole, so a character split between chunks arrives intact.
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        self._rest = b""

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event that ``chunk`` completes."""
        events: list[str] = []
        *lines, self._rest = (self._rest + chunk).split(b"\n")
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                self._data.append(_field_value(line))
        return events

    def close(self) -> list[str]:
        """The last event, when the body ended without a blank line after it."""
        if self._rest.startswith(b"data:"):
            self._data.append(_field_value(self._rest))
        self._rest = b""
        events = ["\n".join(self._data)] if self._data else []
        self._data = []
        return events


def _field_value(line: bytes) -> str:
    return (line[6:] if line.startswith(b"data: ") else line[5:]).decode()


def sse_data(chunks: Iterable[bytes]) -> Iterator[str]:
    """The data of each server-sent event in a body read as ``chunks`` of bytes."""
    parser = SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
    yield from parser.close()


class AnswerStream:
    """Iterate (``async for``) to get the answer's text pieces; usage and latency are set
    once it ends.

    The chunks are read as plain JSON from the server-sent events rather than through
    the client's typed chunk objects: building one of those costs about 0.2 ms a chunk,
    which added a millisecond to every answer and CPU to every token (bench/README.md).
    The request itself, its retries and its errors stay with the client.
    """

    def __init__(self, response: Any, started_at: float) -> None:
        self._response = response
        self.started_at = started_at
        self.text = ""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.latency_ms = 0

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            parser = SSEParser()
            done = False
            async for raw in self._response.aiter_bytes():
                for data in parser.feed(raw):
                    # Read on to the end of the body after [DONE], so the connection goes
                    # back to the client's pool instead of being closed half-read.
                    done = done or data.startswith("[DONE]")
                    if not done:
                        for piece in self._pieces(data):
                            yield piece
            for data in parser.close():
                if not (done or data.startswith("[DONE]")):
                    for piece in self._pieces(data):
                        yield piece
        except ModelError:
            raise
        except Exception as exc:  # the connection, a timeout, or a malformed chunk
            detail = f"{type(exc).__name__}: {exc}"[:300]
            raise ModelError(ModelErrorKind.INTERRUPTED.value, detail) from exc
        finally:
            await self._response.aclose()
            self.latency_ms = int((time.monotonic() - self.started_at) * 1000)

    def _pieces(self, data: str) -> list[str]:
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise ValueError(f"a stream chunk is not an object: {data[:100]}")
        if chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise ModelError(ModelErrorKind.INTERRUPTED.value, str(message)[:300])
        usage = chunk.get("usage")
        if usage:
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
        pieces = []
        for choice in chunk.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                self.text += piece
                pieces.append(piece)
        return pieces


async def stream_answer(
    client: AsyncOpenAI, model_settings: ModelSettings, model: str, messages: list[dict[str, Any]]
) -> AnswerStream:
    """Start a streamed chat completion; raises ModelError if it cannot start (after retries).

    The request goes through the client's generic ``post`` (its documented way to send a
    request it has no typed method for) with a body built here: the typed
    ``chat.completions.create`` walks every parameter through its type annotations, which
    cost about half a millisecond a request (bench/README.md). Retries, timeouts,
    authentication and error types are the client's either way. The async client lets
    one event loop hold hundreds of answers in flight.
    """
    started = time.monotonic()
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": model_settings.max_answer_tokens,
        "temperature": model_settings.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    try:
        stream = await client.post(
            "/chat/completions",
            body=body,
            cast_to=object,
            stream=True,
            stream_cls=AsyncStream[object],
        )
    except openai.OpenAIError as exc:
        raise classify(exc) from exc
    return AnswerStream(stream.response, started)


def complete(
    client: OpenAI, model_settings: ModelSettings, model: str, messages: list[dict[str, Any]]
) -> str:
    """A whole answer at once (evaluation, judging); raises ModelError.

    Sent through the client's generic ``post`` like :func:`stream_answer`: the messages
    are stored transcripts (plain dicts), which the typed method would want as its
    message types; the request, retries and the typed reply are the client's all the same.
    """
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": model_settings.max_answer_tokens,
        "temperature": 0.0,
    }
    try:
        response = client.post("/chat/completions", body=body, cast_to=ChatCompletion)
    except openai.OpenAIError as exc:
        raise classify(exc) from exc
    return response.choices[0].message.content or ""
