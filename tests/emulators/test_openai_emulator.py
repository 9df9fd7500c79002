"""The OpenAI emulator, exercised through the real openai.OpenAI client."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from tests.emulators.openai import OpenAIEmulator

MODEL = "gpt-4o-mini-2024-07-18"

TRAINING_JSONL = "\n".join(
    json.dumps(
        {
            "messages": [
                {"role": "system", "content": "You are tuneloop."},
                {"role": "user", "content": f"question number {i}"},
                {"role": "assistant", "content": f"answer number {i}"},
            ]
        }
    )
    for i in range(10)
).encode()


@pytest.fixture
def client(openai_api: OpenAIEmulator) -> OpenAI:
    return OpenAI(api_key=openai_api.api_key, base_url=openai_api.url, timeout=5)


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_non_streaming_chat_with_scripted_answer_and_usage(
    openai_api: OpenAIEmulator, client: OpenAI
) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", openai_api.url)
    openai_api.script_answer("The answer is forty two.")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the answer?"},
    ]
    resp = client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert resp.object == "chat.completion"
    assert resp.model == MODEL
    assert resp.choices[0].message.content == "The answer is forty two."
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == (2 + 4) + (4 + 4)
    assert resp.usage.completion_tokens == 5
    assert resp.usage.total_tokens == 19

    [req] = openai_api.requests("/v1/chat/completions")
    assert req.method == "POST" and req.body["messages"] == messages
    assert "authorization" not in req.headers and "content-type" in req.headers

    # queue empty: default echo of the last user message
    echo = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "ping"}]
    )
    assert echo.choices[0].message.content == "Echo: ping"


def test_streaming_chat_with_include_usage(openai_api: OpenAIEmulator, client: OpenAI) -> None:
    answer = "Streaming works in several small pieces, one after another, until done."
    openai_api.script_answer(answer)
    stream = client.chat.completions.create(
        model="gpt-4.1-mini-2025-04-14",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(
        c.object == "chat.completion.chunk" and c.model == "gpt-4.1-mini-2025-04-14" for c in chunks
    )
    assert len({c.id for c in chunks}) == 1
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) >= 3
    assert "".join(pieces) == answer
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 2 + 4
    assert chunks[-1].usage.completion_tokens == len(answer.split())

    # without include_usage there is no usage chunk
    plain = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x y"}], stream=True
        )
    )
    assert all(c.choices for c in plain)
    assert "".join(c.choices[0].delta.content or "" for c in plain) == "Echo: x y"


def test_answer_fn_and_delays(openai_api: OpenAIEmulator, client: OpenAI) -> None:
    openai_api.answer_fn = lambda body: f"{len(body['messages'])} messages to {body['model']}"
    resp = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a"}])
    assert resp.choices[0].message.content == f"1 messages to {MODEL}"

    openai_api.script_answer(
        "one two three four five six seven", first_token_delay_s=0.15, chunk_delay_s=0.05
    )
    started = time.monotonic()
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "a"}], stream=True
    )
    arrivals = [
        time.monotonic() - started for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert arrivals[0] >= 0.15
    assert arrivals[-1] - arrivals[0] >= 0.09  # two more pieces, 0.05 s apart
    assert openai_api.completions()[-1]["answer"] == "one two three four five six seven"


def test_max_tokens_truncates_with_finish_reason_length(client: OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "a b c d e f"}], max_completion_tokens=3
    )
    assert resp.choices[0].message.content == "Echo: a b"
    assert resp.choices[0].finish_reason == "length"


def test_errors_unknown_model_and_bad_key(openai_api: OpenAIEmulator, client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-99", messages=[{"role": "user", "content": "a"}])
    assert exc.value.code == "model_not_found"
    bad = OpenAI(api_key="sk-wrong", base_url=openai_api.url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad.models.list()
    assert auth.value.code == "invalid_api_key"


def test_rate_limit_then_success_with_builtin_retries(
    openai_api: OpenAIEmulator, client: OpenAI
) -> None:
    openai_api.fail_next(retry_after=0.01)
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "retry me"}]
    )
    assert resp.choices[0].message.content == "Echo: retry me"
    assert len(openai_api.requests("/v1/chat/completions")) == 2

    openai_api.fail_next(status=503, retry_after=0.01, times=2)
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "s"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "Echo: s"
    assert len(openai_api.requests("/v1/chat/completions")) == 5


def test_error_shapes_without_retries(openai_api: OpenAIEmulator) -> None:
    client = OpenAI(api_key="sk-test", base_url=openai_api.url, max_retries=0)
    msgs = [{"role": "user", "content": "a"}]
    openai_api.fail_next(retry_after=7)
    with pytest.raises(openai.RateLimitError) as rl:
        client.chat.completions.create(model=MODEL, messages=msgs)  # type: ignore[arg-type]
    assert rl.value.code == "rate_limit_exceeded"
    assert rl.value.response.headers["retry-after"] == "7"
    assert set(rl.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]

    openai_api.fail_next(error_code="context_length_exceeded")
    with pytest.raises(openai.BadRequestError) as ctx:
        client.chat.completions.create(model=MODEL, messages=msgs)  # type: ignore[arg-type]
    assert ctx.value.code == "context_length_exceeded" and ctx.value.status_code == 400

    openai_api.fail_next(status=500, message="boom")
    with pytest.raises(openai.InternalServerError) as ise:
        client.chat.completions.create(model=MODEL, messages=msgs)  # type: ignore[arg-type]
    assert ise.value.message.endswith("boom")


def test_hang_triggers_client_timeout(openai_api: OpenAIEmulator) -> None:
    client = OpenAI(api_key="sk-test", base_url=openai_api.url, max_retries=0, timeout=0.3)
    openai_api.fail_next(hang_s=2.0)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "slow"}])
    assert time.monotonic() - started < 1.5
    # the fault is used up: the next call answers at once
    ok = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "fast"}])
    assert ok.choices[0].message.content == "Echo: fast"


def test_models_and_embeddings(openai_api: OpenAIEmulator, client: OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    for expected in (
        "gpt-4o-mini-2024-07-18",
        "gpt-4.1-mini-2025-04-14",
        "gpt-4.1-nano-2025-04-14",
        "gpt-4o-2024-08-06",
    ):
        assert expected in ids
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    openai_api.add_model("my-local-model")
    assert client.models.retrieve("my-local-model").owned_by

    texts = ["the cat sat on the mat", "a cat sat on a mat", "quarterly revenue projections"]
    resp = client.embeddings.create(
        model="text-embedding-3-small", input=texts
    )  # base64 by default
    vecs = [d.embedding for d in resp.data]
    assert all(len(v) == 64 and math.isclose(_cosine(v, v), 1.0, rel_tol=1e-5) for v in vecs)
    assert _cosine(vecs[0], vecs[1]) > 0.4 > abs(_cosine(vecs[0], vecs[2]))
    floats = client.embeddings.create(
        model="text-embedding-3-small", input=texts[0], encoding_format="float"
    )
    assert floats.data[0].embedding == pytest.approx(vecs[0], abs=1e-6)
    assert floats.data[0].embedding == pytest.approx(OpenAIEmulator.embed(texts[0]))


def test_files_roundtrip(openai_api: OpenAIEmulator, client: OpenAI) -> None:
    created = client.files.create(file=("train.jsonl", TRAINING_JSONL), purpose="fine-tune")
    assert created.id.startswith("file-") and created.bytes == len(TRAINING_JSONL)
    assert created.filename == "train.jsonl" and created.purpose == "fine-tune"
    assert openai_api.file_bytes(created.id) == TRAINING_JSONL
    upload = openai_api.requests("/v1/files")[0]
    assert upload.body["purpose"] == "fine-tune" and upload.body["file"].filename == "train.jsonl"
    assert client.files.retrieve(created.id).id == created.id
    assert client.files.content(created.id).read() == TRAINING_JSONL
    assert client.files.delete(created.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_fine_tuning_job_lifecycle(openai_api: OpenAIEmulator, client: OpenAI) -> None:
    train = client.files.create(file=("train.jsonl", TRAINING_JSONL), purpose="fine-tune")
    valid = client.files.create(file=("valid.jsonl", TRAINING_JSONL), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=train.id,
        validation_file=valid.id,
        suffix="support-bot",
        seed=7,
        metadata={"run": "r1"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    )
    assert job.id.startswith("ftjob-") and job.status == "validating_files"
    assert job.model == MODEL and job.seed == 7 and job.metadata == {"run": "r1"}
    assert job.method is not None and job.method.type == "supervised"
    stored = openai_api.jobs()[0]
    assert stored["request"]["suffix"] == "support-bot"
    assert stored["request"]["method"]["supervised"]["hyperparameters"] == {"n_epochs": 2}

    assert openai_api.advance_job(job.id)["status"] == "queued"
    assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"  # no auto-advance by default
    assert openai_api.advance_job(job.id)["status"] == "running"
    for _ in range(3):
        assert openai_api.advance_job(job.id)["status"] == "running"

    events = list(client.fine_tuning.jobs.list_events(job.id))
    metrics = [e for e in events if e.type == "metrics"]
    assert all(e.object == "fine_tuning.job.event" for e in events)
    assert [e.data["step"] for e in metrics] == [3, 2, 1]  # type: ignore[index]  # newest first
    losses = [e.data["train_loss"] for e in reversed(metrics)]  # type: ignore[index]
    assert losses == sorted(losses, reverse=True)
    assert {"total_steps", "valid_loss", "train_mean_token_accuracy"} <= set(metrics[0].data)  # type: ignore[arg-type]

    page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more is True
    older = client.fine_tuning.jobs.list_events(job.id, limit=2, after=page.data[-1].id)
    assert older.data[0].id == events[2].id
    assert [e.id for e in page] == [e.id for e in events]  # iterating a page auto-paginates

    done = openai_api.advance_job(job.id)
    assert done["status"] == "succeeded"
    finished = client.fine_tuning.jobs.retrieve(job.id)
    assert finished.fine_tuned_model is not None
    assert re.fullmatch(
        rf"ft:{re.escape(MODEL)}:tuneloop:support-bot:[A-Za-z0-9]{{8}}", finished.fine_tuned_model
    )
    assert finished.trained_tokens and finished.trained_tokens > 0
    assert finished.hyperparameters.n_epochs == 2
    csv = client.files.content(finished.result_files[0]).read().decode()
    assert (
        csv.splitlines()[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    )
    assert len(csv.splitlines()) == 4
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in checkpoints.data] == [3, 2, 1]

    # the new model is known and usable
    assert client.models.retrieve(finished.fine_tuned_model).id == finished.fine_tuned_model
    chat = client.chat.completions.create(
        model=finished.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.model == finished.fine_tuned_model

    # continued training keeps the base model name
    again = client.fine_tuning.jobs.create(
        model=finished.fine_tuned_model, training_file=train.id, suffix="v2"
    )
    second = openai_api.finish_job(again.id)
    assert second["fine_tuned_model"].startswith(f"ft:{MODEL}:tuneloop:v2:")

    assert [j.id for j in client.fine_tuning.jobs.list()] == [again.id, job.id]
    assert [j.id for j in client.fine_tuning.jobs.list(limit=1, after=again.id)] == [job.id]


def test_fine_tuning_validation_cancel_fail_and_auto_advance(
    openai_api: OpenAIEmulator, client: OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as missing:
        client.fine_tuning.jobs.create(model=MODEL, training_file="file-missing")
    assert missing.value.param == "training_file"
    train = client.files.create(file=("train.jsonl", TRAINING_JSONL), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as bad_valid:
        client.fine_tuning.jobs.create(
            model=MODEL, training_file=train.id, validation_file="file-nope"
        )
    assert bad_valid.value.param == "validation_file"
    with pytest.raises(openai.BadRequestError) as bad_model:
        client.fine_tuning.jobs.create(model="gpt-99", training_file=train.id)
    assert bad_model.value.code == "model_not_found"

    job = client.fine_tuning.jobs.create(model=MODEL, training_file=train.id)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)

    failing = client.fine_tuning.jobs.create(model=MODEL, training_file=train.id)
    openai_api.fail_job(failing.id, code="invalid_training_file", message="bad line 3")
    failed = client.fine_tuning.jobs.retrieve(failing.id)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "invalid_training_file" and failed.error.message == "bad line 3"

    openai_api.job_auto_advance = True
    auto = client.fine_tuning.jobs.create(model=MODEL, training_file=train.id)
    statuses = [client.fine_tuning.jobs.retrieve(auto.id).status for _ in range(6)]
    assert statuses == ["queued", "running", "running", "running", "running", "succeeded"]


def test_vllm_lora_adapters(openai_api: OpenAIEmulator, client: OpenAI, tmp_path: Path) -> None:
    def post(path: str, body: dict) -> str:
        return client.post(path, body=body, cast_to=str)

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert post("/load_lora_adapter", {"lora_name": "support-v1", "lora_path": str(a)}) == (
        "Success: LoRA adapter 'support-v1' added successfully."
    )
    with pytest.raises(openai.BadRequestError) as refused:  # even the same path
        post("/load_lora_adapter", {"lora_name": "support-v1", "lora_path": str(a)})
    assert refused.value.body == {
        "message": "The lora adapter 'support-v1' has already been loaded. If you want to "
        "load the adapter in place, set 'load_inplace' to True.",
        "type": "InvalidUserInput",
        "param": None,
        "code": 400,
    }
    post(
        "/load_lora_adapter", {"lora_name": "support-v1", "lora_path": str(b), "load_inplace": True}
    )
    assert openai_api.loaded_adapters() == {"support-v1": str(b)}, "new weights, same name"
    with pytest.raises(openai.NotFoundError, match="No adapter found for /nowhere"):
        post("/load_lora_adapter", {"lora_name": "other", "lora_path": "/nowhere"})
    with pytest.raises(openai.BadRequestError, match="must be provided"):
        post("/load_lora_adapter", {"lora_name": "other"})
    chat = client.chat.completions.create(
        model="support-v1", messages=[{"role": "user", "content": "hey"}]
    )
    assert chat.choices[0].message.content == "Echo: hey"

    assert "removed" in post("/unload_lora_adapter", {"lora_name": "support-v1"})
    assert openai_api.loaded_adapters() == {}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="support-v1", messages=[{"role": "user", "content": "hey"}]
        )
    with pytest.raises(openai.NotFoundError, match="cannot be found"):
        post("/unload_lora_adapter", {"lora_name": "support-v1"})

    openai_api.lora_runtime_updating = False  # VLLM_ALLOW_RUNTIME_LORA_UPDATING unset
    with pytest.raises(openai.NotFoundError) as missing:
        post("/load_lora_adapter", {"lora_name": "support-v1", "lora_path": str(a)})
    assert missing.value.body == {"detail": "Not Found"}


def test_reset(openai_api: OpenAIEmulator, client: OpenAI) -> None:
    openai_api.script_answer("scripted")
    openai_api.fail_next()
    openai_api.add_model("extra")
    openai_api.reset()
    assert openai_api.requests() == []
    resp = OpenAI(
        api_key="sk-test", base_url=openai_api.url, max_retries=0
    ).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "fresh"}])
    assert resp.choices[0].message.content == "Echo: fresh"
    assert "extra" not in openai_api.models()
    assert openai_api.server_errors() == []
