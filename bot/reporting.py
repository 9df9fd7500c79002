"""Telling Slack how a training run goes: the web process posts the run events.

The training loop's jobs never run this code: they append what happened to a run to the
``keys.RUN_EVENTS`` stream (:mod:`core.run_events`), and every web process consumes it
on its periodic chore (:func:`post_run_events_soon`, on a thread of its own; one
consumer group). Each entry
becomes messages in the thread the run started in the admin's channel: the job's start,
rate-limited progress, the evaluation verdict (with "promote anyway" when the model was
held) and, as an entry of its own, the loss-curve PNG. Dry runs and the answers to one
admin's command are ephemeral, to that admin only. A training set the export job stored
(:mod:`core.exports`) is uploaded to the admin's DM and its stored copy deleted.

An entry is acknowledged only after it was posted. One that failed (Slack down, an
upload that raised anything at all) stays pending and is claimed again after
``RETRY_IDLE_S`` by whichever web process looks next, also when the process that took it
died, up to ``MAX_DELIVERIES`` times; since the verdict and the loss curve are separate
entries, a broken upload never holds back the verdict or its button.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import threading
from typing import Any

from redis import Redis
from redis.exceptions import RedisError, ResponseError
from redis.typing import StreamIdT

from bot import blocks, learning, messages
from bot.runtime import Services
from core import canary, exports, keys, run_control, runs
from core.replies import Entry, entries, group_entries, pending
from core.run_events import RunEvent
from core.runs import Run, RunStatus
from workers import evaluation, trainset

logger = logging.getLogger(__name__)

RETRY_IDLE_S = 30.0
"""An entry taken but not acknowledged this long ago (its post failed, or its web process
died while posting) is taken again."""
MAX_DELIVERIES = 8
"""After this many failed posts an entry is given up (logged, acknowledged)."""
BATCH = 50
CONSUMER = f"{socket.gethostname()}:{os.getpid()}"
_consuming = threading.Lock()
_starting = threading.Lock()
_poster: threading.Thread | None = None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _money(value: float | None) -> str:
    return "" if value is None else f" (about ${value:,.2f})"


def counts_text(manifest: dict[str, Any]) -> str:
    """A set's counts in one line."""
    counts = manifest["counts"]
    return messages.RUN_COUNTS.format(
        set_id=manifest["set_id"],
        train=counts["train"],
        new=counts["train_new"],
        replay=counts["replay"],
        valid=counts["valid"],
        exact=counts["exact_duplicates"],
        near=counts["near_duplicates"],
        invalid=counts["invalid"],
    )


def tokens_text(manifest: dict[str, Any]) -> str:
    """A set's token statistics and estimated cost in one line."""
    tokens, estimate = manifest["tokens"], manifest["estimate"]
    if not tokens.get("examples"):
        return ""
    estimated = tokens.get("estimated_examples") or 0
    return messages.RUN_TOKENS.format(
        total=tokens["total"],
        mean=tokens["mean"],
        p90=tokens["p90"],
        max=tokens["max"],
        estimated=f" ({estimated:,} estimated from a sample)" if estimated else "",
        billed=estimate["billed_tokens"],
        epochs=estimate["epochs"],
        cost=_money(estimate.get("cost_usd")),
    )


def dry_run_text(manifest: dict[str, Any]) -> str:
    """What ``--dry-run`` reports."""
    issues = ", ".join(f"{n} {k}" for k, n in sorted(manifest["issues"].items()))
    pii = ", ".join(f"{n} {k}" for k, n in sorted(manifest["pii_scrubbed"].items()))
    return messages.RUN_DRY.format(
        counts=counts_text(manifest),
        tokens=tokens_text(manifest),
        issues=messages.RUN_ISSUES.format(issues=issues) if issues else "",
        pii=messages.RUN_PII.format(pii=pii) if pii else "",
    )


