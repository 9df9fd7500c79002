"""Answers, votes and corrections in Redis: the record the learning loop learns from.

Each answer is one hash holding its whole transcript; votes and corrections are hashes
beside it keyed by Slack user id, so a user has one vote per answer and voting again
changes it. Writes that belong together run in one Lua script or MULTI, so a crash
never leaves a vote without its answer being kept. Unrated answers expire after the
retention period; the first vote makes the answer (and its indexes) permanent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.client import Pipeline
from redis.exceptions import RedisError

from core import keys, pricing, satisfaction
from core.replies import text, text_hash, text_or_none

STATS_WINDOW_S = 7 * 24 * 3600


class Vote(str, Enum):
    """A thumbs-up or thumbs-down."""

    UP = "up"
    DOWN = "down"


class VoteSource(str, Enum):
    """How a vote was cast."""

    BUTTON = "button"
    REACTION = "reaction"


class AnswerState(str, Enum):
    """Where answering one user message stands (guards against answering twice)."""

    QUEUED = "queued"
    DONE = "done"
    FAILED = "failed"


class VoteResult(str, Enum):
    """What recording a vote did."""

    RECORDED = "recorded"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    REMOVED = "removed"
    NO_SUCH_ANSWER = "no_such_answer"


@dataclass(frozen=True)
class AnswerRecord:
    """One answer with everything needed to reproduce and train on it."""

    answer_id: str
    team_id: str
    channel_id: str
    thread_ts: str
    question_ts: str
    user_id: str
    messages: list[dict[str, Any]]
    answer: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    created_at: float
    message_ts: tuple[str, ...] = ()

    def to_hash(self) -> dict[str, str]:
        """Flat string fields for HSET (lists as JSON)."""
        out: dict[str, str] = {}
        for field in fields(self):
            name, value = field.name, getattr(self, field.name)
            if isinstance(value, list | tuple):
                out[name] = json.dumps(list(value), ensure_ascii=False)
            else:
                out[name] = str(value)
        return out

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str]) -> AnswerRecord:
        """Inverse of :meth:`to_hash`."""
        data = text_hash(raw)
        return cls(
            answer_id=data["answer_id"],
            team_id=data["team_id"],
            channel_id=data["channel_id"],
            thread_ts=data["thread_ts"],
            question_ts=data["question_ts"],
            user_id=data["user_id"],
            messages=json.loads(data["messages"]),
            answer=data["answer"],
            model=data["model"],
            prompt_tokens=int(data["prompt_tokens"]),
            completion_tokens=int(data["completion_tokens"]),
            latency_ms=int(data["latency_ms"]),
            created_at=float(data["created_at"]),
            message_ts=tuple(json.loads(data.get("message_ts", "[]"))),
        )


def answer_id_for(channel_id: str, question_ts: str) -> str:
    """An answer's id is its question's: a retried job reuses it instead of duplicating."""
    return f"{channel_id}-{question_ts}"


# KEYS: claimed flag, in-flight journal, current model, thread flag (optional)
# ARGV: state, dedup seconds, answer id, journal entry ("" for none), retention
_CLAIM = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return false end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) end
if KEYS[4] then redis.call('SET', KEYS[4], '1', 'EX', ARGV[5]) end
return redis.call('GET', KEYS[3]) or ''
"""

# KEYS: answer, stats answers, user's answers, thread flag, claimed flag, in-flight
#       journal, metrics, then one message-index key per posted message
# ARGV: retention, answer id, created at, stats window start, dedup seconds, done state
#       ("" while the answer is not shown in full yet: its claim and journal entry stay),
#       number of answer fields N, N field/value pairs, then metric field/amount pairs
_SAVE = """
local retention, id = ARGV[1], ARGV[2]
local n = tonumber(ARGV[7])
local fields = {}
for i = 8, 7 + 2 * n do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], retention)
for i = 8, #KEYS do redis.call('SET', KEYS[i], id, 'EX', retention) end
redis.call('SET', KEYS[4], '1', 'EX', retention)
redis.call('ZADD', KEYS[2], ARGV[3], id)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
redis.call('SADD', KEYS[3], id)
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[5])
  redis.call('HDEL', KEYS[6], id)
end
for i = 8 + 2 * n, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[7], ARGV[i], ARGV[i + 1]) end
return 1
"""

# KEYS: an RQ queue's intermediate list, the queue; ARGV: job id
_REQUEUE_STUCK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""

