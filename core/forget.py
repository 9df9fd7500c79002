"""Deleting everything tuneloop's Redis holds of one Slack user (forget-me, forget @user).

A user's data is not only under their own keys: their votes and corrections sit in
hashes of other people's answers, their id in vote statistics, their questions (and the
bot's answers to them) inside the transcripts of people who asked later in the same
thread, and all of it in approved examples, the training-set files built from those and
the files uploaded to the provider. This module finds and deletes what is in Redis;
``workers.forget`` deletes the training files of the runs it reports.

What identifies the user's texts: their questions (the question of each transcript they
asked) and their corrections, and the bot's answers to their questions. A message of
theirs that the bot never answered (written in a thread before anyone asked the bot) is
not known to tuneloop as theirs.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from redis import Redis
from rq.job import Job, JobStatus
from rq.results import Result

from core import approved, exports, keys
from core.replies import binary, entries, text, text_or_none
from core.store import AnswerRecord, Store

REMOVED = "[removed]"
"""What replaces a forgotten user's message inside another person's transcript."""
FORGOTTEN_USER = "forgotten-user"
"""Who the admin log names for an action of a user whose data was deleted."""
_FINISHED_JOBS = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


@dataclass(frozen=True)
class Forgotten:
    """What deleting a user's data removed from Redis."""

    answers: int
    """Transcripts of their questions (with everyone's votes and corrections on them)."""
    votes: int
    """Their votes on other people's answers."""
    corrections: int
    """Their corrections of other people's answers."""
    examples: int
    """Approved examples holding anything of theirs (pending or already trained on)."""
    scrubbed: int
    """Other people's transcripts their messages were removed from."""
    trained_since: str | None
    """The oldest approved-log id of a deleted example a training run had consumed: every
    set built from the log since then may hold their data (``None``: no run used any)."""


def _as_text(content: object) -> str:
    """A message's content as one comparable text: a string as it is, a list of parts
    (text and attached images) as its canonical JSON, so a question with an image is
    found, image included, wherever it was copied whole."""
    if isinstance(content, str):
        return content
    if not content:
        return ""
    return json.dumps(content, sort_keys=True, ensure_ascii=False)


def _paragraph_of(content: str, texts: Iterable[str]) -> bool:
    """Whether ``content`` is one of ``texts`` or holds one as a whole paragraph
    (consecutive messages of one role are joined with blank lines in the prompt)."""
    for known in texts:
        if content == known or (
            known
            and (
                content.startswith(known + "\n\n")
                or content.endswith("\n\n" + known)
                or f"\n\n{known}\n\n" in content
            )
        ):
            return True
    return False


@dataclass(frozen=True)
class _Texts:
    """What identifies the user's content."""

    questions: frozenset[str]
    answers: frozenset[str]
    corrections: frozenset[str]

    def in_messages(self, messages: list[dict]) -> list[int]:
        """Indexes of the messages that are (or hold) the user's content."""
        out = []
        for i, message in enumerate(messages):
            content = _as_text(message.get("content"))
            role = message.get("role")
            if (
                role == "user"
                and _paragraph_of(content, self.questions)
                or role == "assistant"
                and _paragraph_of(content, self.answers | self.corrections)
            ):
                out.append(i)
        return out


def _answer_ids(redis: Redis, pattern_key: str) -> Iterable[tuple[str, str]]:
    """(key, answer id) of every key made by one of the ``keys`` answer-id functions."""
    prefix = pattern_key[:-1]
    for raw in redis.scan_iter(match=pattern_key, count=1000):
        key = text(raw)
        yield key, key[len(prefix) :]


def forget_user(store: Store, user_id: str) -> Forgotten:
    """Delete what Redis holds of ``user_id``; the caller deletes the training files.

    Slow by design (it scans every answer and the whole approved log): deleting a user
    is rare, and it must find their data wherever it was copied to.
    """
    redis = store.redis
    touched = {text(m) for m in redis.smembers(keys.user_answers(user_id))}
    for pattern in (keys.votes("*"), keys.vote_sources("*"), keys.corrections("*")):
        for key, answer_id in _answer_ids(redis, pattern):
            if redis.hexists(key, user_id):
                touched.add(answer_id)

    asked: dict[str, AnswerRecord] = {}
    corrections: set[str] = set()
    votes = corrected = 0
    for answer_id in touched:
        record = store.get_answer(answer_id)
        if record is not None and record.user_id == user_id:
            asked[answer_id] = record
            continue
        raw = redis.hget(keys.corrections(answer_id), user_id)
        if raw is not None:
            corrections.add(json.loads(raw)["text"])
        pipe = redis.pipeline(transaction=True)
        pipe.hdel(keys.votes(answer_id), user_id)
        pipe.hdel(keys.vote_sources(answer_id), user_id)
        pipe.hdel(keys.corrections(answer_id), user_id)
        # What the satisfaction totals remember having counted of them (the totals stay).
        pipe.hdel(keys.sat_counted(answer_id), f"v:{user_id}", f"c:{user_id}")
        removed_vote, _, removed_correction, _ = pipe.execute()
        votes += removed_vote
        corrected += removed_correction

    texts = _Texts(
        questions=frozenset(q for r in asked.values() if (q := _question(r))),
        answers=frozenset(r.answer for r in asked.values() if r.answer),
        corrections=frozenset(corrections),
    )
    for answer_id, record in asked.items():
        pipe = redis.pipeline(transaction=True)
        for ts in record.message_ts:
            pipe.delete(keys.message_answer(record.channel_id, ts))
        pipe.delete(
            keys.answer(answer_id),
            keys.votes(answer_id),
            keys.vote_sources(answer_id),
            keys.corrections(answer_id),
            keys.sat_counted(answer_id),
        )
        pipe.zrem(keys.RATED, answer_id)
        pipe.zrem(keys.STATS_ANSWERS, answer_id)
        pipe.hdel(keys.REVIEWED, answer_id)
        pipe.execute()

    stats = [m for m, _ in redis.zscan_iter(keys.STATS_VOTES, match=f"*|{user_id}|*")]
    if stats:
        redis.zrem(keys.STATS_VOTES, *stats)
    threads = {(r.channel_id, r.thread_ts) for r in asked.values()}
    scrubbed = _scrub_transcripts(store, threads, texts)
    examples, trained_since = _remove_examples(redis, set(asked), texts)
    _remove_admin_log_entries(redis, user_id)
    _remove_finished_jobs(redis, user_id, texts)
    exports.discard_all(redis)  # a set waiting for an admin's DM may hold the user's data
    # What the agent experience keeps of them: what they were looking at and whether
    # they were greeted; and everything named by their DM with the app (which their DM
    # questions name): its view, thread titles and flags, its satisfaction totals.
    redis.delete(keys.user_answers(user_id), keys.viewing(user_id), keys.greeted(user_id))
    for dm in sorted({r.channel_id for r in asked.values() if r.channel_id.startswith("D")}):
        _remove_dm(redis, dm)
    return Forgotten(len(asked), votes, corrected, examples, scrubbed, trained_since)


