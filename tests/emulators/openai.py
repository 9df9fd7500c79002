"""A loopback emulator of the OpenAI API (plus vLLM's LoRA endpoints) for tests.

The real ``openai.OpenAI`` client talks to it over HTTP::

    emu = OpenAIEmulator(api_key="sk-test").start()
    client = OpenAI(api_key="sk-test", base_url=emu.url)
    emu.script_answer("Hello there")
    client.chat.completions.create(model="gpt-4o-mini-2024-07-18", messages=[...])
    emu.stop()

Covered: chat completions (streaming as SSE with chunked transfer encoding, and not),
models, embeddings, files, fine-tuning jobs (events, checkpoints; progression driven by
the test), vLLM ``load_lora_adapter`` / ``unload_lora_adapter``. Every request is
recorded (Authorization header removed).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import re
import secrets
import string
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.emulators import LoopbackServer, MultipartPart, Request, Responder

__all__ = ["BASE_MODELS", "OpenAIEmulator", "Recorded", "ScriptedAnswer"]

BASE_MODELS: tuple[str, ...] = (
    "gpt-4o-mini-2024-07-18",
    "gpt-4o-mini",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-mini",
    "gpt-4.1-nano-2025-04-14",
    "gpt-4.1-nano",
    "gpt-4o-2024-08-06",
    "gpt-4o",
    "gpt-4.1-2025-04-14",
    "gpt-4.1",
    "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo",
    "davinci-002",
    "babbage-002",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
)
_EMBEDDING_MODELS = frozenset(
    {"text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"}
)
_FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ORG_ID = "org-tuneloop"
_PLAIN = "text/plain; charset=utf-8"
"""vLLM answers a LoRA load or unload with the bare message (Starlette sends no media type)."""
_ALNUM = string.ascii_letters + string.digits


def _rand(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


@dataclass(frozen=True)
class Recorded:
    """One HTTP request received by the emulator.

    ``body`` is the parsed JSON, or for multipart a dict of field name to text (file
    fields as :class:`~tests.emulators.MultipartPart`), or raw bytes, or None (no body).
    ``headers`` have lower-case names and no Authorization header.
    """

    method: str
    path: str
    body: Any
    headers: dict
    query: dict = field(default_factory=dict)
    at: float = 0.0


@dataclass
class ScriptedAnswer:
    """A queued chat answer; None delays mean "use the emulator's defaults"."""

    text: str
    chunk_delay_s: float | None = None
    first_token_delay_s: float | None = None
    break_after: int | None = None
    """Stream only this many text pieces, then ``break_with``."""
    break_with: str = "disconnect"
    """"disconnect" (the connection drops) or "error" (an error event, as OpenAI sends)."""


@dataclass
class _Fault:
    path: str
    status: int | None
    times: int
    error_code: str | None
    message: str | None
    retry_after: float | None
    hang_s: float


@dataclass
class _Job:
    job: dict
    request: dict
    short_id: str
    events: list = field(default_factory=list)  # oldest first
    checkpoints: list = field(default_factory=list)  # oldest first
    metrics: list = field(default_factory=list)
    step: int = 0
    total_steps: int = 0


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        self.headers = headers or {}


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "input_text")
        )
    return str(content)


def _split_pieces(text: str, words_per_piece: int = 3) -> list[str]:
    tokens = re.findall(r"\s*\S+", text)
    if not tokens:
        return [text] if text else []
    pieces = [
        "".join(tokens[i : i + words_per_piece]) for i in range(0, len(tokens), words_per_piece)
    ]
    rest = text[len("".join(tokens)) :]
    pieces[-1] += rest
    return pieces


def _page(items: list[dict], after: str | None, limit: int) -> tuple[list[dict], bool]:
    """Cursor paging over ``items`` (already in answer order) by object id."""
    start = 0
    if after:
        idx = next((i for i, it in enumerate(items) if it.get("id") == after), None)
        start = idx + 1 if idx is not None else len(items)
    page = items[start : start + limit]
    return page, start + limit < len(items)


def _top_level_hyperparameters(method_type: str, hyper: dict) -> dict | None:
    """The deprecated top-level ``hyperparameters`` of a job: "only returned when running
    supervised jobs" (the SDK's ``FineTuningJob``); DPO jobs carry theirs under
    ``method.dpo.hyperparameters`` only."""
    if method_type != "supervised":
        return None
    return {
        k: v
        for k, v in hyper.items()
        if k in ("batch_size", "learning_rate_multiplier", "n_epochs")
    }


class OpenAIEmulator(LoopbackServer):
    """In-memory OpenAI API served on ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, api_key: str = "sk-test") -> None:
        super().__init__()
        self.api_key = api_key
        self.answer_fn: Callable[[dict], str] | None = None
        self.chunk_delay_s = 0.0
        self.first_token_delay_s = 0.0
        self.job_auto_advance = False
        self.job_total_steps = 3
        self.lora_runtime_updating = True
        """vLLM started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (else no adapter routes)."""
        self.lora_load_inplace = True
        """A vLLM that knows ``load_inplace``; False: an older one, which refuses any name
        already loaded (its serving_models.py had no such field)."""
        self._lock = threading.RLock()
        self._init_state()

    def _init_state(self) -> None:
        self._requests: list[Recorded] = []
        self._answers: deque[ScriptedAnswer] = deque()
        self._faults: list[_Fault] = []
        self._completions: list[dict] = []
        now = 1_700_000_000
        self._models: dict[str, dict] = {
            m: {"id": m, "object": "model", "created": now, "owned_by": "system"}
            for m in BASE_MODELS
        }
        self._files: dict[str, dict] = {}
        self._file_bytes: dict[str, bytes] = {}
        self._jobs: dict[str, _Job] = {}
        self._adapters: dict[str, str] = {}

    # -- public API -------------------------------------------------------------------
    def start(self) -> OpenAIEmulator:
        """Start serving; returns self."""
        super().start()
        return self

    def __enter__(self) -> OpenAIEmulator:
        return self.start()

    @property
    def url(self) -> str:
        """The ``base_url`` for ``openai.OpenAI`` (``http://127.0.0.1:PORT/v1``)."""
        return f"{self.base}/v1"

    def reset(self) -> None:
        """Forget requests, scripted answers, faults, files, jobs, adapters and added
        models; restore the default delays, ``answer_fn`` and job settings."""
        with self._lock:
            self._init_state()
            self.answer_fn = None
            self.chunk_delay_s = 0.0
            self.first_token_delay_s = 0.0
            self.job_auto_advance = False
            self.job_total_steps = 3
            self.lora_runtime_updating = True
            self.lora_load_inplace = True

    def requests(self, path: str | None = None) -> list[Recorded]:
        """Requests received so far (optionally for one path, e.g. "/v1/chat/completions")."""
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def wait_for_request(self, path: str, count: int = 1, timeout: float = 5.0) -> list[Recorded]:
        """Wait until ``count`` requests to ``path`` arrived; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.requests(path)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                seen = ", ".join(f"{r.method} {r.path}" for r in self.requests()) or "(none)"
                raise AssertionError(
                    f"expected {count} request(s) to {path}, got {len(found)}; seen: {seen}"
                )
            time.sleep(0.01)

    def completions(self) -> list[dict]:
        """Chat completions answered: dicts with model, messages, answer, stream."""
        with self._lock:
            return copy.deepcopy(self._completions)

    def script_answer(
        self,
        text: str,
        *,
        chunk_delay_s: float | None = None,
        first_token_delay_s: float | None = None,
        break_after: int | None = None,
        break_with: str = "disconnect",
    ) -> None:
        """Queue an answer for the next chat completion (FIFO).

        Delays left as None use ``emu.chunk_delay_s`` / ``emu.first_token_delay_s``. With
        ``break_after`` a streamed answer stops after that many pieces: the connection
        drops (``break_with="disconnect"``) or an error event ends it (``"error"``).
        """
        with self._lock:
            self._answers.append(
                ScriptedAnswer(text, chunk_delay_s, first_token_delay_s, break_after, break_with)
            )

    def fail_next(
        self,
        path: str = "/v1/chat/completions",
        *,
        status: int | None = None,
        times: int = 1,
        error_code: str | None = None,
        message: str | None = None,
        retry_after: float | None = None,
        hang_s: float = 0.0,
    ) -> None:
        """Make the next ``times`` requests to ``path`` fail (or hang).

        ``status`` defaults to 429, or 400 for ``error_code="context_length_exceeded"``.
        With ``hang_s`` > 0 the emulator first sleeps that long; if neither ``status``,
        ``error_code`` nor ``message`` is given it then answers normally (a slow answer,
        to trigger client timeouts). ``retry_after`` adds a ``Retry-After`` header.
        """
        if not path.startswith("/v1"):
            path = "/v1" + (path if path.startswith("/") else "/" + path)
        with self._lock:
            self._faults.append(
                _Fault(path, status, times, error_code, message, retry_after, hang_s)
            )

    def add_model(self, model_id: str, *, owned_by: str = ORG_ID) -> None:
        """Make a model id known (listed, and usable in chat)."""
        with self._lock:
            self._models[model_id] = {
                "id": model_id,
                "object": "model",
                "created": int(time.time()),
                "owned_by": owned_by,
            }

    def remove_model(self, model_id: str) -> None:
        """Forget a model id."""
        with self._lock:
            self._models.pop(model_id, None)

    def models(self) -> list[str]:
        """Ids of the known models."""
        with self._lock:
            return list(self._models)

    def add_file(
        self, content: bytes, filename: str = "data.jsonl", purpose: str = "fine-tune"
    ) -> str:
        """Store a file as if uploaded; returns its id."""
        with self._lock:
            return self._create_file(content, filename, purpose)["id"]

    def file_bytes(self, file_id: str) -> bytes:
        """The bytes of a stored file (KeyError if unknown)."""
        with self._lock:
            return self._file_bytes[file_id]

    def files(self) -> list[dict]:
        """File objects, oldest first."""
        with self._lock:
            return copy.deepcopy(list(self._files.values()))

    def jobs(self) -> list[dict]:
        """Fine-tuning job objects (current state), oldest first, each with the
        creation request body under ``"request"``."""
        with self._lock:
            return [
                {**copy.deepcopy(j.job), "request": copy.deepcopy(j.request)}
                for j in self._jobs.values()
            ]

    def job(self, job_id: str) -> dict:
        """One job object (current state, with ``"request"``); KeyError if unknown."""
        with self._lock:
            j = self._jobs[job_id]
            return {**copy.deepcopy(j.job), "request": copy.deepcopy(j.request)}

    def job_events(self, job_id: str) -> list[dict]:
        """A job's events, newest first (as the API lists them)."""
        with self._lock:
            return copy.deepcopy(list(reversed(self._jobs[job_id].events)))

    def advance_job(self, job_id: str) -> dict:
        """Move a job one stage: validating_files → queued → running → one metrics step
        per call (``job_total_steps``) → succeeded. Terminal jobs stay as they are."""
        with self._lock:
            self._advance(self._jobs[job_id])
            return copy.deepcopy(self._jobs[job_id].job)

    def finish_job(self, job_id: str) -> dict:
        """Advance a job until it is terminal; returns the job object."""
        with self._lock:
            j = self._jobs[job_id]
            while j.job["status"] not in _TERMINAL:
                self._advance(j)
            return copy.deepcopy(j.job)

    def fail_job(
        self,
        job_id: str,
        code: str = "invalid_training_file",
        message: str = "The job failed due to an invalid training file.",
        param: str | None = "training_file",
    ) -> dict:
        """Mark a job failed with ``error = {code, message, param}``."""
        with self._lock:
            j = self._jobs[job_id]
            j.job.update(
                status="failed",
                error={"code": code, "message": message, "param": param},
                finished_at=int(time.time()),
                estimated_finish=None,
            )
            self._event(j, message, level="error")
            return copy.deepcopy(j.job)

    def loaded_adapters(self) -> dict[str, str]:
        """vLLM LoRA adapters loaded: name → path."""
        with self._lock:
            return dict(self._adapters)

    @staticmethod
    def embed(text: str, dims: int = 64) -> list[float]:
        """The emulator's deterministic embedding: hashed, signed bag of words, L2-normalised."""
        vec = [0.0] * dims
        words = re.findall(r"\w+", text.lower()) or [text]
        for w in words:
            h = hashlib.sha256(w.encode("utf-8")).digest()
            vec[int.from_bytes(h[:4], "big") % dims] += 1.0 if h[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    # -- HTTP dispatch ----------------------------------------------------------------
    def _dispatch(self, req: Request, resp: Responder) -> None:
        body = self._parse_body(req)
        headers = {k: v for k, v in req.headers.items() if k != "authorization"}
        with self._lock:
            self._requests.append(
                Recorded(req.method, req.path, body, headers, dict(req.query), req.at)
            )
        try:
            if req.bearer_token() != self.api_key:
                token = req.bearer_token() or ""
                shown = (token[:3] + "*" * 4 + token[-4:]) if len(token) > 8 else "****"
                raise _ApiError(
                    401,
                    f"Incorrect API key provided: {shown}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    code="invalid_api_key",
                )
            with self._lock:
                fault = self._take_fault(req.path)
            if fault is not None:
                self._sleep(fault.hang_s)
                self._raise_fault(fault)
            self._route(req, body, resp)
        except _ApiError as exc:
            resp.send_json(
                exc.status, exc.body, headers={"x-request-id": f"req_{_rand(24)}", **exc.headers}
            )

    @staticmethod
    def _parse_body(req: Request) -> Any:
        if not req.body:
            return None
        ctype = req.content_type
        if ctype == "application/json":
            try:
                return req.json()
            except ValueError:
                return req.body
        if ctype == "multipart/form-data":
            out: dict[str, Any] = {}
            for part in req.multipart():
                out[part.name] = part if part.filename is not None else part.text()
            return out
        if ctype == "application/x-www-form-urlencoded":
            return req.form()
        return req.body

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.path == path and fault.times > 0:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _raise_fault(fault: _Fault) -> None:
        status = fault.status
        if status is None:
            if fault.hang_s > 0 and fault.error_code is None and fault.message is None:
                return  # a slow answer, not an error
            status = {
                "context_length_exceeded": 400,
                "model_not_found": 404,
                "invalid_api_key": 401,
            }.get(fault.error_code or "", 429)
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        code, type_, param = fault.error_code, "invalid_request_error", None
        if status == 429:
            if code == "insufficient_quota":
                type_, msg = (
                    "insufficient_quota",
                    "You exceeded your current quota, please check your plan and billing details.",
                )
            else:
                code = code or "rate_limit_exceeded"
                type_ = "requests"
                msg = (
                    f"Rate limit reached for requests in organization {ORG_ID} on requests per min (RPM): "
                    "Limit 3, Used 3, Requested 1. Please try again in 1s."
                )
        elif code == "context_length_exceeded":
            param = "messages"
            msg = (
                "This model's maximum context length is 128000 tokens. However, your messages resulted in "
                "130000 tokens. Please reduce the length of the messages."
            )
        elif status == 503:
            type_, msg = (
                "server_error",
                "The engine is currently overloaded, please try again later.",
            )
        elif status >= 500:
            type_, msg = (
                "server_error",
                "The server had an error while processing your request. Sorry about that!",
            )
        else:
            msg = f"Request failed with status {status}."
        raise _ApiError(
            status, fault.message or msg, type_=type_, param=param, code=code, headers=headers
        )

    def _route(self, req: Request, body: Any, resp: Responder) -> None:
        m, p = req.method, req.path.rstrip("/") or "/"
        jobs = "/v1/fine_tuning/jobs"
        if m == "POST" and p == "/v1/chat/completions":
            return self._chat(body, resp)
        if m == "GET" and p == "/v1/models":
            with self._lock:
                return self._json(
                    resp, {"object": "list", "data": copy.deepcopy(list(self._models.values()))}
                )
        if p.startswith("/v1/models/") and m in ("GET", "DELETE"):
            return self._model(m, p[len("/v1/models/") :], resp)
        if m == "POST" and p == "/v1/embeddings":
            return self._embeddings(body, resp)
        if p == "/v1/files":
            if m == "POST":
                return self._upload_file(body, resp)
            if m == "GET":
                return self._list_files(req, resp)
        if p.startswith("/v1/files/"):
            return self._file_route(m, p[len("/v1/files/") :], resp)
        if p == jobs and m == "POST":
            return self._create_job(body, resp)
        if p == jobs and m == "GET":
            return self._list_jobs(req, resp)
        if p.startswith(jobs + "/"):
            return self._job_route(m, p[len(jobs) + 1 :], req, resp)
        if m == "POST" and p == "/v1/load_lora_adapter":
            return self._load_adapter(body, resp)
        if m == "POST" and p == "/v1/unload_lora_adapter":
            return self._unload_adapter(body, resp)
        raise _ApiError(404, f"Invalid URL ({m} {req.path})")

    @staticmethod
    def _json(resp: Responder, obj: Any, status: int = 200) -> None:
        resp.send_json(status, obj, headers={"x-request-id": f"req_{_rand(24)}"})

    def _check_model(self, model: Any) -> str:
        if not isinstance(model, str) or not model:
            raise _ApiError(400, "you must provide a model parameter", param="model")
        with self._lock:
            known = model in self._models
        if not known:
            raise _ApiError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return model

    # -- chat -------------------------------------------------------------------------
    def _chat(self, body: Any, resp: Responder) -> None:
        if not isinstance(body, dict):
            raise _ApiError(400, "We could not parse the JSON body of your request.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _ApiError(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        model = self._check_model(body.get("model"))
        with self._lock:
            scripted = self._answers.popleft() if self._answers else None
            answer_fn = self.answer_fn
            chunk_delay, first_delay = self.chunk_delay_s, self.first_token_delay_s
        if scripted is not None:
            text = scripted.text
            if scripted.chunk_delay_s is not None:
                chunk_delay = scripted.chunk_delay_s
            if scripted.first_token_delay_s is not None:
                first_delay = scripted.first_token_delay_s
        elif answer_fn is not None:
            text = str(answer_fn(copy.deepcopy(body)))
        else:
            last_user = next(
                (
                    _content_text(m.get("content"))
                    for m in reversed(messages)
                    if isinstance(m, dict) and m.get("role") == "user"
                ),
                "",
            )
            text = f"Echo: {last_user}"

        finish_reason = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        words = re.findall(r"\s*\S+", text)
        if isinstance(limit, int) and 0 < limit < len(words):
            text, finish_reason = "".join(words[:limit]), "length"
        prompt_tokens = sum(
            len(_content_text(m.get("content")).split()) + 4
            for m in messages
            if isinstance(m, dict)
        )
        completion_tokens = len(text.split())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        stream = bool(body.get("stream"))
        with self._lock:
            self._completions.append(
                {
                    "model": model,
                    "messages": copy.deepcopy(messages),
                    "answer": text,
                    "stream": stream,
                }
            )
        cid, created = f"chatcmpl-{_rand(29)}", int(time.time())
        pieces = _split_pieces(text)
        if not stream:
            self._sleep(first_delay + chunk_delay * max(0, len(pieces) - 1))
            return self._json(
                resp,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": text,
                                "refusal": None,
                                "annotations": [],
                            },
                            "logprobs": None,
                            "finish_reason": finish_reason,
                        }
                    ],
                    "usage": usage,
                    "service_tier": "default",
                    "system_fingerprint": "fp_emulator",
                },
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, finish: str | None = None) -> dict:
            c: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_emulator",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                c["usage"] = None
            return c

        def send(obj: Any) -> None:
            data = obj if isinstance(obj, str) else json.dumps(obj)
            resp.write_chunk(f"data: {data}\n\n".encode())

        resp.start_chunked(
            200,
            "text/event-stream; charset=utf-8",
            headers={"x-request-id": f"req_{_rand(24)}", "Cache-Control": "no-cache"},
        )
        send(chunk({"role": "assistant", "content": "", "refusal": None}))
        for i, piece in enumerate(pieces):
            if scripted is not None and scripted.break_after == i:
                if scripted.break_with == "error":
                    error = {"message": "The server had an error while processing your request."}
                    send({"error": {**error, "type": "server_error", "code": None}})
                    resp.end_chunked()
                else:
                    resp.drop()
                return
            self._sleep(first_delay if i == 0 else chunk_delay)
            send(chunk({"content": piece}))
        send(chunk({}, finish_reason))
        if include_usage:
            final = chunk({})
            final["choices"] = []
            final["usage"] = usage
            send(final)
        send("[DONE]")
        resp.end_chunked()

    # -- models, embeddings -----------------------------------------------------------
    def _model(self, method: str, model_id: str, resp: Responder) -> None:
        with self._lock:
            model = self._models.get(model_id)
            if model is None:
                raise _ApiError(
                    404,
                    f"The model '{model_id}' does not exist",
                    param="model",
                    code="model_not_found",
                )
            if method == "DELETE":
                if not model_id.startswith("ft:"):
                    raise _ApiError(403, "You have insufficient permissions for this operation.")
                del self._models[model_id]
                return self._json(resp, {"id": model_id, "object": "model", "deleted": True})
            return self._json(resp, copy.deepcopy(model))

    def _embeddings(self, body: Any, resp: Responder) -> None:
        if not isinstance(body, dict) or "input" not in body:
            raise _ApiError(
                400,
                "Missing required parameter: 'input'.",
                param="input",
                code="missing_required_parameter",
            )
        model = self._check_model(body.get("model"))
        raw = body["input"]
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            inputs = [" ".join(map(str, raw))]
        elif isinstance(raw, list) and raw:
            inputs = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw]
        else:
            raise _ApiError(400, "'$.input' is invalid.", param="input")
        if any(s == "" for s in inputs):
            raise _ApiError(
                400, "'$.input' is invalid. Please check the API reference.", param="input"
            )
        dims = body.get("dimensions") or 64
        fmt = body.get("encoding_format") or "float"
        data = []
        for i, text in enumerate(inputs):
            vec = self.embed(text, int(dims))
            emb: Any = (
                base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
                if fmt == "base64"
                else vec
            )
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(len(s.split()) for s in inputs)
        self._json(
            resp,
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    # -- files ------------------------------------------------------------------------
    def _create_file(self, content: bytes, filename: str, purpose: str) -> dict:
        file_id = f"file-{_rand(22)}"
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }
        self._files[file_id] = obj
        self._file_bytes[file_id] = content
        return obj

    def _upload_file(self, body: Any, resp: Responder) -> None:
        if not isinstance(body, dict):
            raise _ApiError(400, "Expected a multipart/form-data body.")
        part = body.get("file")
        purpose = body.get("purpose")
        if not isinstance(part, MultipartPart):
            raise _ApiError(
                400,
                "Missing required parameter: 'file'.",
                param="file",
                code="missing_required_parameter",
            )
        if not purpose:
            raise _ApiError(
                400,
                "Missing required parameter: 'purpose'.",
                param="purpose",
                code="missing_required_parameter",
            )
        if purpose not in _FILE_PURPOSES:
            raise _ApiError(
                400,
                f"'{purpose}' is not one of {sorted(_FILE_PURPOSES)} - 'purpose'",
                param="purpose",
            )
        with self._lock:
            obj = copy.deepcopy(
                self._create_file(part.data, part.filename or "upload", str(purpose))
            )
        self._json(resp, obj)

    def _list_files(self, req: Request, resp: Responder) -> None:
        with self._lock:
            items = [
                f
                for f in reversed(self._files.values())
                if not req.query.get("purpose") or f["purpose"] == req.query["purpose"]
            ]
            page, has_more = _page(
                items, req.query.get("after"), int(req.query.get("limit") or 10000)
            )
            self._json(
                resp,
                {
                    "object": "list",
                    "data": copy.deepcopy(page),
                    "has_more": has_more,
                    "first_id": page[0]["id"] if page else None,
                    "last_id": page[-1]["id"] if page else None,
                },
            )

    def _file_route(self, method: str, rest: str, resp: Responder) -> None:
        file_id, _, sub = rest.partition("/")
        with self._lock:
            obj = self._files.get(file_id)
            if obj is None:
                raise _ApiError(404, f"No such File object: {file_id}", param="id")
            if method == "GET" and sub == "":
                return self._json(resp, copy.deepcopy(obj))
            if method == "GET" and sub == "content":
                data = self._file_bytes[file_id]
                return resp.send(200, data, "application/octet-stream")
            if method == "DELETE" and sub == "":
                del self._files[file_id]
                del self._file_bytes[file_id]
                return self._json(resp, {"id": file_id, "object": "file", "deleted": True})
        raise _ApiError(404, f"Invalid URL ({method} /v1/files/{rest})")

    # -- fine-tuning ------------------------------------------------------------------
    def _check_ft_file(self, file_id: Any, param: str) -> None:
        obj = self._files.get(file_id) if isinstance(file_id, str) else None
        if obj is None:
            raise _ApiError(400, f"invalid {param}: {file_id}", param=param, code="invalid_file")
        if obj["purpose"] != "fine-tune":
            raise _ApiError(
                400,
                f"File {file_id} has purpose '{obj['purpose']}'; fine-tuning needs purpose 'fine-tune'.",
                param=param,
                code="invalid_file_purpose",
            )

    def _create_job(self, body: Any, resp: Responder) -> None:
        if not isinstance(body, dict):
            raise _ApiError(400, "We could not parse the JSON body of your request.")
        for name in ("model", "training_file"):
            if not body.get(name):
                raise _ApiError(
                    400,
                    f"Missing required parameter: '{name}'.",
                    param=name,
                    code="missing_required_parameter",
                )
        with self._lock:
            self._check_ft_file(body["training_file"], "training_file")
            if body.get("validation_file"):
                self._check_ft_file(body["validation_file"], "validation_file")
            model = body["model"]
            if model not in self._models or model in _EMBEDDING_MODELS:
                raise _ApiError(
                    400,
                    f"Model {model} is not available for fine-tuning or does not exist.",
                    param="model",
                    code="model_not_found",
                )
            suffix = body.get("suffix")
            if suffix is not None and not (isinstance(suffix, str) and 1 <= len(suffix) <= 64):
                raise _ApiError(400, "suffix must be between 1 and 64 characters.", param="suffix")
            metadata = body.get("metadata")
            if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16):
                raise _ApiError(
                    400, "metadata may have at most 16 key-value pairs.", param="metadata"
                )

            method = copy.deepcopy(body.get("method")) or {"type": "supervised"}
            mtype = method.get("type", "supervised")
            if mtype not in ("supervised", "dpo", "reinforcement"):
                raise _ApiError(400, f"Invalid method type: {mtype}", param="method.type")
            defaults: dict[str, Any] = {
                "batch_size": "auto",
                "learning_rate_multiplier": "auto",
                "n_epochs": "auto",
            }
            if mtype == "dpo":
                defaults["beta"] = "auto"
            given = (
                ((method.get(mtype) or {}).get("hyperparameters"))
                or body.get("hyperparameters")
                or {}
            )
            hyper = {**defaults, **given}
            method[mtype] = {**(method.get(mtype) or {}), "hyperparameters": hyper}
            method["type"] = mtype

            job_id = f"ftjob-{_rand(24)}"
            seed = body.get("seed")
            if seed is None:
                seed = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:3], "big")
            job = {
                "object": "fine_tuning.job",
                "id": job_id,
                "model": model,
                "created_at": int(time.time()),
                "finished_at": None,
                "fine_tuned_model": None,
                "organization_id": ORG_ID,
                "result_files": [],
                "status": "validating_files",
                "validation_file": body.get("validation_file"),
                "training_file": body["training_file"],
                "hyperparameters": _top_level_hyperparameters(mtype, hyper),
                "trained_tokens": None,
                "error": None,
                "user_provided_suffix": suffix,
                "seed": seed,
                "estimated_finish": None,
                "integrations": copy.deepcopy(body.get("integrations") or []),
                "metadata": copy.deepcopy(metadata),
                "method": method,
            }
            j = _Job(job=job, request=copy.deepcopy(body), short_id=_rand(8))
            self._jobs[job_id] = j
            self._event(j, f"Created fine-tuning job: {job_id}")
            files = f"training file: {body['training_file']}"
            if body.get("validation_file"):
                files += f" and validation file: {body['validation_file']}"
            self._event(j, f"Validating {files}")
            out = copy.deepcopy(job)
        self._json(resp, out)

    def _list_jobs(self, req: Request, resp: Responder) -> None:
        filters = {
            k[len("metadata[") : -1]: v
            for k, v in req.query.items()
            if k.startswith("metadata[") and k.endswith("]")
        }
        with self._lock:
            items = [
                j.job
                for j in reversed(self._jobs.values())
                if all((j.job.get("metadata") or {}).get(k) == v for k, v in filters.items())
            ]
            page, has_more = _page(items, req.query.get("after"), int(req.query.get("limit") or 20))
            self._json(resp, {"object": "list", "data": copy.deepcopy(page), "has_more": has_more})

    def _job_route(self, method: str, rest: str, req: Request, resp: Responder) -> None:
        job_id, _, sub = rest.partition("/")
        with self._lock:
            j = self._jobs.get(job_id)
            if j is None:
                raise _ApiError(
                    404, f"Could not find fine-tuning job: {job_id}", param="fine_tuning_job_id"
                )
            if method == "GET" and sub == "":
                if self.job_auto_advance:
                    self._advance(j)
                return self._json(resp, copy.deepcopy(j.job))
            if method == "POST" and sub == "cancel":
                if j.job["status"] in _TERMINAL:
                    raise _ApiError(
                        400,
                        f"Cannot cancel a job that has already {j.job['status']}.",
                        param="fine_tuning_job_id",
                    )
                j.job.update(status="cancelled", estimated_finish=None)
                self._event(j, "Fine-tuning job cancelled")
                return self._json(resp, copy.deepcopy(j.job))
            if method == "GET" and sub in ("events", "checkpoints"):
                items = list(reversed(j.events if sub == "events" else j.checkpoints))
                page, has_more = _page(
                    items,
                    req.query.get("after"),
                    int(req.query.get("limit") or (20 if sub == "events" else 10)),
                )
                out: dict[str, Any] = {
                    "object": "list",
                    "data": copy.deepcopy(page),
                    "has_more": has_more,
                }
                if sub == "checkpoints":
                    out["first_id"] = page[0]["id"] if page else None
                    out["last_id"] = page[-1]["id"] if page else None
                return self._json(resp, out)
        raise _ApiError(404, f"Invalid URL ({method} {req.path})")

    def _event(
        self,
        j: _Job,
        message: str,
        *,
        level: str = "info",
        type_: str = "message",
        data: Any = None,
    ) -> dict:
        ev = {
            "object": "fine_tuning.job.event",
            "id": f"ftevent-{_rand(24)}",
            "created_at": int(time.time()),
            "level": level,
            "message": message,
            "data": data if data is not None else {},
            "type": type_,
        }
        j.events.append(ev)
        return ev

    def _fine_tuned_name(self, j: _Job) -> str:
        model = j.job["model"]
        base = model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 1 else model
        return f"ft:{base}:tuneloop:{j.job.get('user_provided_suffix') or ''}:{j.short_id}"

    def _trained_tokens(self, j: _Job) -> int:
        raw = self._file_bytes.get(j.job["training_file"], b"")
        tokens = 0
        for line in raw.decode("utf-8", errors="replace").splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                example = json.loads(line)
            except ValueError:
                tokens += len(line.split())
                continue
            msgs = list(example.get("messages") or [])
            msgs += list((example.get("input") or {}).get("messages") or [])
            msgs += list(example.get("preferred_output") or []) + list(
                example.get("non_preferred_output") or []
            )
            tokens += sum(
                len(_content_text(m.get("content")).split()) + 4
                for m in msgs
                if isinstance(m, dict)
            )
            if "prompt" in example:
                tokens += len(str(example.get("prompt", "")).split()) + len(
                    str(example.get("completion", "")).split()
                )
        method = j.job["method"]
        epochs = method[method["type"]]["hyperparameters"].get("n_epochs")
        return tokens * (epochs if isinstance(epochs, int) else 3)

    def _advance(self, j: _Job) -> None:
        job = j.job
        status = job["status"]
        if status == "validating_files":
            job["status"] = "queued"
            self._event(j, "Files validated, moving job to queued state")
        elif status == "queued":
            resolved = {
                "batch_size": 1,
                "learning_rate_multiplier": 1.8,
                "n_epochs": 3,
                "beta": 0.1,
            }
            mtype = job["method"]["type"]
            hyper = job["method"][mtype]["hyperparameters"]
            for k, v in list(hyper.items()):
                if v == "auto" and k in resolved:
                    hyper[k] = resolved[k]
            job["hyperparameters"] = _top_level_hyperparameters(mtype, hyper)
            j.total_steps = max(1, int(self.job_total_steps))
            job["status"] = "running"
            job["estimated_finish"] = int(time.time()) + 60 * j.total_steps
            self._event(j, "Fine-tuning job started")
        elif status == "running" and j.step < j.total_steps:
            j.step += 1
            n, total = j.step, j.total_steps
            train_loss = round(2.0 * 0.7**n, 4)
            valid_loss = round(train_loss * 1.08 + 0.02, 4)
            train_acc = round(min(0.99, 0.55 + 0.4 * n / total), 4)
            valid_acc = round(train_acc - 0.02, 4)
            data = {
                "step": n,
                "total_steps": total,
                "train_loss": train_loss,
                "valid_loss": valid_loss,
                "train_mean_token_accuracy": train_acc,
                "valid_mean_token_accuracy": valid_acc,
            }
            j.metrics.append(data)
            self._event(
                j,
                f"Step {n}/{total}: training loss={train_loss:.4f}, validation loss={valid_loss:.4f}",
                type_="metrics",
                data=data,
            )
            j.checkpoints.append(
                {
                    "object": "fine_tuning.job.checkpoint",
                    "id": f"ftckpt_{_rand(24)}",
                    "created_at": int(time.time()),
                    "fine_tuned_model_checkpoint": f"{self._fine_tuned_name(j)}:ckpt-step-{n}",
                    "fine_tuning_job_id": job["id"],
                    "metrics": {
                        "step": float(n),
                        "train_loss": train_loss,
                        "train_mean_token_accuracy": train_acc,
                        "valid_loss": valid_loss,
                        "valid_mean_token_accuracy": valid_acc,
                        "full_valid_loss": valid_loss,
                        "full_valid_mean_token_accuracy": valid_acc,
                    },
                    "step_number": n,
                }
            )
        elif status == "running":
            name = self._fine_tuned_name(j)
            rows = ["step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"]
            rows += [
                f"{d['step']},{d['train_loss']},{d['train_mean_token_accuracy']},{d['valid_loss']},{d['valid_mean_token_accuracy']}"
                for d in j.metrics
            ]
            result = self._create_file(
                ("\n".join(rows) + "\n").encode(), "step_metrics.csv", "fine-tune-results"
            )
            job.update(
                status="succeeded",
                fine_tuned_model=name,
                finished_at=int(time.time()),
                estimated_finish=None,
                result_files=[result["id"]],
                trained_tokens=self._trained_tokens(j),
            )
            self.add_model(name)
            self._event(j, f"New fine-tuned model created: {name}")
            self._event(j, "The job has successfully completed")

    # -- vLLM -------------------------------------------------------------------------
    # Behaves as vLLM's own handlers do: vllm/entrypoints/serve/lora/api_router.py (the
    # routes exist only with VLLM_ALLOW_RUNTIME_LORA_UPDATING; an ErrorResponse is sent
    # as JSON with its error.code as the HTTP status; success is the plain message) and
    # vllm/entrypoints/openai/models/serving.py (OpenAIServingModels.load_lora_adapter,
    # unload_lora_adapter and their _check_* functions: the messages, types and codes
    # below), with vllm/exceptions.py LoRAAdapterNotFoundError for a missing path. With
    # ``lora_load_inplace = False`` it answers as vLLM did before ``load_inplace`` existed
    # (vllm/entrypoints/openai/serving_models.py: any loaded name refused).
    def _vllm_error(self, status: int, message: str, type_: str) -> _ApiError:
        """vLLM's ErrorResponse: {"error": {"message", "type", "param", "code": status}}."""
        error = _ApiError(status, message, type_=type_)
        error.body = {"error": {"message": message, "type": type_, "param": None, "code": status}}
        return error

    def _vllm_route_missing(self, resp: Responder) -> bool:
        """Without VLLM_ALLOW_RUNTIME_LORA_UPDATING the routes are not registered at all:
        FastAPI answers 404 {"detail": "Not Found"}."""
        if self.lora_runtime_updating:
            return False
        resp.send_json(404, {"detail": "Not Found"})
        return True

    def _load_adapter(self, body: Any, resp: Responder) -> None:
        if self._vllm_route_missing(resp):
            return
        body = body if isinstance(body, dict) else {}
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            raise self._vllm_error(
                400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput"
            )
        name, path = str(name), str(path)
        with self._lock:
            if not self.lora_load_inplace:  # vLLM before load_inplace: the field is ignored
                if name in self._adapters:
                    raise self._vllm_error(
                        400,
                        f"The lora adapter '{name}' has already been loaded.",
                        "InvalidUserInput",
                    )
            elif not body.get("load_inplace") and name in self._adapters:
                raise self._vllm_error(
                    400,
                    f"The lora adapter '{name}' has already been loaded. If you want to load "
                    "the adapter in place, set 'load_inplace' to True.",
                    "InvalidUserInput",
                )
            if not Path(path).is_dir():
                raise self._vllm_error(
                    404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError"
                )
            self._adapters[name] = path
            self._models[name] = {
                "id": name,
                "object": "model",
                "created": int(time.time()),
                "owned_by": "vllm",
                "root": path,
                "parent": None,
            }
        resp.send(200, f"Success: LoRA adapter '{name}' added successfully.".encode(), _PLAIN)

    def _unload_adapter(self, body: Any, resp: Responder) -> None:
        if self._vllm_route_missing(resp):
            return
        name = body.get("lora_name") if isinstance(body, dict) else None
        if not name:
            raise self._vllm_error(
                400,
                "'lora_name' needs to be provided to unload a LoRA adapter.",
                "InvalidUserInput",
            )
        name = str(name)
        with self._lock:
            if name not in self._adapters:
                raise self._vllm_error(
                    404, f"The lora adapter '{name}' cannot be found.", "NotFoundError"
                )
            del self._adapters[name]
            self._models.pop(name, None)
        resp.send(200, f"Success: LoRA adapter '{name}' removed successfully.".encode(), _PLAIN)