# KEYS: a hash (in-flight journal); ARGV: answer id, the entry expected, its replacement
# ("" to remove it)
_TAKE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then return redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# KEYS: unposted answers, who is posting each; ARGV: answer id, the entry expected, the
# taker (a web process), the heartbeat key prefix of web processes
_TAKE_UNPOSTED = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
local holder = redis.call('HGET', KEYS[2], ARGV[1])
if holder and holder ~= ARGV[3] and redis.call('EXISTS', ARGV[4] .. holder) == 1 then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""

# KEYS: answer, votes, vote_src, rated, stats_votes, user_answers
# ARGV: answer_id, user, vote ("up"/"down"/"" to remove), source, now, window_start,
#       message-index key prefix (the answer's message keys are made permanent with it)
_VOTE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'no_such_answer' end
local old = redis.call('HGET', KEYS[2], ARGV[2])
local member_old = old and (ARGV[1] .. '|' .. ARGV[2] .. '|' .. old) or nil
if ARGV[3] == '' then
  if not old then return 'unchanged' end
  if redis.call('HGET', KEYS[3], ARGV[2]) ~= ARGV[4] then return 'unchanged' end
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('ZREM', KEYS[5], member_old)
  return 'removed'
end
if old == ARGV[3] then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
  return 'unchanged'
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
if member_old then redis.call('ZREM', KEYS[5], member_old) end
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[6])
redis.call('ZADD', KEYS[4], 'NX', ARGV[5], ARGV[1])
redis.call('SADD', KEYS[6], ARGV[1])
redis.call('PERSIST', KEYS[1])
local tss = cjson.decode(redis.call('HGET', KEYS[1], 'message_ts'))
local channel = redis.call('HGET', KEYS[1], 'channel_id')
for _, ts in ipairs(tss) do redis.call('PERSIST', ARGV[7] .. channel .. ':' .. ts) end
if old then return 'changed' end
return 'recorded'
"""

# KEYS: answer, corrections ; ARGV: user, json
_CORRECT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""


def save_call(
    record: AnswerRecord,
    metric_updates: Sequence[tuple[str, float]],
    retention_s: int,
    dedup_s: int,
    finished: bool = True,
) -> dict[str, list[Any]]:
    """The keys and arguments of the script that stores an answer (sync or async client).
    Unless ``finished``, the question stays claimed for answering and its journal entry
    stays: the answer is stored before its feedback row is shown, and a process that dies
    in between must leave it to be answered again."""
    fields = record.to_hash()
    return {
        "keys": [
            keys.answer(record.answer_id),
            keys.STATS_ANSWERS,
            keys.user_answers(record.user_id),
            keys.bot_thread(record.channel_id, record.thread_ts),
            keys.claimed_message(record.channel_id, record.question_ts),
            keys.INFLIGHT,
            keys.METRICS,
            *(keys.message_answer(record.channel_id, ts) for ts in record.message_ts),
        ],
        "args": [
            retention_s,
            record.answer_id,
            repr(record.created_at),
            repr(record.created_at - STATS_WINDOW_S),
            dedup_s,
            AnswerState.DONE.value if finished else "",
            len(fields),
            *(item for pair in fields.items() for item in pair),
            *(item for update in metric_updates for item in (update[0], repr(update[1]))),
        ],
    }


class Store:
    """Reads and writes answers, votes and corrections; one per process, thread-safe."""

    def __init__(self, redis: Redis, *, retention_s: int, dedup_s: int = 3600) -> None:
        self.redis = redis
        self.retention_s = retention_s
        self.dedup_s = dedup_s
        self._vote = redis.register_script(_VOTE)
        self._correct = redis.register_script(_CORRECT)
        self._claim = redis.register_script(_CLAIM)
        self._take = redis.register_script(_TAKE)
        self._take_unposted = redis.register_script(_TAKE_UNPOSTED)
        self._requeue_stuck = redis.register_script(_REQUEUE_STUCK)
        self._save = redis.register_script(_SAVE)

    # --- answering -------------------------------------------------------------------
    def claim_message(
        self, channel_id: str, message_ts: str, *, journal_entry: str = "", thread_ts: str = ""
    ) -> str | None:
        """Take a user message for answering: one answer per message, whatever redelivers it.

        Returns None if another delivery took it first, else the current model id ("" for
        the configured base model), read in the same round trip. A ``journal_entry`` is
        recorded in the in-flight journal together with the claim, so no crash can leave
        a claimed message that nobody answers; ``thread_ts`` marks the answer's thread as
        one the bot speaks in at once, so a follow-up sent while the answer is still
        streaming is answered too.
        """
        claim_keys = [
            keys.claimed_message(channel_id, message_ts),
            keys.INFLIGHT,
            keys.CURRENT_MODEL,
        ]
        if thread_ts:
            claim_keys.append(keys.bot_thread(channel_id, thread_ts))
        model = self._claim(
            keys=claim_keys,
            args=[
                AnswerState.QUEUED.value,
                self.dedup_s,
                answer_id_for(channel_id, message_ts),
                journal_entry,
                self.retention_s,
            ],
        )
        return text_or_none(model)

    def finish_answering(self, channel_id: str, message_ts: str, state: AnswerState) -> None:
        """Answering a message ended (done, or failed and reported): no retry may post again,
        and its journal entry, if it had one, goes."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.claimed_message(channel_id, message_ts), state.value, ex=self.dedup_s)
        pipe.hdel(keys.INFLIGHT, answer_id_for(channel_id, message_ts))
        pipe.execute()

    def hand_to_queue(self, answer_id: str, enqueue: Callable[[Pipeline], object]) -> None:
        """Move an answer from the in-flight journal to the answer queue in one transaction:
        ``enqueue`` adds the job's writes to the pipeline, and the entry goes with them, so
        a crash leaves either the entry (recovered by the sweep) or the job, never neither."""
        pipe = self.redis.pipeline(transaction=True)
        enqueue(pipe)
        pipe.hdel(keys.INFLIGHT, answer_id)
        pipe.execute()

    def requeue_stuck_job(self, intermediate_key: str, queue_key: str, job_id: str) -> bool:
        """Move a job from an RQ queue's intermediate list back to the queue; True for
        exactly one caller (see :func:`bot.dispatch.StuckJobs`)."""
        return bool(self._requeue_stuck(keys=[intermediate_key, queue_key], args=[job_id]))

    def beat(self, owner: str, ttl_s: float) -> None:
        """A web process writing answers is alive for ``ttl_s`` more seconds."""
        self.redis.set(keys.answer_owner(owner), "1", px=int(ttl_s * 1000))

    def stop_beating(self, owner: str) -> None:
        """A web process stopped cleanly: its answers, if any are left, may be recovered now."""
        self.redis.delete(keys.answer_owner(owner))

    def inflight(self) -> dict[str, str]:
        """Every journal entry: answer id -> JSON written when the answer was claimed."""
        return text_hash(self.redis.hgetall(keys.INFLIGHT))

    def owner_alive(self, owner: str) -> bool:
        """Whether the web process ``owner`` has beaten within its TTL."""
        return bool(self.redis.exists(keys.answer_owner(owner)))

    def take_inflight(self, answer_id: str, entry: str) -> bool:
        """Remove a journal entry if it is still ``entry`` (a malformed one); True for
        exactly one caller."""
        return bool(self._take(keys=[keys.INFLIGHT], args=[answer_id, entry, ""]))

    def adopt_inflight(self, answer_id: str, entry: str, adopted: str) -> bool:
        """Replace a dead process's journal entry, if it is still ``entry``, by
        ``adopted`` (owned by the live process recovering it); True for exactly one
        caller. The entry stays in the journal until :meth:`hand_to_queue` moves it to
        the queue, so a recovering process killed in between leaves it to the next."""
        return bool(self._take(keys=[keys.INFLIGHT], args=[answer_id, entry, adopted]))

    def put_inflight(self, answer_id: str, entry: str) -> None:
        """Write a journal entry (updated by its owner)."""
        self.redis.hset(keys.INFLIGHT, answer_id, entry)

    def unposted(self) -> dict[str, str]:
        """Answers stored but not yet shown (Slack kept answering 429): id -> JSON."""
        return text_hash(self.redis.hgetall(keys.UNPOSTED))

    def take_unposted(self, answer_id: str, entry: str, owner: str) -> bool:
        """Take an unposted answer for posting by the web process ``owner``; True for
        exactly one live process. The answer stays in the hash until
        :meth:`posted_later`: if its taker dies (heartbeat expired) another takes it."""
        return bool(
            self._take_unposted(
                keys=[keys.UNPOSTED, keys.UNPOSTED_POSTING],
                args=[answer_id, entry, owner, keys.answer_owner("")],
            )
        )

    def release_unposted(self, answer_id: str) -> None:
        """Give back an unposted answer whose posting failed (tried again later)."""
        self.redis.hdel(keys.UNPOSTED_POSTING, answer_id)

    def drop_unposted(self, answer_id: str) -> None:
        """Forget an unposted answer that cannot be posted (malformed)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(keys.UNPOSTED, answer_id)
        pipe.hdel(keys.UNPOSTED_POSTING, answer_id)
        pipe.execute()

    def posted_later(self, answer_id: str, channel_id: str, message_ts: Sequence[str]) -> None:
        """An unposted answer is now shown: it leaves the unposted hash and its messages
        lead to it (votes count)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.answer(answer_id), "message_ts", json.dumps(list(message_ts)))
        for ts in message_ts:
            pipe.set(keys.message_answer(channel_id, ts), answer_id, ex=self.retention_s)
        pipe.hdel(keys.UNPOSTED, answer_id)
        pipe.hdel(keys.UNPOSTED_POSTING, answer_id)
        pipe.execute()

    def answer_state(self, channel_id: str, message_ts: str) -> AnswerState | None:
        """The state of answering a message, None if nobody claimed it."""
        value = self.redis.get(keys.claimed_message(channel_id, message_ts))
        return AnswerState(text(value)) if value else None

    def first_delivery(self, event_id: str) -> bool:
        """True the first time Slack's event id is seen (retries carry the same id)."""
        return bool(self.redis.set(keys.event_seen(event_id), "1", nx=True, ex=self.dedup_s))

    def in_bot_thread(self, channel_id: str, thread_ts: str) -> bool:
        """Whether the bot has answered in this thread (so follow-ups need no mention)."""
        return bool(self.redis.exists(keys.bot_thread(channel_id, thread_ts)))

    def current_model(self, default: str) -> str:
        """The model to answer with: the promoted one, else the configured base model."""
        value = self.redis.get(keys.CURRENT_MODEL)
        return text(value) if value else default

    def save_answer(
        self, record: AnswerRecord, metric_updates: Sequence[tuple[str, float]] = ()
    ) -> None:
        """Store a posted answer with its message index and thread flag, mark its question
        answered (as :meth:`finish_answering` does) and add ``metric_updates`` to the
        shared metrics, and add it to its model's satisfaction totals: all at once, in one
        MULTI and one round trip."""
        pipe = self.redis.pipeline(transaction=True)
        self._save(**save_call(record, metric_updates, self.retention_s, self.dedup_s), client=pipe)
        count_answer(pipe, record, self.retention_s)
        pipe.execute()

    # --- feedback ----------------------------------------------------------------------
    def answer_for_message(self, channel_id: str, message_ts: str) -> str | None:
        """The answer id a bot message belongs to, or None if it is not a stored answer."""
        value = self.redis.get(keys.message_answer(channel_id, message_ts))
        return text_or_none(value)

    def record_vote(
        self, answer_id: str, user_id: str, vote: Vote | None, source: VoteSource
    ) -> VoteResult:
        """Set (or, with ``vote=None``, withdraw) a user's vote on an answer, atomically.

        Withdrawing only removes a vote cast the same way: removing a reaction does not
        undo a button click.
        """
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        self._vote(
            client=pipe,
            keys=[
                keys.answer(answer_id),
                keys.votes(answer_id),
                keys.vote_sources(answer_id),
                keys.RATED,
                keys.STATS_VOTES,
                keys.user_answers(user_id),
            ],
            args=[
                answer_id,
                user_id,
                vote.value if vote else "",
                source.value,
                now,
                now - STATS_WINDOW_S,
                keys.MESSAGE_ANSWER_PREFIX,
            ],
        )
        satisfaction.sync_feedback(pipe, answer_id, user_id)  # per-model totals move with it
        result = pipe.execute()[0]
        return VoteResult(result.decode() if isinstance(result, bytes) else result)

    def add_correction(self, answer_id: str, user_id: str, text: str) -> bool:
        """Attach "what it should have said" to an answer; False if the answer is gone."""
        payload = json.dumps({"text": text, "at": time.time()}, ensure_ascii=False)
        pipe = self.redis.pipeline(transaction=True)
        self._correct(
            client=pipe,
            keys=[keys.answer(answer_id), keys.corrections(answer_id)],
            args=[user_id, payload],
        )
        satisfaction.sync_feedback(pipe, answer_id, user_id)  # per-model totals move with it
        return bool(pipe.execute()[0])

    def get_answer(self, answer_id: str) -> AnswerRecord | None:
        """The stored answer, or None if it never existed or expired."""
        raw = self.redis.hgetall(keys.answer(answer_id))
        return AnswerRecord.from_hash(raw) if raw else None

    def votes(self, answer_id: str) -> dict[str, Vote]:
        """User id -> vote for one answer."""
        raw = self.redis.hgetall(keys.votes(answer_id))
        return {user: Vote(vote) for user, vote in text_hash(raw).items()}

    def corrections(self, answer_id: str) -> dict[str, str]:
        """User id -> correction text for one answer."""
        raw = self.redis.hgetall(keys.corrections(answer_id))
        return {user: json.loads(value)["text"] for user, value in text_hash(raw).items()}

    # --- App Home ----------------------------------------------------------------------
    def weekly_stats(self, now: float | None = None) -> dict[str, int]:
        """Answers, thumbs-up and thumbs-down of the last 7 days."""
        now = time.time() if now is None else now
        start = now - STATS_WINDOW_S
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcount(keys.STATS_ANSWERS, start, "+inf")
        pipe.zrangebyscore(keys.STATS_VOTES, start, "+inf")
        answers, members = pipe.execute()
        up = sum(1 for m in members if m.endswith(b"|up"))
        return {"answers": int(answers), "up": up, "down": len(members) - up}


