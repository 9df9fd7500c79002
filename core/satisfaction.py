"""Satisfaction per model version: answers, votes, corrections and cost, with the statistics
that say whether a difference is real.

Why: the loop promotes models, and only the users' votes on each model's answers show
whether answers got better. Every model that has answered has totals kept in Redis
(overall, per channel and per UTC day of the answer). Each update is one Lua script, so
it is atomic and O(1): recording an answer adds to its model's totals once (a second call
for the same answer id counts nothing), and a vote is *synchronised*: the script compares
the user's vote as stored with the one already counted for that user and moves the counts
by the difference, so a changed vote moves one count from "down" to "up" and a repeated
call changes nothing. Votes count on the day of the answer they rate, so a model's daily
up-rate always describes that day's answers.

The statistics (Wilson interval, one-sided non-inferiority z-test, exact sign test) use
only the standard library, so their numbers can be checked by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from statistics import NormalDist
from typing import Any

from redis import Redis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.client import Pipeline

from core import keys
from core.replies import members, text_hash

_SEP = "|"
_NORMAL = NormalDist()

# Civil date (UTC) of a Unix time, in Lua (Redis scripts have no os.date): H. Hinnant's
# days-to-civil algorithm, so answers and votes land in the same day bucket.
_DAY_OF = """
local function day_of(t)
  local z = math.floor(t / 86400) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02d', y, m, d)
end
local function add(model, channel, day, field, amount)
  redis.call('HINCRBYFLOAT', ARGV[2] .. model, field, amount)
  redis.call('HINCRBYFLOAT', ARGV[3] .. model, channel .. '|' .. field, amount)
  redis.call('HINCRBYFLOAT', ARGV[4] .. model, day .. '|' .. field, amount)
end
"""

# KEYS: counted, models zset
# ARGV: retention, model prefix, channels prefix, days prefix, model, channel, created at,
#       prompt tokens, completion tokens, cost ("" when the model has no known price)
_ANSWER = (
    _DAY_OF
    + """
if redis.call('HSETNX', KEYS[1], 'answer', '1') == 0 then return 0 end
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local model, channel, t = ARGV[5], ARGV[6], tonumber(ARGV[7])
local day = day_of(t)
add(model, channel, day, 'answers', 1)
add(model, channel, day, 'prompt_tokens', ARGV[8])
add(model, channel, day, 'completion_tokens', ARGV[9])
if ARGV[10] == '' then add(model, channel, day, 'unpriced', 1)
else add(model, channel, day, 'cost', ARGV[10]) end
redis.call('ZADD', KEYS[2], 'NX', t, model)
return 1
"""
)

# KEYS: answer, votes, corrections, counted
# ARGV: user, model prefix, channels prefix, days prefix
_SYNC = (
    _DAY_OF
    + """
local model = redis.call('HGET', KEYS[1], 'model')
if not model then return 0 end
local channel = redis.call('HGET', KEYS[1], 'channel_id') or ''
local day = day_of(tonumber(redis.call('HGET', KEYS[1], 'created_at') or '0'))
local moved = 0
local vote = redis.call('HGET', KEYS[2], ARGV[1]) or ''
local counted = redis.call('HGET', KEYS[4], 'v:' .. ARGV[1]) or ''
if vote ~= counted then
  if counted ~= '' then add(model, channel, day, counted, -1) end
  if vote ~= '' then
    add(model, channel, day, vote, 1)
    redis.call('HSET', KEYS[4], 'v:' .. ARGV[1], vote)
  else
    redis.call('HDEL', KEYS[4], 'v:' .. ARGV[1])
  end
  moved = 1
end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1
   and redis.call('HSETNX', KEYS[4], 'c:' .. ARGV[1], '1') == 1 then
  add(model, channel, day, 'corrections', 1)
  moved = 1
end
if moved == 1 then redis.call('PERSIST', KEYS[4]) end
return moved
"""
)

_SYNC_LUA = _SYNC.encode()


def _prefixes() -> list[str]:
    return [keys.sat_model(""), keys.sat_channels(""), keys.sat_days("")]


def day_of(timestamp: float) -> str:
    """The UTC day of a Unix time, as the scripts compute it (``YYYY-MM-DD``)."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date().isoformat()


def record_answer(
    pipe: Pipeline | AsyncPipeline,
    *,
    answer_id: str,
    model: str,
    channel_id: str,
    created_at: float,
    prompt_tokens: int,
    completion_tokens: int,
    cost: float | None,
    retention_s: int,
) -> None:
    """Add one stored answer to its model's totals (overall, channel, day), once per
    answer id: a retried job or a second call counts nothing. ``cost`` is None for a
    model without a known price; it is then counted as unpriced, never guessed.

    Queued in ``pipe`` (sync or async), in the transaction that stores the answer: EVAL,
    which a pipeline buffers the same way for either client.
    """
    pipe.eval(
        _ANSWER,
        2,
        keys.sat_counted(answer_id),
        keys.SAT_MODELS,
        retention_s,
        *_prefixes(),
        model,
        channel_id,
        repr(created_at),
        prompt_tokens,
        completion_tokens,
        "" if cost is None else repr(cost),
    )


def sync_feedback(redis: Redis | Pipeline, answer_id: str, user_id: str) -> None:
    """Bring the totals in line with a user's vote and correction on one answer as stored.

    Called after (or, in a MULTI, together with) every write of a vote or correction: a
    new vote adds one, a changed vote moves one count, a withdrawn vote removes one, and
    a first correction adds one. Calling it again changes nothing.
    """
    redis.register_script(_SYNC_LUA)(
        keys=[
            keys.answer(answer_id),
            keys.votes(answer_id),
            keys.corrections(answer_id),
            keys.sat_counted(answer_id),
        ],
        args=[user_id, *_prefixes()],
    )


