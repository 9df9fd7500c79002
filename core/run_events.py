"""What happened to a training run, recorded for Slack: the ``keys.RUN_EVENTS`` stream.

The training loop's jobs never talk to Slack and never run the bot's code. They append an
entry here (with the state change it reports, where there is one) and the web processes
post it (:func:`bot.reporting.consume_run_events`, on their periodic chore). An entry is
acknowledged only once it was posted, so one that failed (Slack down, an upload that
broke) is posted again later, and each entry is posted on its own: a loss curve that
cannot be uploaded never holds back the verdict next to it.
"""

from __future__ import annotations

import json
from enum import Enum

from redis import Redis
from redis.client import Pipeline

from core import keys

MAXLEN = 10_000
"""Entries kept (approximately); posted ones are history, pending ones are far fewer."""


class RunEvent(str, Enum):
    """The kinds of entry; each becomes one Slack message (or upload)."""

    STARTED = "started"
    PROGRESS = "progress"
    TRAINED = "trained"
    EVALUATED = "evaluated"
    """The gate's verdict (with the "promote anyway" button when the model was held)."""
    LOSS_CURVE = "loss_curve"
    CANARY = "canary"
    """The candidate passed the gate and answers a share of new threads."""
    CANARY_DECIDED = "canary_decided"
    """The canary's votes (or an admin) promoted or rolled back the candidate."""
    FAILED = "failed"
    CANCELLED = "cancelled"
    TOO_FEW = "too_few"
    DRY_RUN = "dry_run"
    REPLY = "reply"
    """An ephemeral answer to the admin who asked for something slow (e.g. promote)."""
    EXPORT = "export"
    """A training set's files (stored under ``key``) for the admin's DM (``channel``)."""


CURVE_BEFORE = frozenset({RunEvent.EVALUATED, RunEvent.CANARY})
"""The verdict comes after the loss curve it sums up (and stays the thread's last message,
with its button)..."""
CURVE_AFTER = frozenset({RunEvent.FAILED, RunEvent.CANCELLED})
"""...while a failure or a cancellation is said first."""


def publish(redis: Redis | Pipeline, run_id: str, kind: RunEvent) -> None:
    """Append what happened to ``run_id`` (with the loss curve, an entry of its own, when
    the run ended). Give a transaction pipeline to record the entries with the state
    change they report."""
    kinds = [kind]
    if kind in CURVE_BEFORE:
        kinds.insert(0, RunEvent.LOSS_CURVE)
    elif kind in CURVE_AFTER:
        kinds.append(RunEvent.LOSS_CURVE)
    for each in kinds:
        redis.xadd(
            keys.RUN_EVENTS,
            {"kind": each.value, "run_id": run_id},
            maxlen=MAXLEN,
            approximate=True,
        )


def publish_reply(
    redis: Redis, channel: str, user: str, reply: str, values: dict[str, str]
) -> None:
    """Append an ephemeral answer for ``user`` in ``channel`` (``reply`` names its text)."""
    redis.xadd(
        keys.RUN_EVENTS,
        {
            "kind": RunEvent.REPLY.value,
            "channel": channel,
            "user": user,
            "reply": reply,
            "values": json.dumps(values),
        },
        maxlen=MAXLEN,
        approximate=True,
    )


def publish_export(
    redis: Redis | Pipeline, key: str, channel: str, user: str, values: dict[str, str]
) -> None:
    """Append an export for ``user``'s DM ``channel``: the files are under ``key``,
    ``values`` fill the upload's comment. Give a transaction pipeline to record the entry
    with the files."""
    redis.xadd(
        keys.RUN_EVENTS,
        {
            "kind": RunEvent.EXPORT.value,
            "key": key,
            "channel": channel,
            "user": user,
            "values": json.dumps(values),
        },
        maxlen=MAXLEN,
        approximate=True,
    )