def _remove_dm(redis: Redis, dm: str) -> None:
    """Delete every key named by a user's DM with the app (only they write there) and its
    fields in the per-channel satisfaction totals."""
    named = [
        raw
        for raw in redis.scan_iter(match=f"{keys.PREFIX}*", count=1000)
        if f":{dm}:" in (key := text(raw)) or key.endswith(f":{dm}")
    ]
    if named:
        redis.delete(*named)
    for raw in redis.scan_iter(match=keys.sat_channels("*"), count=1000):
        fields = [field for field, _ in redis.hscan_iter(raw, match=f"{dm}|*")]
        if fields:
            redis.hdel(raw, *fields)


def _question(record: AnswerRecord) -> str:
    for message in reversed(record.messages):
        if message.get("role") == "user":
            return _as_text(message.get("content"))
    return ""


def _scrub_transcripts(store: Store, threads: set[tuple[str, str]], texts: _Texts) -> int:
    """Replace the user's messages (and the bot's answers to them) in the transcripts of
    people who asked later in the same threads; how many transcripts changed."""
    if not threads:
        return 0
    redis = store.redis
    changed = 0
    for key, _ in _answer_ids(redis, keys.answer("*")):
        channel, thread, raw = redis.hmget(key, "channel_id", "thread_ts", "messages")
        if raw is None or (text_or_none(channel), text_or_none(thread)) not in threads:
            continue
        messages = json.loads(raw)
        hits = texts.in_messages(messages)
        if not hits:
            continue
        for i in hits:
            messages[i] = {**messages[i], "content": REMOVED}
        redis.hset(key, "messages", json.dumps(messages, ensure_ascii=False))
        changed += 1
    return changed


def _remove_examples(redis: Redis, asked: set[str], texts: _Texts) -> tuple[int, str | None]:
    """Delete every approved example from the user's transcripts or holding their texts,
    whether or not a run consumed it; (how many, the oldest consumed one's id)."""
    cursor = text_or_none(redis.get(keys.APPROVED_CURSOR))
    consumed_upto = approved.position(cursor) if cursor else None
    doomed = [
        (entry_id, example)
        for entry_id, example in approved.read_after(redis)
        if example.answer_id in asked
        or texts.in_messages(example.messages)
        or (example.rejected is not None and example.rejected in texts.answers)
    ]
    approved.remove(redis, doomed)
    consumed = [
        entry_id
        for entry_id, _ in doomed
        if consumed_upto is not None and approved.position(entry_id) <= consumed_upto
    ]
    return len(doomed), min(consumed, key=approved.position) if consumed else None


def _remove_admin_log_entries(redis: Redis, user_id: str) -> None:
    """The admin log keeps no trace of a forgotten user: entries naming them go (the
    deletion itself is logged under :data:`FORGOTTEN_USER`)."""
    naming = [
        entry_id
        for entry_id, fields in entries(redis.xrange(keys.ADMIN_LOG))
        if any(user_id in value for value in fields.values())
    ]
    if naming:
        redis.xdel(keys.ADMIN_LOG, *naming)


def _remove_finished_jobs(redis: Redis, user_id: str, texts: _Texts) -> None:
    """RQ keeps finished jobs (arguments, results) for a while: delete those that carried
    the user's id or texts. Jobs still queued or running are left to finish."""
    needles = [user_id, *texts.questions, *texts.corrections]
    for raw in redis.scan_iter(match="rq:job:*", count=1000):
        key = text(raw)
        if key.count(":") != 2:  # the job hash only (rq:job:<id>), not its sub-keys
            continue
        fields = redis.hgetall(key)
        blob = b" ".join(_readable(binary(v)) for v in fields.values())
        if not any(n.encode() in blob for n in needles):
            continue
        job = Job.fetch(key.split(":", 2)[2], connection=redis)
        if job.get_status(refresh=False) in _FINISHED_JOBS:
            Result.delete_all(job)
            job.delete()


def _readable(value: bytes) -> bytes:
    """A job field as stored, or decompressed when RQ compressed it (its ``data``)."""
    try:
        return zlib.decompress(value)
    except zlib.error:
        return value
