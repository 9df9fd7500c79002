"""The ``local`` trainer backend: LoRA adapters trained on our own GPU, served by vLLM.

``start`` records a job in Redis and enqueues :func:`run_training_job` on the ``gpu``
queue by dotted path with the job id as its only argument, so the web and training
workers never import torch. The GPU worker runs the job: it reads the job record, trains
with :func:`workers.training.lora.train_adapter`, and writes progress events and the final
state back to Redis, where ``poll`` reads them. ``cancel`` sets a flag the training
callback checks every step. ``activate`` loads a finished adapter into the running vLLM
server (``POST /v1/load_lora_adapter``), after which its model id can be used as
``model`` in chat completions. With several vLLM replicas
(``training.local.serving_urls``) it is loaded into each one, in place.

Adapters live in ``training.local.adapters_dir/<model id>/`` with model ids
``<suffix>-<n>`` (e.g. ``tuneloop-3``); each holds a ``tuneloop.json`` naming its parent.
Starting from the configured base model trains a fresh adapter; starting from an
adapter's model id continues from that adapter's weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any

import openai
from pydantic import ValidationError
from redis import Redis
from redis.exceptions import RedisError, WatchError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus

from core import keys
from core.errors import TrainingError
from core.replies import text_hash, text_or_none
from core.settings import ROOT, LocalTrainerSettings, Settings, TrainingMethod
from workers.training.base import (
    RUN_METADATA_KEY,
    JobState,
    JobStatus,
    Lineage,
    ProgressEvent,
    TrainingFiles,
    lowered_learning_rate,
)

log = logging.getLogger(__name__)

JOB_FUNC = "workers.training.local.run_training_job"
"""What the GPU worker runs, by dotted path (the enqueuing side never imports torch)."""
JOB_TIMEOUT_S = 24 * 3600
RESULT_TTL_S = 7 * 24 * 3600
FAILURE_TTL_S = 30 * 24 * 3600
RECORD_TTL_S = 30 * 24 * 3600
"""Job records, events and flags expire this long after the job ended."""
METADATA_FILE = "tuneloop.json"
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SUFFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RENAMED = {"n_epochs": "epochs"}
_NOT_OVERRIDABLE = {"base_model", "adapters_dir", "serving_urls"}
SERVING_TIMEOUT_S = 120.0
"""Loading an adapter reads its weights onto the GPU: allow for a slow disk."""


def adapters_root(local: LocalTrainerSettings) -> Path:
    """The adapters directory, absolute (a relative setting is under the project root)."""
    path = Path(local.adapters_dir).expanduser()
    return path if path.is_absolute() else ROOT / path


def _is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def _event_json(event: ProgressEvent) -> str:
    return json.dumps(dataclasses.asdict(event))


def _event_from_json(raw: bytes | str) -> ProgressEvent:
    data = json.loads(raw)
    names = {f.name for f in dataclasses.fields(ProgressEvent)}
    return ProgressEvent(**{k: v for k, v in data.items() if k in names})


def _seq_of(event_id: str | None) -> int:
    """The sequence number in an event id ``<job id>:<n>`` (0 when there is none)."""
    if not event_id:
        return 0
    _, _, tail = event_id.rpartition(":")
    return int(tail) if tail.isdigit() else 0


# --- the job record, shared by the trainer and the job ----------------------------------
class _JobStore:
    """Reads and writes one job's record and events in Redis."""

    def __init__(self, redis: Redis, job_id: str) -> None:
        self.redis = redis
        self.job_id = job_id
        self.key = keys.local_job(job_id)
        self.events_key = keys.local_job_events(job_id)
        self.cancel_key = keys.local_job_cancel(job_id)

    def record(self) -> dict[str, str]:
        return text_hash(self.redis.hgetall(self.key))

    def update(self, **fields: Any) -> None:
        self.redis.hset(
            self.key, mapping={k: "" if v is None else str(v) for k, v in fields.items()}
        )

    def add_event(self, message: str, **metrics: Any) -> ProgressEvent:
        seq = self.redis.hincrby(self.key, "event_seq", 1)
        event = ProgressEvent(
            id=f"{self.job_id}:{seq}", created_at=time.time(), message=message, **metrics
        )
        self.redis.rpush(self.events_key, _event_json(event))
        return event

    def relay(self, event: ProgressEvent) -> None:
        """Store an event from the training callback under this job's numbering."""
        stored = self.add_event(
            event.message,
            **{
                f.name: getattr(event, f.name)
                for f in dataclasses.fields(ProgressEvent)
                if f.name not in ("id", "created_at", "message")
            },
        )
        fields: dict[str, Any] = {}
        if event.step is not None:
            fields["step"] = event.step
        if event.total_steps is not None:
            fields["total_steps"] = event.total_steps
        if fields:
            self.update(**fields)
        log.info("local training %s: %s", self.job_id, stored.message)

    def events_after(self, after_event: str | None) -> list[ProgressEvent]:
        after = _seq_of(after_event)
        events = [_event_from_json(raw) for raw in self.redis.lrange(self.events_key, 0, -1)]
        return [e for e in events if _seq_of(e.id) > after]

    def cancel_requested(self) -> bool:
        return bool(self.redis.exists(self.cancel_key))

    def transition(self, allowed: set[JobStatus], status: JobStatus, **fields: Any) -> bool:
        """Move to ``status`` only from one of ``allowed`` (atomic); True when it moved."""
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self.key)
                    current = text_or_none(pipe.hget(self.key, "status"))
                    if current is None or JobStatus(current) not in allowed:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    values = {"status": status.value, **fields}
                    pipe.hset(
                        self.key,
                        mapping={k: "" if v is None else str(v) for k, v in values.items()},
                    )
                    pipe.execute()
                    return True
                except WatchError:
                    continue

    def finish(self, status: JobStatus, message: str, **fields: Any) -> bool:
        moved = self.transition(
            {JobStatus.PENDING, JobStatus.RUNNING}, status, finished_at=time.time(), **fields
        )
        if moved:
            self.add_event(message)
            for key in (self.key, self.events_key, self.cancel_key):
                self.redis.expire(key, RECORD_TTL_S)
        return moved


