"""``/finetune``: parse the sub-command, check admin rights on the server, run it.

The listener acknowledges at once and calls :func:`handle`; everything here is a few
Redis calls at most. Anything slow (building a set, talking to the fine-tuning API,
promoting, exporting) is an RQ job on the ``training`` queue. Admin rights come from
the server's configuration (and, if enabled, Slack's workspace-admin flag), never from
the request; every admin command is logged in the admin log, refusals included.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError

from bot import blocks, learning, messages
from bot.runtime import Services
from core import approval, approved, audit, canary, forget, keys, model_registry, run_control, runs
from core.errors import TrainingError
from core.run_control import LoopContext
from core.runs import Run
from workers import trainset
from workers.forget import delete_training_data

logger = logging.getLogger(__name__)

HELP = messages.FINETUNE_HELP
REVIEW_PAGE = 5
"""Pending answers per review message (each takes ~5 of Slack's 50 blocks)."""
JOB_TIMEOUT_S = 600


@dataclass(frozen=True)
class Reply:
    """What the command answers (ephemeral, to the caller only)."""

    text: str
    blocks: list[dict[str, Any]] | None = field(default=None)


Handler = Callable[[Services, str, str, list[str]], Reply]


def is_admin(services: Services, user_id: str) -> bool:
    """Admin rights come from the server's configuration, never from the request.

    With ``slack.workspace_admins_are_admins`` Slack's own admin and owner flags count
    too (users.info); a failed lookup counts as "not an admin".
    """
    if user_id in services.settings.slack.admins:
        return True
    if not services.settings.slack.workspace_admins_are_admins or not user_id:
        return False
    try:
        user = services.slack.users_info(user=user_id)["user"]
    except SlackApiError:
        logger.warning("users.info failed for %s: not treated as an admin", user_id)
        return False
    return bool(user.get("is_admin") or user.get("is_owner"))


def context(services: Services) -> LoopContext:
    """The learning loop's view of this process's clients."""
    return LoopContext(services.settings, services.redis, services.llm)


def _help(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    return Reply(HELP)


def _status(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    redis = services.redis
    try:
        model = services.store.current_model(services.settings.model.base_model)
        lines = [
            messages.STATUS_MODEL.format(model=model),
            learning.current_line(redis, model),
            *learning.canary_lines(redis, services.settings),
            messages.STATUS_WAITING.format(count=approved.pending_count(redis)),
            messages.STATUS_REVIEW.format(count=approval.pending_count(redis)),
        ]
        run = runs.active_run(redis)
        if run is not None:
            lines.append(
                messages.STATUS_RUN.format(
                    run_id=run.run_id, status=run.status.value, admin=run.admin
                )
            )
            if run.job_id:
                lines.append(
                    messages.STATUS_JOB.format(job_id=run.job_id, job_status=run.job_status or "?")
                )
            event = _event_line(run)
            if event:
                lines.append(messages.STATUS_EVENT.format(event=event))
        else:
            lines.append(messages.STATUS_NO_RUN)
            recent = runs.recent_runs(redis, 1)
            if recent:
                last = recent[0]
                lines.append(
                    messages.STATUS_LAST_RUN.format(run_id=last.run_id, status=last.status.value)
                )
                if not last.dry_run:
                    lines.append(learning.training_cost_line(redis, last))
        if is_admin(services, user_id):
            lines += learning.cost_lines(redis)
    except RedisError:
        logger.exception("status unavailable")
        return Reply(messages.STORAGE_DOWN)
    return Reply("\n".join(lines))


def _event_line(run: Run) -> str:
    from bot.reporting import progress_text

    return progress_text(run)


def review_reply(services: Services) -> Reply:
    """The pending rated answers, as buttons (also used to refresh after a decision)."""
    items = approval.pending(services.store, REVIEW_PAGE)
    if not items:
        return Reply(messages.REVIEW_EMPTY)
    total = approval.pending_count(services.redis)
    return Reply(
        messages.REVIEW_HEADER.format(shown=len(items), total=total),
        blocks.review_blocks(items, total),
    )


def _review(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    return review_reply(services)


def _announce(services: Services) -> Callable[[Run], tuple[str, str]]:
    """Start a run's thread in the admin's channel (their DM when the bot is not in it)."""

    def announce(run: Run) -> tuple[str, str]:
        text = messages.RUN_THREAD_ROOT.format(run_id=run.run_id, admin=run.admin)
        try:
            posted = services.slack.chat_postMessage(channel=run.channel, text=text)
        except SlackApiError as exc:
            logger.warning(
                "cannot post in %s (%s): using a DM", run.channel, exc.response.get("error")
            )
            posted = services.slack.chat_postMessage(channel=run.admin, text=text)
        return str(posted["channel"]), str(posted["ts"])

    return announce


def _retrain(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    unknown = [a for a in args if a != "--dry-run"]
    if unknown:
        return Reply(messages.FINETUNE_USAGE.format(usage="retrain [--dry-run]"))
    dry_run = "--dry-run" in args
    request = run_control.request_run(
        context(services),
        admin=user_id,
        channel=channel_id,
        dry_run=dry_run,
        announce=None if dry_run else _announce(services),
    )
    if request.run is None:
        busy = request.busy
        return Reply(
            messages.RETRAIN_BUSY.format(
                run_id=busy.run_id if busy else "?",
                status=busy.status.value if busy else "?",
                admin=busy.admin if busy else "?",
            )
        )
    if dry_run:
        return Reply(messages.RETRAIN_DRY_STARTED.format(run_id=request.run.run_id))
    return Reply(
        messages.RETRAIN_STARTED.format(run_id=request.run.run_id, channel=request.run.channel)
    )


def _cancel(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    run = run_control.request_cancel(context(services), by=user_id)
    if run is None:
        return Reply(messages.CANCEL_NONE)
    return Reply(messages.CANCEL_ASKED.format(run_id=run.run_id, status=run.status.value))


def _models(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    redis = services.redis
    current = services.store.current_model(services.settings.model.base_model)
    lines = [messages.MODELS_CURRENT.format(model=current)]
    lines += learning.satisfaction_lines(redis, current)
    produced = model_registry.candidates(redis)
    if produced:
        lines.append(messages.MODELS_CANDIDATES)
        for info in produced:
            score = (info.get("evaluation") or {}).get("score")
            lines.append(
                messages.MODELS_CANDIDATE.format(
                    model=info["model"],
                    run_id=info.get("run_id", "?"),
                    set_id=info.get("set_id", "?"),
                    trained=info.get("trained_examples", "?"),
                    score=f", evaluation score {score:.3f}" if score is not None else "",
                )
            )
    else:
        lines.append(messages.MODELS_NONE)
    past = model_registry.history(redis)
    if past:
        lines.append(messages.MODELS_HISTORY)
        for entry in past:
            lines.append(
                messages.MODELS_HISTORY_ITEM.format(
                    when=time.strftime("%Y-%m-%d %H:%M", time.gmtime(entry.get("at", 0))),
                    action=entry.get("action", "?"),
                    model=entry.get("model", "?"),
                    previous=entry.get("previous", "?"),
                    by=entry.get("by", "?"),
                )
            )
    return Reply("\n".join(lines))


def _promote(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    if len(args) != 1:
        return Reply(messages.FINETUNE_USAGE.format(usage="promote <model>"))
    return promote(services, args[0], user_id=user_id, channel_id=channel_id)


def promote(services: Services, model: str, *, user_id: str, channel_id: str) -> Reply:
    """Queue a promotion (activating a model may be slow); the admin is answered later."""
    if not model_registry.known_model(services.redis, services.settings, model):
        return Reply(messages.PROMOTE_UNKNOWN.format(model=model))
    services.training_queue.enqueue(
        run_control.PROMOTE_JOB,
        model,
        user_id,
        channel_id,
        job_timeout=JOB_TIMEOUT_S,
        result_ttl=run_control.RESULT_TTL_S,
        failure_ttl=run_control.FAILURE_TTL_S,
    )
    return Reply(messages.PROMOTE_ASKED.format(model=model))


def _rollback(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    try:
        frm, to = model_registry.rollback(context(services), by=user_id)
    except TrainingError as exc:
        return Reply(messages.ROLLBACK_NONE.format(reason=exc))
    return Reply(messages.ROLLED_BACK.format(frm=frm, to=to))


def _canary(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    """Without arguments the canary's progress; ``promote`` / ``rollback`` end it now."""
    choices = {"promote": canary.Outcome.PROMOTE, "rollback": canary.Outcome.ROLLBACK}
    if len(args) > 1 or (args and args[0].lower() not in choices):
        return Reply(messages.FINETUNE_USAGE.format(usage="canary [promote|rollback]"))
    going = canary.active(services.redis)
    if not args or going is None:
        return Reply("\n".join(learning.canary_lines(services.redis, services.settings)))
    outcome = choices[args[0].lower()]
    run_control.request_canary_decision(context(services), force=outcome, by=user_id)
    return Reply(
        messages.CANARY_ASKED.format(
            candidate=going.candidate, outcome=messages.CANARY_OUTCOMES[outcome.value]
        )
    )


def _export(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    if len(args) > 1:
        return Reply(messages.FINETUNE_USAGE.format(usage="export [set-id]"))
    set_id = args[0] if args else trainset.latest_set_id(services.redis)
    if set_id is None:
        return Reply(messages.EXPORT_NONE)
    if trainset.load_manifest(services.redis, set_id) is None:
        return Reply(messages.EXPORT_UNKNOWN.format(set_id=set_id))
    # A set holds other people's conversations, direct messages included: it goes to the
    # admin's own DM whatever channel the command was typed in, never to a shared one.
    try:
        dm = services.slack.conversations_open(users=user_id)["channel"]["id"]
    except SlackApiError as exc:
        logger.warning("cannot open a DM with %s: %s", user_id, exc.response.get("error"))
        return Reply(messages.EXPORT_NO_DM)
    services.training_queue.enqueue(
        run_control.EXPORT_JOB,
        set_id,
        dm,
        user_id,
        job_timeout=JOB_TIMEOUT_S,
        result_ttl=run_control.RESULT_TTL_S,
        failure_ttl=run_control.FAILURE_TTL_S,
    )
    return Reply(messages.EXPORT_ASKED.format(set_id=set_id))


_USER_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$|^([UW][A-Z0-9]+)$")


def _forget(services: Services, user_id: str) -> Reply:
    """Delete the user's data in Redis, then the training files that may hold it."""
    gone = forget.forget_user(services.store, user_id)
    data = delete_training_data(context(services), gone.trained_since)
    lines = [
        messages.FORGOTTEN.format(
            user=user_id,
            answers=gone.answers,
            votes=gone.votes,
            corrections=gone.corrections,
            examples=gone.examples,
            scrubbed=gone.scrubbed,
        )
    ]
    if data.deleted_files:
        lines.append(messages.FORGOTTEN_FILES.format(files=", ".join(data.deleted_files)))
    if data.deleted_sets:
        lines.append(messages.FORGOTTEN_SETS.format(sets=", ".join(data.deleted_sets)))
    if data.undeleted_files:
        lines.append(messages.FORGOTTEN_UNDELETED.format(files="; ".join(data.undeleted_files)))
    if data.sets_elsewhere:
        lines.append(messages.FORGOTTEN_SETS_ELSEWHERE.format(sets=", ".join(data.sets_elsewhere)))
    if data.models:
        lines.append(messages.FORGOTTEN_MODELS.format(models=", ".join(data.models)))
    return Reply("\n".join(lines))


def _forget_me(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    if args:
        return Reply(messages.FINETUNE_USAGE.format(usage="forget-me"))
    reply = _forget(services, user_id)
    audit.audit(services.redis, forget.FORGOTTEN_USER, "/finetune forget-me")
    return reply


def _forget_user(services: Services, user_id: str, channel_id: str, args: list[str]) -> Reply:
    match = _USER_MENTION.match(args[0]) if len(args) == 1 else None
    if match is None:
        return Reply(messages.FINETUNE_USAGE.format(usage="forget @user"))
    reply = _forget(services, match.group(1) or match.group(2))
    audit.audit(services.redis, user_id, "/finetune forget", forget.FORGOTTEN_USER)
    return reply


PUBLIC: dict[str, Handler] = {"help": _help, "status": _status, "forget-me": _forget_me}
ADMIN: dict[str, Handler] = {
    "review": _review,
    "retrain": _retrain,
    "cancel": _cancel,
    "models": _models,
    "promote": _promote,
    "rollback": _rollback,
    "canary": _canary,
    "export": _export,
    "forget": _forget_user,
}


MUTATING = frozenset({"retrain", "cancel", "promote", "rollback", "export", "forget", "forget-me"})
"""Commands that change state or send data: a replayed request must not run them twice."""
REPLAY_WINDOW_S = 600
"""How long a trigger id is remembered: Slack accepts a signed request for 5 minutes, so a
replay (or a duplicate delivery) of the same command arrives within that window."""


def first_trigger(services: Services, trigger_id: str) -> bool:
    """True the first time a command's ``trigger_id`` is seen.

    Every slash-command invocation carries a unique trigger id; a request replayed within
    Slack's signature window carries the same one, so recording it with ``SET NX`` makes
    mutating commands run once per invocation. Commands without one (never sent by
    Slack) are not de-duplicated.
    """
    if not trigger_id:
        return True
    return bool(
        services.redis.set(keys.command_trigger(trigger_id), "1", nx=True, ex=REPLAY_WINDOW_S)
    )


def handle(
    services: Services, *, user_id: str, channel_id: str, text: str, trigger_id: str = ""
) -> Reply:
    """Run one ``/finetune`` invocation and say what happened."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        return Reply(messages.FINETUNE_UNREADABLE.format(error=exc))
    name, args = (words[0].lower(), words[1:]) if words else ("help", [])
    if name not in PUBLIC and name not in ADMIN:
        return Reply(messages.FINETUNE_UNKNOWN.format(name=name))
    try:
        if name in MUTATING and not first_trigger(services, trigger_id):
            logger.warning("/finetune %s replayed (trigger %s): not run again", name, trigger_id)
            return Reply(messages.COMMAND_REPLAYED.format(name=name))
        if name in PUBLIC:
            return PUBLIC[name](services, user_id, channel_id, args)
        if not is_admin(services, user_id):
            logger.warning("non-admin %s tried /finetune %s", user_id, name)
            audit.audit(services.redis, user_id, f"refused /finetune {name}", " ".join(args))
            return Reply(messages.NOT_ADMIN)
        audit.audit(services.redis, user_id, f"/finetune {name}", " ".join(args))
        return ADMIN[name](services, user_id, channel_id, args)
    except RedisError:
        logger.exception("/finetune %s failed: storage unavailable", name)
        return Reply(messages.STORAGE_DOWN)
