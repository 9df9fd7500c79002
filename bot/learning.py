"""What learning did, for people: satisfaction per model version, the canary, cost.

Used by ``/finetune status``, ``/finetune models``, the admins' App Home section and the
run reports, so every surface shows the same numbers the same way. The up-rate chart is
drawn with matplotlib and uploaded to Slack as a file (files.getUploadURLExternal and
files.completeUploadExternal, through slack_sdk's ``files_upload_v2``) that an image block
shows by its ``slack_file`` id; a new file is uploaded only when the numbers changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import time
from typing import Any

from redis import Redis
from slack_sdk.errors import SlackApiError

from bot import messages
from bot.runtime import Services
from core import canary, keys, pricing, satisfaction
from core.replies import text_or_none
from core.runs import Run
from core.satisfaction import Totals
from core.settings import Settings
from workers import trainset

logger = logging.getLogger(__name__)

COST_DAYS = 7
COST_CHANNELS = 5
CHART_MODELS = 6


def rate_text(totals: Totals) -> str:
    """Up-rate with its Wilson interval, or "no votes yet"."""
    interval = totals.interval
    if totals.up_rate is None or interval is None:
        return messages.SAT_NO_VOTES
    return messages.SAT_RATE.format(rate=totals.up_rate, low=interval[0], high=interval[1])


def cost_text(totals: Totals) -> str:
    """Mean cost per priced answer, and how many answers had no price."""
    if not totals.answers:
        return messages.COST_NONE
    parts = []
    per_answer = totals.cost_per_answer
    if per_answer is not None:
        parts.append(messages.COST_PER_ANSWER.format(cost=per_answer, total=totals.cost))
    if totals.unpriced:
        parts.append(messages.COST_UNPRICED.format(count=totals.unpriced))
    return ", ".join(parts)


def current_line(redis: Redis, model: str) -> str:
    """One line on how the current model is received."""
    t = satisfaction.totals(redis, model)
    return messages.SAT_CURRENT.format(
        answers=t.answers, up=t.up, down=t.down, rate=rate_text(t), corrections=t.corrections
    )


def satisfaction_lines(redis: Redis, current: str) -> list[str]:
    """Every model version: lineage, votes, up-rate with interval, corrections, cost."""
    summaries = satisfaction.summaries(redis)
    if not summaries:
        return [messages.SAT_NONE]
    going = canary.active(redis)
    lines = [messages.SAT_HEADER]
    for s in reversed(summaries):
        tags = messages.SAT_TAG_CURRENT if s.model == current else ""
        if going is not None and s.model == going.candidate:
            tags += messages.SAT_TAG_CANDIDATE
        t = s.totals
        line = messages.SAT_LINE.format(
            model=s.model,
            tags=tags,
            answers=t.answers,
            up=t.up,
            down=t.down,
            rate=rate_text(t),
            corrections=t.corrections,
            cost=cost_text(t),
        )
        if s.parent:
            line += messages.SAT_LINEAGE.format(
                parent=s.parent, run_id=s.run_id or "?", set_id=s.set_id or "?"
            )
        lines.append(line)
    return lines


def cost_lines(redis: Redis, now: float | None = None) -> list[str]:
    """Cost per model version, per day (last week) and per channel (the costliest)."""
    models = satisfaction.models(redis)
    if not models:
        return []
    lines = [messages.COST_HEADER]
    days: dict[str, float] = {}
    channels: dict[str, Totals] = {}
    for model in reversed(models):
        lines.append(
            messages.COST_MODEL.format(
                model=model, cost=cost_text(satisfaction.totals(redis, model))
            )
        )
        for day, t in satisfaction.by_day(redis, model).items():
            days[day] = days.get(day, 0.0) + t.cost
        for channel, t in satisfaction.by_channel(redis, model).items():
            seen = channels.get(channel, Totals())
            channels[channel] = Totals(answers=seen.answers + t.answers, cost=seen.cost + t.cost)
    today = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC).date()
    week = [(today - dt.timedelta(days=n)).isoformat() for n in range(COST_DAYS - 1, -1, -1)]
    lines.append(
        messages.COST_DAYS.format(
            days=", ".join(messages.COST_DAY.format(day=d, cost=days.get(d, 0.0)) for d in week)
        )
    )
    costliest = sorted(channels.items(), key=lambda item: -item[1].cost)[:COST_CHANNELS]
    lines.append(
        messages.COST_CHANNELS.format(
            channels=", ".join(
                messages.COST_CHANNEL.format(channel=c, cost=t.cost, answers=t.answers)
                for c, t in costliest
            )
        )
    )
    return lines


def training_cost_line(redis: Redis, run: Run) -> str:
    """A run's training cost: the set's estimate before, the trained tokens' price after."""
    manifest = trainset.load_manifest(redis, run.set_id) if run.set_id else None
    estimate = ((manifest or {}).get("estimate") or {}).get("cost_usd")
    actual = (
        pricing.training_cost(run.base_model, run.trained_tokens)
        if run.trained_tokens and run.base_model
        else None
    )
    return messages.RUN_COST.format(
        run_id=run.run_id,
        estimate=f"${estimate:,.2f}" if estimate is not None else messages.RUN_COST_UNKNOWN,
        actual=f"${actual:,.2f}" if actual is not None else messages.RUN_COST_UNKNOWN,
        tokens=run.trained_tokens,
    )


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(timestamp))