def progress_text(run: Run) -> str:
    """The run's last event: metrics when it has them, its message otherwise."""
    event = run.event
    if event is None:
        return ""
    if event.step is not None and (event.train_loss is not None or event.valid_loss is not None):
        return messages.RUN_PROGRESS.format(
            step=event.step,
            total_steps=event.total_steps or "?",
            train_loss=_fmt(event.train_loss),
            valid_loss=_fmt(event.valid_loss),
            accuracy=_fmt(event.token_accuracy, 3),
        )
    return messages.RUN_EVENT.format(message=event.message)


def evaluation_text(run: Run) -> str:
    """The gate's verdict with the scores behind it."""
    report = run.report
    if report is None:
        return messages.RUN_EVAL_FAILED.format(model=run.candidate_model, error=run.error or "?")
    values = {
        "model": run.candidate_model,
        "cand": f"{report.candidate.score:.3f}",
        "cur": f"{report.current.score:.3f}",
        "current": report.current.model,
        "scorer": report.scorer,
        "items": report.items,
        "tolerance": report.tolerance,
    }
    sign = sign_text(report)
    if run.status is RunStatus.PROMOTED:
        return messages.RUN_PROMOTED.format(**values) + "\n" + sign
    text = messages.RUN_HELD.format(**values) + "\n" + sign
    worse = [
        messages.RUN_WORSE_EXAMPLE.format(**{k: str(v)[:150] for k, v in example.items()})
        for example in report.examples[:3]
    ]
    return "\n".join([text, *worse])


def sign_text(report: evaluation.EvalReport) -> str:
    """Per-question wins, losses and ties of the candidate, with the sign test's p-value."""
    return messages.EVAL_SIGN.format(
        wins=report.wins, losses=report.losses, ties=report.ties, p=report.sign_p
    )


