"""Talking to the chat model through the ``openai`` client (OpenAI or any compatible server).

Retries of timeouts, 429 and 5xx happen inside the client (exponential backoff with
jitter, honouring Retry-After); what still fails becomes a :class:`ModelError` whose
``kind`` the Slack side turns into a short, friendly message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import openai
from openai import OpenAI

from workers.errors import ModelError
from workers.settings import ModelSettings, Settings

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


@dataclass
class AnswerStream:
    """Iterate to get the answer's text pieces; usage and latency are set once it ends."""

    _chunks: Iterator[Any]
    started_at: float
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0

    def __iter__(self) -> Iterator[str]:
        try:
            for chunk in self._chunks:
                if chunk.usage is not None:
                    self.prompt_tokens = chunk.usage.prompt_tokens
                    self.completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    piece = choice.delta.content if choice.delta else None
                    if piece:
                        self.text += piece
                        yield piece
        except openai.OpenAIError as exc:
            error = classify(exc)
            raise ModelError(ModelErrorKind.INTERRUPTED.value, error.detail) from exc
        finally:
            self.latency_ms = int((time.monotonic() - self.started_at) * 1000)


def stream_answer(
    client: OpenAI, model_settings: ModelSettings, model: str, messages: list[dict[str, Any]]
) -> AnswerStream:
    """Start a streamed chat completion; raises ModelError if it cannot start (after retries)."""
    started = time.monotonic()
    try:
        chunks = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=model_settings.max_answer_tokens,
            temperature=model_settings.temperature,
            stream=True,
            stream_options={"include_usage": True},
        )
    except openai.OpenAIError as exc:
        raise classify(exc) from exc
    return AnswerStream(iter(chunks), started)


def complete(
    client: OpenAI, model_settings: ModelSettings, model: str, messages: list[dict[str, Any]]
) -> str:
    """A whole answer at once (evaluation, judging); raises ModelError."""
    try:
        response = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=model_settings.max_answer_tokens,
            temperature=0.0,
        )
    except openai.OpenAIError as exc:
        raise classify(exc) from exc
    return response.choices[0].message.content or ""
