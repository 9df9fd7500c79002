"""Deleting a forgotten user's training data outside Redis: the training-set files built
from the approved log and the copies uploaded to the fine-tuning provider.

``core.forget`` says from which approved-log position on a run's set may have held the
user's examples (a set reads the new examples and replays older ones, so every set built
since then may). For each such run this deletes the files it uploaded (OpenAI Files API,
``files.delete``) and the set's files on this machine, and lists what cannot be deleted:
the models trained on them, which cannot unlearn an example.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import openai

from core import keys
from core.approved import position
from core.replies import members
from core.run_control import LoopContext
from core.runs import Run, load_run
from workers import trainset

logger = logging.getLogger(__name__)

OPENAI_BACKEND = "openai"


@dataclass
class TrainingData:
    """What happened to the training data of the runs that may have used the user's data."""

    deleted_files: list[str] = field(default_factory=list)
    """Provider file ids deleted (or already gone)."""
    undeleted_files: list[str] = field(default_factory=list)
    """Provider file ids (or jobs) that could not be deleted, with the reason."""
    deleted_sets: list[str] = field(default_factory=list)
    """Training sets whose files were deleted here."""
    sets_elsewhere: list[str] = field(default_factory=list)
    """Set files not on this machine (on the training worker's disk)."""
    models: list[str] = field(default_factory=list)
    """Models trained on those sets: they keep what they learned."""


def runs_since(ctx: LoopContext, since: str) -> list[Run]:
    """Runs whose set was built after the approved-log id ``since`` existed."""
    runs = []
    for run_id in members(ctx.redis.zrange(keys.RUNS, 0, -1)):
        run = load_run(ctx.redis, run_id)
        if run is not None and run.cursor_to and position(run.cursor_to) >= position(since):
            runs.append(run)
    return runs


def delete_training_data(ctx: LoopContext, since: str | None) -> TrainingData:
    """Delete the provider's and this machine's copies of every set built since ``since``."""
    out = TrainingData()
    if since is None:
        return out
    runs = runs_since(ctx, since)
    produced = {info.get("run_id"): info.get("model") for info in _models(ctx)}
    for run in runs:
        if run.job_id and run.backend == OPENAI_BACKEND:
            _delete_uploads(ctx, run, out)
        if run.set_id:
            _delete_set_files(ctx, run.set_id, out)
        model = produced.get(run.run_id) or run.candidate_model
        if model and model not in out.models:
            out.models.append(model)
    return out


def _models(ctx: LoopContext) -> list[dict]:
    return [json.loads(v) for v in ctx.redis.hvals(keys.MODELS)]


def _delete_uploads(ctx: LoopContext, run: Run, out: TrainingData) -> None:
    client = ctx.llm
    if client is None:
        out.undeleted_files.append(f"{run.job_id}: no client for the provider")
        return
    try:
        job = client.fine_tuning.jobs.retrieve(run.job_id)
    except openai.OpenAIError as exc:
        out.undeleted_files.append(f"files of {run.job_id}: {exc}")
        logger.warning("cannot read job %s to delete its files: %s", run.job_id, exc)
        return
    for file_id in (job.training_file, job.validation_file):
        if not file_id or file_id in out.deleted_files:
            continue
        try:
            client.files.delete(file_id)
        except openai.NotFoundError:
            logger.info("file %s of %s was already deleted", file_id, run.job_id)
        except openai.OpenAIError as exc:
            out.undeleted_files.append(f"{file_id}: {exc}")
            logger.warning("cannot delete file %s of %s: %s", file_id, run.job_id, exc)
            continue
        out.deleted_files.append(file_id)


def _delete_set_files(ctx: LoopContext, set_id: str, out: TrainingData) -> None:
    manifest = trainset.load_manifest(ctx.redis, set_id)
    if manifest is None:
        return
    paths = [Path(p) for p in manifest["files"].values() if p]
    if paths:
        paths.append(paths[0].parent / "manifest.json")
    present = [p for p in paths if p.is_file()]
    if not present:
        if any(not p.parent.exists() for p in paths):
            out.sets_elsewhere.append(f"{set_id} ({paths[0].parent})")
        return
    for path in present:
        path.unlink(missing_ok=True)
    out.deleted_sets.append(set_id)