def loss_curve_png(points: list[dict[str, Any]], title: str) -> bytes | None:
    """Train and validation loss against step, as a PNG (None without any point)."""
    steps = [p for p in points if p.get("step") is not None]
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.subplots()
    for key, label in (("train_loss", "training loss"), ("valid_loss", "validation loss")):
        xy = [(p["step"], p[key]) for p in steps if p.get(key) is not None]
        if xy:
            axes.plot([x for x, _ in xy], [y for _, y in xy], marker="o", markersize=3, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


# --- posting ----------------------------------------------------------------------------------
def _post(services: Services, run: Run, text: str, block_list: list[dict] | None = None) -> None:
    """Into the run's thread (or its channel when the thread could not be started)."""
    services.slack.chat_postMessage(
        channel=run.channel,
        thread_ts=run.thread_ts or None,
        text=text,
        blocks=block_list or blocks.text_blocks(text),
    )


def _ephemeral(services: Services, channel: str, user: str, text: str) -> None:
    """To one admin only, in the channel they used the command in."""
    services.slack.chat_postEphemeral(
        channel=channel, user=user, text=text, blocks=blocks.text_blocks(text)
    )


def _upload_loss_curve(services: Services, run: Run) -> None:
    """The run's loss curve into its thread (nothing without metric points); raises."""
    points = runs.run_metrics(services.redis, run.run_id)
    title = messages.RUN_LOSS_TITLE.format(run_id=run.run_id)
    png = loss_curve_png(points, title)
    if png is None:
        return
    services.slack.files_upload_v2(
        channel=run.channel,
        thread_ts=run.thread_ts or None,
        content=png,
        filename=f"{run.run_id}-loss.png",
        title=title,
        alt_txt=title,
        request_file_info=False,
    )


def _started_text(services: Services, run: Run) -> str:
    manifest = trainset.load_manifest(services.redis, run.set_id) or {}
    hyper = json.loads(run.hyperparameters) if run.hyperparameters else {}
    counts = counts_text(manifest) if manifest else ""
    tokens = tokens_text(manifest) if manifest else ""
    return messages.RUN_STARTED.format(
        job_id=run.job_id,
        backend=run.backend,
        base=run.base_model,
        counts="\n".join(t for t in (counts, tokens) if t),
        hyper=", ".join(f"{k}={v}" for k, v in hyper.items()) or "chosen by the provider",
        lr_note=f"\n_{run.lr_note}_" if run.lr_note else "",
    )


def post_report(services: Services, run: Run, kind: RunEvent) -> None:
    """Turn one event of a run into Slack messages; raises when Slack refused."""
    if kind is RunEvent.DRY_RUN or (kind is RunEvent.TOO_FEW and run.dry_run):
        manifest = trainset.load_manifest(services.redis, run.set_id) if run.set_id else None
        if kind is RunEvent.TOO_FEW:
            text = _too_few_text(run)
            if manifest:
                text += "\n" + dry_run_text(manifest)
        else:
            text = dry_run_text(manifest) if manifest else _too_few_text(run)
        _ephemeral(services, run.channel, run.admin, text)
        return
    if kind is RunEvent.TOO_FEW:
        _post(services, run, _too_few_text(run))
    elif kind is RunEvent.STARTED:
        _post(services, run, _started_text(services, run))
    elif kind is RunEvent.PROGRESS:
        text = progress_text(run)
        if text:
            _post(services, run, text)
    elif kind is RunEvent.TRAINED:
        current = run_control.LoopContext(services.settings, services.redis).current_model()
        text = messages.RUN_TRAINED.format(model=run.candidate_model, current=current)
        _post(services, run, text + "\n" + learning.training_cost_line(services.redis, run))
    elif kind is RunEvent.EVALUATED:
        text = evaluation_text(run)
        if run.status is RunStatus.HELD:
            _post(
                services,
                run,
                text,
                blocks.held_report_blocks(text, run.candidate_model, run.run_id),
            )
        else:
            _post(services, run, text)
    elif kind is RunEvent.CANARY:
        report = run.report
        text = learning.canary_started_text(run, services.settings)
        _post(services, run, text + ("\n" + sign_text(report) if report else ""))
    elif kind is RunEvent.CANARY_DECIDED:
        decided = [h for h in canary.history(services.redis, 20) if h.get("run_id") == run.run_id]
        if decided:
            _post(services, run, learning.canary_decided_text(decided[0]))
    elif kind is RunEvent.LOSS_CURVE:
        _upload_loss_curve(services, run)
    elif kind is RunEvent.FAILED:
        _post(services, run, messages.RUN_FAILED.format(run_id=run.run_id, error=run.error or "?"))
    elif kind is RunEvent.CANCELLED:
        by = f" by <@{run.cancelled_by}>" if run.cancelled_by else ""
        _post(services, run, messages.RUN_CANCELLED.format(run_id=run.run_id, by=by))
    else:
        logger.warning("no report for %s of %s", kind.value, run.run_id)


def _too_few_text(run: Run) -> str:
    needed = run.n_new + run.missing
    return messages.RUN_TOO_FEW.format(new=run.n_new, needed=needed, missing=run.missing)


_REPLIES = {
    "promoted": messages.PROMOTED,
    "promote_failed": messages.PROMOTE_FAILED,
    "export_unknown": messages.EXPORT_UNKNOWN,
    "export_missing": messages.EXPORT_MISSING_FILES,
    "export_too_large": messages.EXPORT_TOO_LARGE,
}
"""The texts of the ``reply`` entries the workers record, by name."""


def _upload_export(services: Services, fields: dict[str, str]) -> None:
    """A set's files the export job stored, into the admin's DM (the channel the command
    opened with conversations.open, never a shared one); the stored copy is deleted once
    uploaded. Raises when the upload failed: the entry is tried again."""
    values = json.loads(fields["values"])
    channel, user = fields["channel"], fields["user"]
    files = exports.load(services.redis, fields["key"])
    if files is None:
        _ephemeral(services, channel, user, messages.EXPORT_EXPIRED.format(**values))
        return
    set_id = values["set_id"]
    services.slack.files_upload_v2(
        channel=channel,
        initial_comment=messages.EXPORT_COMMENT.format(**values),
        file_uploads=[
            {"content": data, "filename": f"{set_id}-{name}", "title": f"{set_id} {name}"}
            for name, data in files.items()
        ],
        request_file_info=False,
    )
    exports.discard(services.redis, fields["key"])


def _post_entry(services: Services, fields: dict[str, str]) -> None:
    """Post one stream entry; raises when it could not be posted (it is tried again)."""
    kind = RunEvent(fields["kind"])
    if kind is RunEvent.REPLY:
        text = _REPLIES[fields["reply"]].format(**json.loads(fields["values"]))
        _ephemeral(services, fields["channel"], fields["user"], text)
        return
    if kind is RunEvent.EXPORT:
        _upload_export(services, fields)
        return
    run = runs.load_run(services.redis, fields["run_id"])
    if run is None:
        logger.warning("no run %s to report %s on", fields["run_id"], kind.value)
        return
    post_report(services, run, kind)


def _ensure_group(redis: Redis) -> None:
    """The consumer group, created from the start of the stream (entries may be older)."""
    try:
        redis.xgroup_create(keys.RUN_EVENTS, keys.RUN_EVENTS_GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _entries_to_retry(redis: Redis, retry_idle_s: float, count: int) -> list[Entry]:
    """Pending entries idle for ``retry_idle_s``, claimed for this process; the ones that
    failed ``MAX_DELIVERIES`` times are given up."""
    idle_ms = int(retry_idle_s * 1000)
    idle = pending(
        redis.xpending_range(
            keys.RUN_EVENTS, keys.RUN_EVENTS_GROUP, min="-", max="+", count=count, idle=idle_ms
        )
    )
    retry: list[StreamIdT] = []
    for entry in idle:
        if entry.times_delivered >= MAX_DELIVERIES:
            logger.error(
                "giving up posting run event %s after %d tries",
                entry.message_id,
                entry.times_delivered,
            )
            redis.xack(keys.RUN_EVENTS, keys.RUN_EVENTS_GROUP, entry.message_id)
        else:
            retry.append(entry.message_id)
    if not retry:
        return []
    return entries(
        redis.xclaim(
            keys.RUN_EVENTS,
            keys.RUN_EVENTS_GROUP,
            CONSUMER,
            min_idle_time=idle_ms,
            message_ids=retry,
        )
    )


def consume_run_events(
    services: Services, *, retry_idle_s: float = RETRY_IDLE_S, count: int = BATCH
) -> int:
    """Post the run events nobody posted yet (the web process's periodic chore); how many
    were posted. An entry is acknowledged only once posted; one that failed is left
    pending and taken again after ``retry_idle_s``, by this process or another."""
    redis = services.redis
    posted = 0
    with _consuming:
        _ensure_group(redis)
        todo = _entries_to_retry(redis, retry_idle_s, count)
        todo.extend(
            group_entries(
                redis.xreadgroup(
                    keys.RUN_EVENTS_GROUP, CONSUMER, {keys.RUN_EVENTS: ">"}, count=count
                )
            )
        )
        for entry_id, fields in todo:
            try:
                _post_entry(services, fields)
            except Exception:
                logger.exception(
                    "posting %s of %s failed; it is tried again later",
                    fields.get("kind"),
                    fields.get("run_id") or fields.get("user"),
                )
                continue
            redis.xack(keys.RUN_EVENTS, keys.RUN_EVENTS_GROUP, entry_id)
            posted += 1
    return posted


def post_run_events_soon(services: Services) -> None:
    """The web process's periodic chore: post the run events on a thread of its own, so
    a slow or unreachable Slack never delays the heartbeat the chore shares; nothing
    happens while the previous round is still posting."""
    global _poster
    with _starting:
        if _poster is not None and _poster.is_alive():
            return
        _poster = threading.Thread(
            target=_post_round, args=(services,), name="run-events", daemon=True
        )
        _poster.start()


def _post_round(services: Services) -> None:
    try:
        consume_run_events(services)
    except RedisError:
        logger.warning("Redis unavailable: run events are posted next time")
    except Exception:
        logger.exception("posting run events failed")
