"""The trainer interface: what the learning loop needs from any fine-tuning backend.

The loop prepares files, asks a backend to start from a given model, follows it by
polling (short RQ jobs, never one worker blocked for the whole run), may cancel it,
and finally makes the resulting model servable. Backends know nothing of Slack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from core.errors import TrainingError
from core.settings import TrainingMethod, TrainingSettings

RUN_METADATA_KEY = "tuneloop_run"
"""The job metadata naming the training run that started it (see :meth:`Trainer.find_job`)."""
SET_METADATA_KEY = "tuneloop_set"
"""The job metadata naming the training set it trains on."""


class StartUnconfirmed(TrainingError):
    """:meth:`Trainer.start` got no answer to creating the job (a timeout, a dropped
    connection): the job may exist and train. The run is not failed on it; the next check
    adopts the job (:meth:`Trainer.find_job`) or, when there is none, fails the run."""


class JobStatus(str, Enum):
    """A training job's state, the same words for every backend."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the job will not change any more."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class TrainingFiles:
    """A built training set on disk, ready for a backend."""

    set_id: str
    method: TrainingMethod
    train_path: Path
    valid_path: Path | None
    n_train: int
    n_valid: int


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report; metrics are None when the backend did not give them."""

    id: str
    created_at: float
    message: str
    step: int | None = None
    total_steps: int | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    token_accuracy: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class JobState:
    """Where a job stands; ``events`` are the ones newer than the ``after`` asked for."""

    job_id: str
    status: JobStatus
    result_model: str | None = None
    error: str | None = None
    events: list[ProgressEvent] = field(default_factory=list)
    trained_tokens: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Lineage:
    """What the model a run continues from was trained with (empty for a base model)."""

    trained_examples: int = 0
    hyperparameters: dict[str, Any] = field(default_factory=dict)


def lowered_learning_rate(
    training: TrainingSettings, base_lr: float | None, n_train_new: int, prior: Lineage
) -> tuple[float | None, str]:
    """The learning-rate multiplier for a small increment, and why; (None, "") otherwise.

    OpenAI advises a smaller learning-rate multiplier when continuing on a small
    increment: when the new examples are fewer than ``small_increment_ratio`` of those the
    current model was trained on, ``base_lr`` is divided by ``lr_reduction_factor``. Every
    backend decides its own ``base_lr``; the rule is the same for all.
    """
    prior_n = prior.trained_examples
    if not prior_n or n_train_new >= training.small_increment_ratio * prior_n:
        return None, ""
    if base_lr is None:
        return None, (
            f"{n_train_new} new examples next to {prior_n} already trained, but no "
            "learning-rate multiplier is known to reduce: the provider chooses"
        )
    reduced = round(base_lr / training.lr_reduction_factor, 6)
    return reduced, (
        f"{n_train_new} new examples next to {prior_n} already trained: learning-rate "
        f"multiplier {base_lr:g} / {training.lr_reduction_factor:g} = {reduced:g}"
    )


class Trainer(Protocol):
    """A fine-tuning backend: everything the learning loop calls, and nothing more."""

    name: str
    min_examples: int

    def hyperparameters(self, n_train_new: int, prior: Lineage) -> tuple[dict[str, Any], str]:
        """The job's hyper-parameters (names :meth:`start` accepts) and a note saying why
        the learning rate was lowered ("" when it was not); None values are left out."""
        ...

    def start(
        self,
        files: TrainingFiles,
        *,
        base_model: str,
        hyperparameters: dict[str, Any],
        suffix: str,
        metadata: dict[str, str],
    ) -> str:
        """Upload what is needed and start a job continuing from ``base_model``; its id.

        Raises StartUnconfirmed when the job may have been created anyway, TrainingError
        when it surely was not."""
        ...

    def find_job(self, run_id: str) -> str | None:
        """The job :meth:`start` created for ``run_id`` (from ``metadata[RUN_METADATA_KEY]``),
        None when there is none: lets a run whose worker died adopt the job instead of
        starting (and paying for) another one, or being marked failed while it trains."""
        ...

    def poll(self, job_id: str, after_event: str | None = None) -> JobState:
        """The job's status, result and events newer than ``after_event`` (oldest first)."""
        ...

    def cancel(self, job_id: str) -> None:
        """Ask the job to stop; it ends CANCELLED and registers nothing."""
        ...

    def activate(self, model_id: str) -> None:
        """Make a trained model servable before the current-model pointer moves to it
        (everywhere it is served); raises TrainingError when it could not, so the
        pointer stays where it is."""
        ...
