"""``/finetune export`` on the training worker, where the sets are: read a set's files and
hand them to the web processes (:mod:`core.exports`), which upload them to the admin's DM.

What cannot be exported (an unknown set, files no longer here, a set too large) is said
to the admin in that DM, through the run events like every other answer.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core import exports, run_events
from core.run_control import LoopContext
from workers import trainset

logger = logging.getLogger(__name__)


def export_set(ctx: LoopContext, set_id: str, channel: str, user: str) -> None:
    """Store set ``set_id``'s files (training and validation JSONL, manifest) for ``user``'s
    DM ``channel``; the admin is told why when they cannot be."""
    manifest = trainset.load_manifest(ctx.redis, set_id)
    if manifest is None:
        _reply(ctx, channel, user, "export_unknown", set_id=set_id)
        return
    paths = [Path(p) for p in (manifest["files"].get("train"), manifest["files"].get("valid")) if p]
    if paths:
        paths.append(paths[0].parent / "manifest.json")
    if not paths or not all(p.is_file() for p in paths):
        _reply(ctx, channel, user, "export_missing", set_id=set_id)
        return
    size = sum(p.stat().st_size for p in paths)
    if size > exports.MAX_BYTES:
        logger.warning("set %s is %d bytes: too large to export", set_id, size)
        _reply(
            ctx,
            channel,
            user,
            "export_too_large",
            set_id=set_id,
            size_mb=f"{size / 2**20:.1f}",
            limit_mb=f"{exports.MAX_BYTES / 2**20:.0f}",
        )
        return
    values = {
        "set_id": set_id,
        "version": str(manifest["version"]),
        "train": str(manifest["counts"]["train"]),
        "valid": str(manifest["counts"]["valid"]),
    }
    files = {p.name: p.read_bytes() for p in paths}
    key = exports.stage(ctx.redis, set_id, files, channel, user, values)
    logger.info("set %s (%d bytes) stored for %s as %s", set_id, size, user, key)


def _reply(ctx: LoopContext, channel: str, user: str, reply: str, **values: str) -> None:
    run_events.publish_reply(ctx.redis, channel, user, reply, values)