# --- the backend ------------------------------------------------------------------------
class LocalTrainer:
    """Trainer backend ``local``: LoRA on our GPU worker, served by vLLM."""

    name = "local"

    def __init__(
        self, settings: Settings, redis: Redis, *, serving_client: openai.OpenAI | None
    ) -> None:
        self.settings = settings
        self.local = settings.training.local
        self.redis = redis
        self.serving = self._serving_clients(serving_client)
        self.min_examples = settings.training.min_examples
        self.queue = Queue(keys.QUEUE_GPU, connection=redis)

    def _serving_clients(self, default: openai.OpenAI | None) -> list[openai.OpenAI]:
        """One client per vLLM replica (``training.local.serving_urls``), else ``default``."""
        if not self.local.serving_urls:
            return [default] if default is not None else []
        key = self.settings.secrets.openai_api_key
        return [
            openai.OpenAI(api_key=key, base_url=url, timeout=SERVING_TIMEOUT_S, max_retries=1)
            for url in self.local.serving_urls
        ]

    # -- paths and names --
    @property
    def adapters_dir(self) -> Path:
        return adapters_root(self.local)

    def adapter_path(self, model_id: str) -> Path:
        """The directory of the adapter ``model_id`` (which need not exist)."""
        if not _MODEL_ID.match(model_id):
            raise TrainingError(f"{model_id!r} is not a valid adapter model id")
        return self.adapters_dir / model_id

    def _next_model_id(self, suffix: str) -> str:
        if not _SUFFIX.match(suffix):
            raise TrainingError(
                f"suffix {suffix!r} must be 1-64 letters, digits, '.', '_' or '-' "
                "(it becomes part of a directory name)"
            )
        while True:
            model_id = f"{suffix}-{self.redis.incr(keys.LOCAL_ADAPTER_SEQ)}"
            # The counter may lag the disk (a new Redis): never reuse an existing id.
            if not self.adapter_path(model_id).exists():
                return model_id

    def _parent(self, base_model: str) -> Path | None:
        """None for the configured base model, the adapter's directory for an adapter id."""
        if base_model in (self.local.base_model, self.settings.model.base_model):
            return None
        if _MODEL_ID.match(base_model) and _is_adapter_dir(self.adapter_path(base_model)):
            return self.adapter_path(base_model)
        raise TrainingError(
            f"cannot start from {base_model!r}: it is neither the configured base model "
            f"({self.local.base_model!r}) nor an adapter in {self.adapters_dir}"
        )

    def _settings_with(self, hyperparameters: dict[str, Any]) -> tuple[LocalTrainerSettings, dict]:
        """Local settings with the run's hyperparameters applied, plus the run-only extras.

        Accepts the OpenAI names (n_epochs, batch_size, learning_rate_multiplier, beta)
        as well as any ``training.local`` field; None and "auto" mean "as configured".
        """
        updates: dict[str, Any] = {}
        extras: dict[str, Any] = {"seed": self.settings.training.seed, "dpo_beta": None}
        for name, value in hyperparameters.items():
            if value is None or value == "auto":
                continue
            if name == "learning_rate_multiplier":
                updates["learning_rate"] = self.local.learning_rate * float(value)
            elif name in ("beta", "dpo_beta"):
                extras["dpo_beta"] = float(value)
            elif name == "seed":
                extras["seed"] = int(value)
            elif _RENAMED.get(name, name) in LocalTrainerSettings.model_fields and (
                name not in _NOT_OVERRIDABLE
            ):
                updates[_RENAMED.get(name, name)] = value
            else:
                raise TrainingError(f"the local trainer does not know the hyperparameter {name!r}")
        try:
            merged = LocalTrainerSettings.model_validate({**self.local.model_dump(), **updates})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise TrainingError(f"bad hyperparameter {where}: {first['msg']}") from None
        return merged, extras

    # -- the Trainer protocol --
    def hyperparameters(self, n_train_new: int, prior: Lineage) -> tuple[dict[str, Any], str]:
        """Nothing beyond ``training.local`` unless the increment is small: then the
        learning-rate multiplier of the configured learning rate (1.0) is lowered; DPO
        runs pass ``training.openai.dpo_beta`` when it is set."""
        hyper: dict[str, Any] = {}
        if self.settings.training.method is TrainingMethod.DPO:
            hyper["beta"] = self.settings.training.openai.dpo_beta
        lowered, note = lowered_learning_rate(self.settings.training, 1.0, n_train_new, prior)
        if lowered is not None:
            hyper["learning_rate_multiplier"] = lowered
        return {k: v for k, v in hyper.items() if v is not None}, note

    def find_job(self, run_id: str) -> str | None:
        """The GPU job ``run_id`` started, if it reached the gpu queue.

        A job recorded but never enqueued (the worker died in between) is ended FAILED
        here and not returned: nobody would ever train it.
        """
        job_id = text_or_none(self.redis.get(keys.local_run_job(run_id)))
        if job_id is None:
            return None
        store = _JobStore(self.redis, job_id)
        record = store.record()
        if not record:
            return None
        if JobStatus(record["status"]) is JobStatus.PENDING and self._rq_status(job_id) is None:
            store.finish(JobStatus.FAILED, "Failed: it never reached the gpu queue", error="lost")
            return None
        return job_id

    def start(
        self,
        files: TrainingFiles,
        *,
        base_model: str,
        hyperparameters: dict[str, Any],
        suffix: str,
        metadata: dict[str, str],
    ) -> str:
        """Record the job and enqueue it on the GPU queue; returns the job id."""
        if not self.local.base_model:
            raise TrainingError(
                "training.local.base_model is not set: give the local path or hub id of the "
                "open-weights model vLLM serves"
            )
        for path in (files.train_path, files.valid_path):
            if path is not None and not Path(path).is_file():
                raise TrainingError(f"training file {path} does not exist")
        parent = self._parent(base_model)
        local, extras = self._settings_with(hyperparameters)
        model_id = self._next_model_id(suffix or self.settings.training.suffix)
        job_id = f"local-{uuid.uuid4().hex[:16]}"
        store = _JobStore(self.redis, job_id)
        store.update(
            status=JobStatus.PENDING.value,
            model_id=model_id,
            out_dir=self.adapter_path(model_id),
            base_model=self.local.base_model,
            parent=parent.name if parent else "",
            parent_path=parent or "",
            set_id=files.set_id,
            method=files.method.value,
            train_path=Path(files.train_path).resolve(),
            valid_path=Path(files.valid_path).resolve() if files.valid_path else "",
            n_train=files.n_train,
            n_valid=files.n_valid,
            settings=local.model_dump_json(),
            seed=extras["seed"],
            dpo_beta="" if extras["dpo_beta"] is None else extras["dpo_beta"],
            metadata=json.dumps(metadata),
            created_at=time.time(),
        )
        run_id = metadata.get(RUN_METADATA_KEY)
        if run_id:
            self.redis.set(keys.local_run_job(run_id), job_id, ex=RECORD_TTL_S)
        start_from = f"adapter {parent.name}" if parent else f"base model {self.local.base_model}"
        store.add_event(
            f"Queued: {files.n_train} training examples ({files.method.value}) from "
            f"{start_from}, will become {model_id}"
        )
        try:
            self.queue.enqueue(
                JOB_FUNC,
                job_id,
                job_id=job_id,
                job_timeout=JOB_TIMEOUT_S,
                result_ttl=RESULT_TTL_S,
                failure_ttl=FAILURE_TTL_S,
                description=f"local LoRA training {job_id} -> {model_id}",
            )
        except RedisError as exc:
            store.finish(JobStatus.FAILED, f"Could not enqueue: {exc}", error=str(exc))
            raise TrainingError(f"could not enqueue local training job: {exc}") from exc
        log.info("enqueued local training %s -> %s (from %s)", job_id, model_id, start_from)
        return job_id

    def poll(self, job_id: str, after_event: str | None = None) -> JobState:
        """The job's state from Redis; events newer than ``after_event``, oldest first."""
        store = _JobStore(self.redis, job_id)
        record = store.record()
        if not record:
            raise TrainingError(f"unknown local training job {job_id}")
        status = JobStatus(record["status"])
        rq_status = self._rq_status(job_id)
        if not status.terminal and rq_status in (RQStatus.FAILED, RQStatus.STOPPED):
            # The worker died or was killed without the job writing its end.
            error = f"the GPU worker's job ended as {rq_status.value} without reporting"
            store.finish(JobStatus.FAILED, f"Failed: {error}", error=error)
            record = store.record()
            status = JobStatus(record["status"])
        trained = record.get("trained_tokens")
        return JobState(
            job_id=job_id,
            status=status,
            result_model=record.get("result_model") or None,
            error=record.get("error") or None,
            events=store.events_after(after_event),
            trained_tokens=int(trained) if trained else None,
            details={
                "model_id": record.get("model_id"),
                "parent": record.get("parent") or None,
                "base_model": record.get("base_model"),
                "out_dir": record.get("out_dir"),
                "step": int(record["step"]) if record.get("step") else None,
                "total_steps": int(record["total_steps"]) if record.get("total_steps") else None,
                "rq_status": rq_status.value if rq_status else None,
            },
        )

    def cancel(self, job_id: str) -> None:
        """Ask the job to stop: a queued job is cancelled at once, a running one at its next step."""
        store = _JobStore(self.redis, job_id)
        record = store.record()
        if not record:
            raise TrainingError(f"unknown local training job {job_id}")
        if JobStatus(record["status"]).terminal:
            return
        self.redis.set(store.cancel_key, "1", ex=RECORD_TTL_S)
        if self._rq_status(job_id) in (
            RQStatus.QUEUED,
            RQStatus.DEFERRED,
            RQStatus.SCHEDULED,
            None,
        ):
            moved = store.transition(
                {JobStatus.PENDING},
                JobStatus.CANCELLED,
                finished_at=time.time(),
            )
            if moved:
                store.add_event("Cancelled before it started")
                try:
                    Job.fetch(job_id, connection=self.redis).cancel()
                except Exception:  # the worker took it meanwhile: it will see the flag
                    log.info(
                        "local training %s left the queue before it could be cancelled", job_id
                    )
        log.info("cancellation asked for local training %s", job_id)

    def activate(self, model_id: str) -> None:
        """Load the adapter into every vLLM replica, in place, so each serves these weights.

        ``load_inplace`` makes a replica that already has an adapter of that name (an
        older file, or a name reused after the adapters were wiped) load the files again
        instead of keeping stale weights; a vLLM too old to know it refuses the name with
        "already been loaded", and then the adapter is unloaded and loaded again. Every
        replica is tried; if any failed a TrainingError names them all and the caller does
        not move the bot's model (the replicas that did load it simply hold one more
        adapter, unused until a later activation succeeds everywhere).
        """
        path = self.adapter_path(model_id)
        if not _is_adapter_dir(path):
            raise TrainingError(f"no adapter {model_id} in {self.adapters_dir}")
        if not self.serving:
            raise TrainingError(
                "activating a local adapter needs the vLLM server: set OPENAI_BASE_URL to its "
                "/v1 URL, or training.local.serving_urls to every replica's"
            )
        failures = []
        for client in self.serving:
            try:
                _load_adapter(client, model_id, path)
            except TrainingError as exc:
                failures.append(str(exc))
        if failures:
            raise TrainingError(
                f"vLLM did not load adapter {model_id} on {len(failures)} of "
                f"{len(self.serving)} replicas: " + "; ".join(failures)
            )
        log.info(
            "loaded adapter %s from %s into %d vLLM replicas", model_id, path, len(self.serving)
        )

    def _rq_status(self, job_id: str) -> RQStatus | None:
        try:
            return Job.fetch(job_id, connection=self.redis).get_status()
        except NoSuchJobError:
            return None