def canary_lines(redis: Redis, settings: Settings, now: float | None = None) -> list[str]:
    """The canary's progress: votes on each side, what decides it, the test as it stands."""
    going = canary.active(redis)
    if going is None:
        return [messages.CANARY_NONE]
    seen = canary.progress(redis, going, now)
    rules = settings.canary
    test = ""
    if seen.candidate_votes and seen.incumbent_votes:
        result = satisfaction.non_inferiority(
            seen.candidate_up,
            seen.candidate_votes,
            seen.incumbent_up,
            seen.incumbent_votes,
            margin=rules.margin,
            confidence=rules.confidence,
        )
        test = messages.CANARY_TEST.format(
            diff=result.difference,
            z=result.z,
            p=result.p_value,
            margin=rules.margin,
            confidence=rules.confidence,
        )
    if going.state is canary.CanaryState.DECIDING:
        test += messages.CANARY_DECIDING.format(outcome=going.outcome)
    return [
        messages.CANARY_PROGRESS.format(
            candidate=going.candidate,
            incumbent=going.incumbent,
            share=going.share,
            since=_utc(going.started_at),
            cu=seen.candidate_up,
            cv=seen.candidate_votes,
            crate=rate_text(Totals(up=seen.candidate_up, down=seen.candidate_down)),
            iu=seen.incumbent_up,
            iv=seen.incumbent_votes,
            irate=rate_text(Totals(up=seen.incumbent_up, down=seen.incumbent_down)),
            min_votes=rules.min_votes,
            deadline=_utc(going.started_at + rules.max_duration_h * 3600),
            test=test,
        )
    ]


def canary_decided_text(record: dict[str, Any]) -> str:
    """A canary decision as stored in its history, with the numbers behind it."""
    test = ""
    if record.get("z") is not None:
        test = messages.CANARY_DECIDED_TEST.format(
            z=record["z"],
            p=record["p_value"],
            margin=record.get("margin", 0.0),
            confidence=record.get("confidence", 0.0),
        )
    promoted = record["outcome"] == canary.Outcome.PROMOTE.value
    return messages.CANARY_DECIDED.format(
        icon=":white_check_mark:" if promoted else ":leftwards_arrow_with_hook:",
        candidate=record["candidate"],
        incumbent=record["incumbent"],
        outcome=messages.CANARY_OUTCOMES.get(record["outcome"], record["outcome"]),
        reason=record.get("reason", ""),
        by=messages.CANARY_BY_RULE
        if record.get("by", "canary") == "canary"
        else f"<@{record['by']}>",
        cu=record.get("candidate_up", 0),
        cv=record.get("candidate_votes", 0),
        iu=record.get("incumbent_up", 0),
        iv=record.get("incumbent_votes", 0),
        test=test,
    )


def canary_started_text(run: Run, settings: Settings) -> str:
    """What the run's thread is told when its candidate enters the canary."""
    report = run.report
    rules = settings.canary
    return messages.CANARY_STARTED.format(
        model=run.candidate_model,
        cand=f"{report.candidate.score:.3f}" if report else "?",
        cur=f"{report.current.score:.3f}" if report else "?",
        current=report.current.model if report else "?",
        scorer=report.scorer if report else "?",
        share=rules.share,
        margin=rules.margin,
        confidence=rules.confidence,
        min_votes=rules.min_votes,
        hours=rules.max_duration_h,
    )


# --- the chart ------------------------------------------------------------------------------------
def chart_series(redis: Redis) -> dict[str, list[tuple[str, float]]]:
    """Daily up-rate of the newest model versions: model -> [(day, up-rate)], days with
    votes only."""
    out: dict[str, list[tuple[str, float]]] = {}
    for model in satisfaction.models(redis)[-CHART_MODELS:]:
        points = [
            (day, t.up_rate)
            for day, t in satisfaction.by_day(redis, model).items()
            if t.up_rate is not None
        ]
        if points:
            out[model] = points
    return out


def chart_png(series: dict[str, list[tuple[str, float]]]) -> bytes | None:
    """The up-rate per model version per day as a PNG; None without any vote."""
    if not series:
        return None
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.5), dpi=100)
    axes = figure.subplots()
    for model, points in series.items():
        days = np.array([day for day, _ in points], dtype="datetime64[D]")
        label = model if len(model) <= 40 else "…" + model[-39:]
        axes.plot(days, [rate for _, rate in points], marker="o", markersize=3, label=label)
    axes.set_ylim(0, 1)
    axes.set_ylabel("share of thumbs-up")
    axes.set_title(messages.CHART_TITLE)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.autofmt_xdate()
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def chart_file_id(services: Services) -> str | None:
    """The Slack file of the current chart, uploaded when the numbers changed; None
    without votes or when Slack refused the upload."""
    redis = services.redis
    series = chart_series(redis)
    if not series:
        return None
    digest = hashlib.sha256(json.dumps(series, sort_keys=True).encode()).hexdigest()
    cached_digest, cached_file = map(text_or_none, redis.hmget(keys.SAT_CHART, "digest", "file_id"))
    if cached_digest == digest and cached_file:
        return cached_file
    png = chart_png(series)
    if png is None:
        return None
    try:
        response = services.slack.files_upload_v2(
            content=png,
            filename="uprate.png",
            title=messages.CHART_TITLE,
            alt_txt=messages.CHART_ALT,
            request_file_info=False,
        )
    except SlackApiError as exc:
        logger.warning("uploading the up-rate chart failed: %s", exc.response.get("error"))
        return None
    file_id = str(response["files"][0]["id"])
    redis.hset(keys.SAT_CHART, mapping={"digest": digest, "file_id": file_id})
    return file_id


def home_lines(services: Services, current: str) -> list[str]:
    """The admins' App Home section: satisfaction per model version, canary, cost."""
    redis = services.redis
    return [
        *satisfaction_lines(redis, current),
        *canary_lines(redis, services.settings),
        *cost_lines(redis),
    ]
