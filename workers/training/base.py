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

from core.settings import TrainingMethod


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


class Trainer(Protocol):
    """A fine-tuning backend."""

    name: str
    min_examples: int

    def start(
        self,
        files: TrainingFiles,
        *,
        base_model: str,
        hyperparameters: dict[str, Any],
        suffix: str,
        metadata: dict[str, str],
    ) -> str:
        """Upload what is needed and start a job continuing from ``base_model``; its id."""
        ...

    def poll(self, job_id: str, after_event: str | None = None) -> JobState:
        """The job's status, result and events newer than ``after_event`` (oldest first)."""
        ...

    def cancel(self, job_id: str) -> None:
        """Ask the job to stop; it ends CANCELLED and registers nothing."""
        ...

    def activate(self, model_id: str) -> None:
        """Make a trained model servable before the current-model pointer moves to it."""
        ...