def count_answer(pipe: Pipeline | AsyncPipeline, record: AnswerRecord, retention_s: int) -> None:
    """Queue, in ``pipe``'s transaction with the answer's record, its addition to its
    model's satisfaction totals and cost (so an answer is counted exactly when stored)."""
    satisfaction.record_answer(
        pipe,
        answer_id=record.answer_id,
        model=record.model,
        channel_id=record.channel_id,
        created_at=record.created_at,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        cost=pricing.answer_cost(record.model, record.prompt_tokens, record.completion_tokens),
        retention_s=retention_s,
    )


class AsyncStore:
    """The answer path's writes through an async Redis client: an event loop holding
    hundreds of answers never waits on a socket. Same scripts and keys as :class:`Store`."""

    def __init__(self, redis: AsyncRedis, *, retention_s: int, dedup_s: int = 3600) -> None:
        self.redis = redis
        self.retention_s = retention_s
        self.dedup_s = dedup_s
        self._save = redis.register_script(_SAVE)

    async def save_answer(
        self,
        record: AnswerRecord,
        metric_updates: Sequence[tuple[str, float]] = (),
        *,
        finished: bool = True,
    ) -> None:
        """As :meth:`Store.save_answer`; with ``finished`` False the question stays
        claimed and journaled (see :func:`save_call`) until :meth:`finish_answering`."""
        async with self.redis.pipeline(transaction=True) as pipe:
            await self._save(
                **save_call(record, metric_updates, self.retention_s, self.dedup_s, finished),
                client=pipe,
            )
            count_answer(pipe, record, self.retention_s)
            await pipe.execute()

    async def save_unposted(
        self, record: AnswerRecord, metric_updates: Sequence[tuple[str, float]] = ()
    ) -> None:
        """Store an answer Slack refused to show (sustained 429) with its text waiting to
        be posted (see :meth:`Store.take_unposted`), in one transaction: the answer is
        never lost, nor answered again."""
        unposted = json.dumps(
            {
                "channel_id": record.channel_id,
                "thread_ts": record.thread_ts,
                "text": record.answer,
            },
            ensure_ascii=False,
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            await self._save(
                **save_call(record, metric_updates, self.retention_s, self.dedup_s), client=pipe
            )
            count_answer(pipe, record, self.retention_s)
            pipe.hset(keys.UNPOSTED, record.answer_id, unposted)
            await pipe.execute()

    async def finish_answering(self, channel_id: str, message_ts: str, state: AnswerState) -> None:
        """As :meth:`Store.finish_answering`."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.claimed_message(channel_id, message_ts), state.value, ex=self.dedup_s)
            pipe.hdel(keys.INFLIGHT, answer_id_for(channel_id, message_ts))
            await pipe.execute()

    async def put_inflight(self, answer_id: str, entry: str) -> None:
        """As :meth:`Store.put_inflight`."""
        await self.redis.hset(keys.INFLIGHT, answer_id, entry)

    async def current_model(self, default: str) -> str:
        """As :meth:`Store.current_model`."""
        value = await self.redis.get(keys.CURRENT_MODEL)
        return text(value) if value else default

    async def add_metrics(self, updates: Sequence[tuple[str, float]]) -> None:
        """Add to the shared metrics; never fails the caller (metrics are not worth an
        error)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for field, amount in updates:
                    pipe.hincrbyfloat(keys.METRICS, field, amount)
                await pipe.execute()
        except RedisError:
            pass