# --- reading ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Totals:
    """What one model (or one channel or day of it) did, and how it was received."""

    answers: int = 0
    up: int = 0
    down: int = 0
    corrections: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    unpriced: int = 0

    @property
    def votes(self) -> int:
        """Thumbs up plus thumbs down."""
        return self.up + self.down

    @property
    def up_rate(self) -> float | None:
        """Share of votes that are thumbs-up; None without votes."""
        return self.up / self.votes if self.votes else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """95% Wilson interval of the up-rate; None without votes."""
        return wilson_interval(self.up, self.votes) if self.votes else None

    @property
    def cost_per_answer(self) -> float | None:
        """Mean cost of a priced answer in USD; None when none was priced."""
        priced = self.answers - self.unpriced
        return self.cost / priced if priced > 0 else None

    @classmethod
    def from_values(cls, values: dict[str, float]) -> Totals:
        """From summed fields (missing ones are 0)."""
        out: dict[str, Any] = {}
        for f in fields(cls):
            value = values.get(f.name, 0.0)
            out[f.name] = float(value) if f.name == "cost" else int(round(value))
        return cls(**out)


def _decode(raw: Mapping[bytes | str, bytes | str]) -> dict[str, float]:
    return {k: float(v) for k, v in text_hash(raw).items()}


def _split(raw: Mapping[bytes | str, bytes | str]) -> dict[str, Totals]:
    grouped: dict[str, dict[str, float]] = {}
    for field, value in _decode(raw).items():
        group, name = field.rsplit(_SEP, 1)
        grouped.setdefault(group, {})[name] = value
    return {group: Totals.from_values(values) for group, values in sorted(grouped.items())}


def models(redis: Redis) -> list[str]:
    """Every model that has answered, oldest first answer first."""
    return members(redis.zrange(keys.SAT_MODELS, 0, -1))


def totals(redis: Redis, model: str) -> Totals:
    """A model's totals."""
    return Totals.from_values(_decode(redis.hgetall(keys.sat_model(model))))


def by_channel(redis: Redis, model: str) -> dict[str, Totals]:
    """A model's totals per channel id."""
    return _split(redis.hgetall(keys.sat_channels(model)))


def by_day(redis: Redis, model: str) -> dict[str, Totals]:
    """A model's totals per UTC day (``YYYY-MM-DD``), oldest first."""
    return _split(redis.hgetall(keys.sat_days(model)))


@dataclass(frozen=True)
class ModelSummary:
    """One model version: its lineage (what it continued from, which set and run made
    it) and its totals."""

    model: str
    totals: Totals
    parent: str = ""
    run_id: str = ""
    set_id: str = ""


def summaries(redis: Redis) -> list[ModelSummary]:
    """Every model that has answered or was trained, with lineage from ``keys.MODELS``;
    oldest first."""
    seen = models(redis)
    lineage = {k: json.loads(v) for k, v in text_hash(redis.hgetall(keys.MODELS)).items()}
    trained = sorted(lineage, key=lambda m: lineage[m].get("created_at", 0))
    ordered = seen + [m for m in trained if m not in seen]
    out = []
    for model in ordered:
        info = lineage.get(model, {})
        out.append(
            ModelSummary(
                model=model,
                totals=totals(redis, model),
                parent=str(info.get("parent", "")),
                run_id=str(info.get("run_id", "")),
                set_id=str(info.get("set_id", "")),
            )
        )
    return out


# --- statistics -----------------------------------------------------------------------------
def z_for(confidence: float) -> float:
    """The two-sided normal quantile for a confidence level (0.95 -> 1.95996)."""
    return _NORMAL.inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion: unlike the normal approximation it stays
    inside [0, 1] and is honest for few votes, which is what a new model has."""
    if n <= 0:
        return 0.0, 1.0
    z = z_for(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class NonInferiority:
    """A one-sided non-inferiority z-test of candidate vs incumbent up-rates."""

    candidate_rate: float
    incumbent_rate: float
    difference: float
    margin: float
    z: float
    p_value: float
    confidence: float

    @property
    def passed(self) -> bool:
        """The candidate is shown not worse than the incumbent by more than the margin."""
        return self.p_value <= 1 - self.confidence


def non_inferiority(
    up_candidate: int,
    n_candidate: int,
    up_incumbent: int,
    n_incumbent: int,
    *,
    margin: float,
    confidence: float,
) -> NonInferiority:
    """Test H0: p_candidate - p_incumbent <= -margin against H1: the difference is above
    -margin, with the unpooled (Wald) standard error; p = 1 - Phi(z).

    Why one-sided: the question a canary answers is only "is the candidate not worse",
    so all the error budget goes to that side. Both samples need votes; a zero standard
    error (all-up or all-down on both sides) is taken as a tiny one so the sign of the
    difference still decides.
    """
    if n_candidate <= 0 or n_incumbent <= 0:
        raise ValueError("both models need votes for the test")
    pc, pi = up_candidate / n_candidate, up_incumbent / n_incumbent
    se = math.sqrt(pc * (1 - pc) / n_candidate + pi * (1 - pi) / n_incumbent) or 1e-9
    diff = pc - pi
    z = (diff + margin) / se
    return NonInferiority(pc, pi, diff, margin, z, 1 - _NORMAL.cdf(z), confidence)


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign-test p-value for paired outcomes (ties left out): the chance
    of a split at least this uneven if either model were equally likely to win."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)