def _load_adapter(client: openai.OpenAI, model_id: str, path: Path) -> None:
    """POST /v1/load_lora_adapter on one replica (in place); TrainingError if refused."""
    where = str(client.base_url).rstrip("/")
    body = {"lora_name": model_id, "lora_path": str(path), "load_inplace": True}
    try:
        try:
            client.post("/load_lora_adapter", body=body, cast_to=str)
        except openai.BadRequestError as exc:
            if "already been loaded" not in str(exc):
                raise
            # A vLLM without load_inplace: take the old weights out, then load these.
            client.post("/unload_lora_adapter", body={"lora_name": model_id}, cast_to=str)
            client.post("/load_lora_adapter", body=body, cast_to=str)
    except openai.APIStatusError as exc:
        hint = ""
        if exc.status_code in (404, 405) and "No adapter found" not in str(exc):
            hint = (
                " (is vLLM started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?)"
            )
        raise TrainingError(f"{where}: {exc}{hint}") from exc
    except openai.APIError as exc:
        raise TrainingError(f"{where}: {exc}") from exc


# --- the job the GPU worker runs ----------------------------------------------------------
def _connection() -> Redis:
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        raise TrainingError("run_training_job must run inside an RQ worker")
    return job.connection


def run_training_job(job_id: str) -> str:
    """Train the adapter of local job ``job_id`` (RQ entry point on the ``gpu`` queue).

    Progress and the final state go to Redis. Returns the new model id; a cancelled job
    returns "" (it did not fail); a failure is recorded, logged and re-raised so the job
    also lands in RQ's failed registry.
    """
    redis = _connection()
    store = _JobStore(redis, job_id)
    record = store.record()
    if not record:
        raise TrainingError(f"unknown local training job {job_id}")
    if store.cancel_requested():
        store.finish(JobStatus.CANCELLED, "Cancelled before it started")
        return ""
    if not store.transition({JobStatus.PENDING}, JobStatus.RUNNING, started_at=time.time()):
        log.warning("local training %s is %s, not pending: not run", job_id, record["status"])
        return record.get("result_model", "")

    model_id = record["model_id"]
    try:
        from workers.training.lora import TrainingCancelled, train_adapter

        store.add_event(f"Started on the GPU worker, training {model_id}")
        result = train_adapter(
            base_model=record["base_model"],
            parent_adapter=Path(record["parent_path"]) if record.get("parent_path") else None,
            train_path=Path(record["train_path"]),
            valid_path=Path(record["valid_path"]) if record.get("valid_path") else None,
            out_dir=Path(record["out_dir"]),
            settings=LocalTrainerSettings.model_validate_json(record["settings"]),
            method=TrainingMethod(record["method"]),
            on_progress=store.relay,
            should_cancel=store.cancel_requested,
            training_set_id=record.get("set_id") or None,
            seed=int(record.get("seed") or 42),
            dpo_beta=float(record["dpo_beta"]) if record.get("dpo_beta") else None,
        )
    except TrainingCancelled as exc:
        store.finish(JobStatus.CANCELLED, f"Cancelled: {exc}; no adapter was registered")
        log.info("local training %s cancelled: %s", job_id, exc)
        return ""
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        try:
            store.finish(JobStatus.FAILED, f"Failed: {error}", error=error)
        except RedisError:
            log.exception("could not record the failure of local training %s", job_id)
        log.exception("local training %s failed", job_id)
        raise
    loss = f", final train loss {result.train_loss:.4f}" if result.train_loss is not None else ""
    store.finish(
        JobStatus.SUCCEEDED,
        f"Succeeded: adapter {result.model_id} after {result.steps} steps{loss}",
        result_model=result.model_id,
        trained_tokens=result.tokens,
        step=result.steps,
        total_steps=result.total_steps,
    )
    return result.model_id
