"""The ``openai`` trainer backend: OpenAI's fine-tuning API (or a compatible server).

``start`` uploads the files (``purpose="fine-tune"``) and creates a job continuing from
the given model, with hyper-parameters passed through ``method`` (the top-level
``hyperparameters`` argument is deprecated). ``poll`` reads the job and the events
newer than the last one seen; the API lists events newest first with cursor paging, so
we page from the top until we reach the known event. Nothing here blocks: the learning
loop polls with short RQ jobs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import openai
from openai import OpenAI

from core.errors import TrainingError
from core.examples import MIN_EXAMPLES
from workers.training.base import JobState, JobStatus, ProgressEvent, TrainingFiles

logger = logging.getLogger(__name__)

EVENT_PAGE = 100
MAX_EVENT_PAGES = 50
_STATUS = {
    "validating_files": JobStatus.PENDING,
    "queued": JobStatus.PENDING,
    "running": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}
RUN_METADATA_KEY = "tuneloop_run"
"""Job metadata naming the training run: lets a restarted run find a job it created."""


def _event(raw: Any) -> ProgressEvent:
    data = raw.data if isinstance(getattr(raw, "data", None), dict) else {}

    def number(*names: str) -> float | None:
        for name in names:
            value = data.get(name)
            if isinstance(value, int | float):
                return float(value)
        return None

    step = number("step")
    total = number("total_steps")
    return ProgressEvent(
        id=raw.id,
        created_at=float(raw.created_at),
        message=raw.message,
        step=int(step) if step is not None else None,
        total_steps=int(total) if total is not None else None,
        train_loss=number("train_loss"),
        valid_loss=number("valid_loss", "full_valid_loss"),
        token_accuracy=number(
            "valid_mean_token_accuracy",
            "full_valid_mean_token_accuracy",
            "train_mean_token_accuracy",
        ),
    )


class OpenAITrainer:
    """Fine-tuning through the OpenAI API; one per job, built from the settings."""

    name = "openai"
    min_examples = MIN_EXAMPLES

    def __init__(self, client: OpenAI, *, seed: int | None = None) -> None:
        self.client = client
        self.seed = seed

    def _upload(self, path: Path) -> str:
        with Path(path).open("rb") as f:
            return self.client.files.create(file=(Path(path).name, f), purpose="fine-tune").id

    def start(
        self,
        files: TrainingFiles,
        *,
        base_model: str,
        hyperparameters: dict[str, Any],
        suffix: str,
        metadata: dict[str, str],
    ) -> str:
        """Upload the set's files and create the job; raises TrainingError on any refusal.

        Files uploaded before a refusal are deleted again (best effort) so a failed
        start leaves nothing behind to pay for.
        """
        uploaded: list[str] = []
        try:
            train_id = self._upload(files.train_path)
            uploaded.append(train_id)
            valid_id = None
            if files.valid_path is not None and files.n_valid:
                valid_id = self._upload(files.valid_path)
                uploaded.append(valid_id)
            method_type = files.method.value
            hyper = {k: v for k, v in hyperparameters.items() if v is not None}
            kwargs: dict[str, Any] = {
                "model": base_model,
                "training_file": train_id,
                "suffix": suffix[:64],
                "metadata": {k: str(v)[:512] for k, v in list(metadata.items())[:16]},
                "method": {"type": method_type, method_type: {"hyperparameters": hyper}},
            }
            if valid_id:
                kwargs["validation_file"] = valid_id
            if self.seed is not None:
                kwargs["seed"] = self.seed
            job = self.client.fine_tuning.jobs.create(**kwargs)
        except openai.OpenAIError as exc:
            for file_id in uploaded:
                try:
                    self.client.files.delete(file_id)
                except openai.OpenAIError:
                    logger.warning("could not delete uploaded file %s", file_id)
            raise TrainingError(f"OpenAI refused to start fine-tuning: {exc}") from exc
        logger.info("created fine-tuning job %s from %s (%s)", job.id, base_model, files.set_id)
        return job.id

    def find_job(self, run_id: str) -> str | None:
        """The job a training run created, found by its metadata (after a worker died)."""
        try:
            page = self.client.fine_tuning.jobs.list(metadata={RUN_METADATA_KEY: run_id}, limit=10)
        except openai.OpenAIError as exc:
            raise TrainingError(f"could not list fine-tuning jobs: {exc}") from exc
        for job in page.data:
            if (job.metadata or {}).get(RUN_METADATA_KEY) == run_id:
                return job.id
        return None

    def _events_after(self, job_id: str, after_event: str | None) -> list[ProgressEvent]:
        newest_first: list[Any] = []
        cursor: str | None = None
        for _ in range(MAX_EVENT_PAGES):
            kwargs: dict[str, Any] = {"limit": EVENT_PAGE}
            if cursor:
                kwargs["after"] = cursor
            page = self.client.fine_tuning.jobs.list_events(job_id, **kwargs)
            done = False
            for event in page.data:
                if event.id == after_event:
                    done = True
                    break
                newest_first.append(event)
            if done or not page.has_more or not page.data:
                break
            cursor = page.data[-1].id
        return [_event(e) for e in reversed(newest_first)]

    def poll(self, job_id: str, after_event: str | None = None) -> JobState:
        """The job's state and its events newer than ``after_event``, oldest first."""
        try:
            job = self.client.fine_tuning.jobs.retrieve(job_id)
            events = self._events_after(job_id, after_event)
        except openai.OpenAIError as exc:
            raise TrainingError(f"could not read fine-tuning job {job_id}: {exc}") from exc
        status = _STATUS.get(job.status, JobStatus.PENDING)
        error = None
        if job.error is not None and (job.error.message or job.error.code):
            error = f"{job.error.code or 'error'}: {job.error.message or ''}".strip()
        hyper = job.hyperparameters.model_dump() if job.hyperparameters is not None else {}
        return JobState(
            job_id=job.id,
            status=status,
            result_model=job.fine_tuned_model,
            error=error,
            events=events,
            trained_tokens=job.trained_tokens,
            details={
                "provider_status": job.status,
                "model": job.model,
                "hyperparameters": hyper,
                "result_files": list(job.result_files or []),
            },
        )

    def cancel(self, job_id: str) -> None:
        """Ask OpenAI to stop the job; a job that already ended is left as it is."""
        try:
            self.client.fine_tuning.jobs.cancel(job_id)
        except openai.BadRequestError as exc:
            logger.info("job %s not cancelled: %s", job_id, exc)
        except openai.OpenAIError as exc:
            raise TrainingError(f"could not cancel fine-tuning job {job_id}: {exc}") from exc

    def activate(self, model_id: str) -> None:
        """A fine-tuned model is served as soon as it exists: check that it does."""
        try:
            self.client.models.retrieve(model_id)
        except openai.NotFoundError as exc:
            raise TrainingError(f"model {model_id} does not exist or is not accessible") from exc
        except openai.OpenAIError as exc:
            raise TrainingError(f"could not check model {model_id}: {exc}") from exc
