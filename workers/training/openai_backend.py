"""The ``openai`` trainer backend: OpenAI's fine-tuning API (or a compatible server).

``start`` uploads the files (``purpose="fine-tune"``) and creates a job continuing from
the given model, with hyper-parameters passed through ``method`` (the top-level
``hyperparameters`` argument is deprecated). ``poll`` reads the job and the events
newer than the last one seen; the API lists events newest first with cursor paging, so
we page from the top until we reach the known event. Nothing here blocks: the learning
loop polls with short RQ jobs.

The hyper-parameters a job ran with are read where the API puts them for its method:
``method.<type>.hyperparameters`` (the top-level ``hyperparameters`` field is only
returned for supervised jobs; DPO jobs carry theirs, ``beta`` included, under
``method.dpo``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import openai
from openai import OpenAI

from core.errors import TrainingError
from core.examples import MIN_EXAMPLES
from core.settings import TrainingMethod, TrainingSettings
from workers.training.base import (
    RUN_METADATA_KEY,
    JobState,
    JobStatus,
    Lineage,
    ProgressEvent,
    StartUnconfirmed,
    TrainingFiles,
    lowered_learning_rate,
)

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
__all__ = ["RUN_METADATA_KEY", "OpenAITrainer"]


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


def _hyperparameters(job: Any) -> dict[str, Any]:
    """What the job ran with, from ``method.<type>.hyperparameters`` (the deprecated
    top-level field only for supervised jobs that have no method block)."""
    method = getattr(job, "method", None)
    config = getattr(method, method.type, None) if method is not None else None
    hyper = getattr(config, "hyperparameters", None) if config is not None else None
    if hyper is None and (method is None or method.type == "supervised"):
        hyper = job.hyperparameters
    return hyper.model_dump(exclude_none=True) if hyper is not None else {}


class OpenAITrainer:
    """Fine-tuning through the OpenAI API; one per job, built from the settings."""

    name = "openai"
    min_examples = MIN_EXAMPLES

    def __init__(
        self,
        client: OpenAI,
        *,
        seed: int | None = None,
        training: TrainingSettings | None = None,
    ) -> None:
        self.client = client
        self.seed = seed
        self.training = training or TrainingSettings()

    def hyperparameters(self, n_train_new: int, prior: Lineage) -> tuple[dict[str, Any], str]:
        """``training.openai`` as configured (None: the provider chooses); on a small
        increment the learning-rate multiplier (configured, else the one the current model
        was trained with) is lowered."""
        configured = self.training.openai
        hyper: dict[str, Any] = {
            "n_epochs": configured.n_epochs,
            "batch_size": configured.batch_size,
            "learning_rate_multiplier": configured.learning_rate_multiplier,
        }
        if self.training.method is TrainingMethod.DPO:
            hyper["beta"] = configured.dpo_beta
        base_lr = configured.learning_rate_multiplier
        if base_lr is None:
            used = prior.hyperparameters.get("learning_rate_multiplier")
            base_lr = float(used) if isinstance(used, int | float) else None
        lowered, note = lowered_learning_rate(self.training, base_lr, n_train_new, prior)
        if lowered is not None:
            hyper["learning_rate_multiplier"] = lowered
        return {k: v for k, v in hyper.items() if v is not None}, note

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
        start leaves nothing behind to pay for; when creating the job got no answer they
        are kept (the job may exist and need them) and StartUnconfirmed is raised.
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
            try:
                job = self.client.fine_tuning.jobs.create(**kwargs)
            except openai.APIConnectionError as exc:
                # No answer (timeouts included): OpenAI may have created the job, which
                # needs the files; it is found again by its metadata.
                raise StartUnconfirmed(
                    f"no answer from OpenAI to creating the job, which may exist: {exc}"
                ) from exc
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
                "hyperparameters": _hyperparameters(job),
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
