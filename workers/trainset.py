"""Building an incremental training set from the approved log (an RQ job's main step).

Everything approved after the last consumed stream id becomes chat fine-tuning lines
(``{"messages": [system, user/assistant turns..., assistant]}``) exactly as the bot
used them, or preference pairs for DPO. On the way, PII is scrubbed
(:mod:`workers.pii`), exact and near-exact duplicates are dropped, every line is checked
by the training-data contract (:mod:`core.examples`) with the rules of the configured
trainer and the base model's limit, a replay sample of earlier examples is mixed in so
the continued model does not forget, and a validation split is taken that never
overlaps the training file.

Memory does not grow with the number of transcripts: the log is read in batches
(:mod:`workers.logread`), lines are written to disk as they are made, duplicate
detection keeps its hashes in a temporary Redis set, token statistics are a histogram
bounded by the token limit, and the validation split is a bounded heap (capped by
``max_validation_examples``). Time grows with the new examples, not the history: the
replay sample (at most ``replay_max``) comes from the reservoir kept at approval time.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis

from core import keys, replies
from core.errors import DatasetError
from core.examples import (
    CachedCounter,
    Code,
    Severity,
    content_images,
    count_chat_tokens,
    count_preference_tokens,
    examine_chat,
    example_limit,
    rules_for,
    text_of,
)
from core.pricing import default_epochs, price_for
from core.settings import ROOT, Settings, TrainerBackend, TrainingMethod
from core.tokens import TOKENS_PER_MESSAGE, content_image_tokens, counter_for_model, json_text
from workers.logread import READ_BATCH, last_id, prefetched, read_range, replay_sample
from workers.pii import might_hold_pii, scrub, scrub_parts
from workers.training.base import TrainingFiles

logger = logging.getLogger(__name__)

SEEN_TTL_S = 6 * 3600
"""The temporary de-duplication set outlives any build; a crashed build's set expires."""
MAX_CHARS_PER_TOKEN_BOUND = 4
"""A token covers at least one UTF-8 byte and a character is at most 4 bytes, so
``4 * characters`` bounds the tokens of a text from above without tokenising it."""
NOT_A_PAIR = "not_a_preference_pair"
"""Why a correction gives no preference pair (no rejected answer, or the same text);
every other reason a line is left out is a :class:`core.examples.Code` value."""
_NO_LIMIT = sys.maxsize
"""The limit given to the format checks: tokens are measured after PII scrubbing."""

__all__ = [
    "BuildRequest",
    "TrainSet",
    "build",
    "last_id",  # the log's newest id: where a build ends (from workers.logread)
    "latest_set_id",
    "load_manifest",
    "next_version",
    "normalise",
    "read_lines",
    "save_manifest",
    "sets_root",
]


# --- normalisation and hashing ----------------------------------------------------------
SEPARATOR = "\x1f"
"""Joins a line's texts before normalising; survives normalisation, so turns stay apart."""
_DROP = bytes(b for b in range(128) if not chr(b).isalnum() and b != 0x1F)


def normalise(text: str) -> bytes:
    """Case, whitespace and ASCII punctuation removed: near-exact copies compare equal.

    One ``bytes.translate`` (C) does the work; word boundaries go too, so texts that
    differ only in spacing or punctuation are the same example.
    """
    return text.lower().encode("utf-8", "replace").translate(None, _DROP)


def _with_weights(prefix: str, assistants: int) -> str | None:
    """The log's messages JSON with ``"weight":0`` added to every assistant turn but the
    last, by splicing rather than re-encoding; None when the text is not as expected.

    Inside a JSON string every quote is escaped, so the literal that opens an assistant
    message can only be a message's start; its content string is skipped with the C
    scanner, and the message must end right after it.
    """
    starts = []
    at = prefix.find(_ASSISTANT_AT)
    while at >= 0:
        starts.append(at)
        at = prefix.find(_ASSISTANT_AT, at + 1)
    if len(starts) != assistants:
        return None
    pieces = []
    done = 0
    for at in starts[:-1]:
        try:  # the content string, read from its opening quote
            _, end = _raw_decode(prefix, at + len(_ASSISTANT_AT) - 1)
        except ValueError:
            return None
        if prefix[end : end + 1] != "}":
            return None
        pieces += [prefix[done:end], ',"weight":0}']
        done = end + 1
    pieces.append(prefix[done:])
    return "".join(pieces)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


# --- one line ---------------------------------------------------------------------------
_loads = json.loads
_raw_decode = json.JSONDecoder().raw_decode
_MESSAGES_FIRST = '{"messages":'
_ASSISTANT_AT = '{"role":"assistant","content":"'
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


@dataclass
class _Line:
    """A converted example ready for de-duplication and writing."""

    data: bytes
    exact: int
    """hash() of the line: only compared within one build, in one process."""
    near: bytes
    counted: list[dict[str, Any]]
    """The messages whose tokens are this line's (for a pair: its input and chosen answer)."""
    chars: int
    """Characters of the counted text (bounds the tokens from above)."""
    warnings: list[str]
    rejected: str | None = None
    """A pair's rejected answer (the pair counts its longer output)."""
    image_tokens: int = 0
    """Tokens of the line's images (a fixed cost per image, outside ``chars``)."""
    tokens: int = 0
    """Set by :meth:`_Builder._measure`, after de-duplication."""
    exact_tokens: bool = False


class _TokenMeter:
    """Exact token counts for the first N examples and every k-th after; the rest are
    estimated from their length with the ratio measured so far (stated in the manifest).

    Exact counts are the contract's (:func:`core.examples.count_chat_tokens`), through a
    :class:`core.examples.CachedCounter` so the system prompt every line repeats is
    tokenised once."""

    def __init__(self, counter: CachedCounter, limit: int, exact_first: int, every: int) -> None:
        self.counter = counter
        self.limit = limit
        self.exact_first = exact_first
        self.every = every
        self.seen = 0
        self.exact_tokens = 0
        self.exact_chars = 0
        self.exact_examples = 0

    def measure(
        self,
        messages: list[dict[str, Any]],
        chars: int,
        rejected: str | None = None,
        image_tokens: int = 0,
    ) -> tuple[int, bool]:
        """Tokens of a line's messages (framing included), exact or estimated; with
        ``rejected``, of the preference pair whose input and chosen answer they are.

        A line whose length bound could exceed the limit is always counted exactly, so the
        per-example limit is enforced exactly whatever is sampled. Images cost the same
        in both ways (``image_tokens``, the contract's per-image cost), so only text
        is estimated from its length.
        """
        self.seen += 1
        bound = (
            MAX_CHARS_PER_TOKEN_BOUND * chars
            + (TOKENS_PER_MESSAGE + 2) * len(messages)
            + 8
            + image_tokens
        )
        exact = (
            self.seen <= self.exact_first
            or self.seen % self.every == 0
            or bound > self.limit
            or not self.exact_chars
        )
        if not exact:
            text = round(chars * self.exact_tokens / self.exact_chars)
            return max(1, text + image_tokens), False
        if rejected is None:
            tokens = count_chat_tokens(messages, self.counter)
        else:
            chosen = str(messages[-1]["content"])
            tokens = count_preference_tokens(messages[:-1], chosen, rejected, self.counter)
        self.exact_tokens += tokens - image_tokens
        self.exact_chars += max(chars, 1)
        self.exact_examples += 1
        return tokens, True


class _TokenStats:
    """Token distribution in bounded memory: a histogram keyed by token count."""

    def __init__(self) -> None:
        self.histogram: Counter[int] = Counter()
        self.total = 0
        self.count = 0
        self.estimated = 0

    def add(self, tokens: int, exact: bool) -> None:
        self.histogram[tokens] += 1
        self.total += tokens
        self.count += 1
        if not exact:
            self.estimated += 1

    def quantile(self, q: float) -> int:
        if not self.count:
            return 0
        target = q * (self.count - 1)
        seen = 0
        for value in sorted(self.histogram):
            seen += self.histogram[value]
            if seen > target:
                return value
        return max(self.histogram)

    def summary(self) -> dict[str, Any]:
        if not self.count:
            return {"examples": 0, "total": 0}
        return {
            "examples": self.count,
            "total": self.total,
            "min": min(self.histogram),
            "max": max(self.histogram),
            "mean": round(self.total / self.count, 1),
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "estimated_examples": self.estimated,
        }


_DEDUP = """
local out = {}
for i = 2, #ARGV, 2 do
  if redis.call('SADD', KEYS[1], 'e' .. ARGV[i]) == 0 then out[#out + 1] = '1'
  elseif redis.call('SADD', KEYS[1], 'n' .. ARGV[i + 1]) == 0 then out[#out + 1] = '2'
  else out[#out + 1] = '0' end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return table.concat(out)
"""


# --- the build --------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildRequest:
    """What to build: plain values, so a job can pass them along."""

    set_id: str
    version: int
    after_id: str
    upto_id: str | None
    base_model: str
    min_train: int
    run_id: str = ""


@dataclass(frozen=True)
class TrainSet:
    """A built set: its files, its manifest (counts, tokens, cost) and held-out hashes."""

    files: TrainingFiles
    manifest: dict[str, Any]
    heldout: tuple[str, ...] = field(default=())

    @property
    def n_new(self) -> int:
        """Usable new examples (after de-duplication and checks), before the split."""
        return int(self.manifest["counts"]["new_examples"])

    @property
    def missing(self) -> int:
        """How many more usable examples the provider's minimum needs (0 when enough)."""
        return max(0, int(self.manifest["min_train"]) - self.n_new)


def sets_root(settings: Settings) -> Path:
    """The folder of built sets (a relative setting is under the project root)."""
    path = Path(settings.training.sets_dir).expanduser()
    return path if path.is_absolute() else ROOT / path


def next_version(redis: Redis) -> tuple[str, int]:
    """A new set id and version number (``set-0007``, 7)."""
    version = int(redis.incr(keys.TRAINSET_SEQ))
    return f"set-{version:04d}", version


class _Builder:
    """One build: converts, de-duplicates, splits and writes; see :func:`build`."""

    def _price_per_m(self) -> float | None:
        """The provider's training price; a self-hosted run has no bill to estimate."""
        if self.settings.training.backend is not TrainerBackend.OPENAI:
            return None
        price = price_for(self.request.base_model)
        return price.per_million if price else None

    def __init__(self, redis: Redis, settings: Settings, request: BuildRequest, out_dir: Path):
        self.redis = redis
        self.settings = settings
        self.training = settings.training
        self.request = request
        self.method = self.training.method
        self.pii = self.training.pii
        self.limit = example_limit(request.base_model, self.training.max_example_tokens)
        self.rules = rules_for(self.training.backend)
        counter = counter_for_model(request.base_model)
        self.counter = CachedCounter(counter)
        self.tokens = _TokenMeter(
            self.counter,
            self.limit,
            self.training.exact_token_examples,
            self.training.token_sample_every,
        )
        self.counter_source = counter.source
        self.counter_exact = counter.exact
        self.stats = _TokenStats()
        self.issues: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()
        self.pii_tally: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.train_tokens = 0
        self.out_dir = out_dir
        self.seen_key = keys.trainset_seen(request.set_id)
        self._dedup = redis.register_script(_DEDUP)
        self.valid_cap = self.training.max_validation_examples
        self._heap: list[tuple[int, int, bytes, bytes]] = []  # (-hash, tokens, near, line)
        self.heartbeat: Callable[[], None] = lambda: None

    # -- conversion --
    def convert(self, raw: bytes) -> _Line | str:
        """One approved example as a line, or the issue that keeps it out.

        This is the hot loop of a 100k-example build: the contract's checks
        (:func:`core.examples.examine_chat`, with the rules of the configured trainer)
        decide whether the line is valid, then PII is looked for once over the whole
        example and scrubbed message by message only where it could be. The log's
        examples end with the approved answer, so the last message must be the
        assistant's, with text.
        """
        dpo = self.method is TrainingMethod.DPO
        text_raw = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        prefix = None
        example: dict[str, Any] | None = None
        messages: Any = None
        if not dpo and text_raw.startswith(_MESSAGES_FIRST):
            # The log's JSON starts with the messages: parse only them, and keep their
            # text to reuse as the line when nothing in them changes.
            try:
                messages, end = _raw_decode(text_raw, len(_MESSAGES_FIRST))
                prefix = text_raw[:end]
            except ValueError:
                prefix = None
        if prefix is None:
            try:
                parsed = _loads(text_raw)
            except ValueError:
                return Code.DATA_TYPE.value
            if type(parsed) is not dict:
                return Code.DATA_TYPE.value
            example = parsed
            messages = parsed.get("messages")
        findings = examine_chat(
            {"messages": messages}, self.counter, _NO_LIMIT, count_all=False, rules=self.rules
        ).findings
        warnings = []
        for finding in findings:
            if finding.severity is Severity.ERROR:
                return finding.code.value
            warnings.append(finding.code.value)
        last = messages[-1]
        if last.get("role") != "assistant":
            return Code.EXAMPLE_MISSING_ASSISTANT_MESSAGE.value
        texts: list[str] = []
        assistants = 0
        extra_chars = 0
        with_parts = False
        for message in messages:
            content = message.get("content")
            if type(content) is str:
                texts.append(content)
            else:
                texts.append(text_of(content))
                with_parts = with_parts or type(content) is list
            if message["role"] == "assistant":
                assistants += 1
            if len(message) > 2:
                call = message.get("tool_calls") or message.get("function_call")
                if call:
                    extra_chars += len(json_text(call))
        if not texts[-1].strip():
            return Code.MISSING_CONTENT.value
        earlier_answers = assistants > 1
        joined = SEPARATOR.join(texts)
        changed = False
        normalised = normalise(joined)
        # What each message's content becomes: its (scrubbed) text, or for a list content
        # (text and images) the parts themselves, their text parts scrubbed.
        contents: list[Any] = texts
        if with_parts:
            contents = [
                m["content"] if type(m.get("content")) is list else text
                for m, text in zip(messages, texts, strict=True)
            ]
        if might_hold_pii(joined, normalised, self.pii):
            scrubbed = [
                scrub_parts(content, self.pii, self.pii_tally)
                if type(content) is list
                else scrub(content, self.pii, self.pii_tally)
                for content in contents
            ]
            if scrubbed != contents:
                changed = True
                contents = scrubbed
                texts = [text_of(c) if isinstance(c, list) else c for c in contents]
                joined = SEPARATOR.join(texts)
                normalised = normalise(joined)
        pictures = b""
        image_tokens = 0
        if with_parts:
            # Near-duplicates are the same text with the same images.
            for content in contents:
                image_tokens += content_image_tokens(content)
                for part in content_images(content):
                    pictures += _digest(json_text(part).encode("utf-8"))
        if dpo:
            return self._preference(
                messages, contents, joined, (example or {}).get("rejected"), warnings, pictures
            )
        line = self._chat(
            messages,
            contents,
            joined,
            normalised + pictures,
            changed,
            earlier_answers,
            prefix,
            extra_chars,
            warnings,
        )
        if image_tokens and isinstance(line, _Line):
            line.image_tokens = image_tokens
        return line

    def _chat(
        self,
        messages: list[dict[str, Any]],
        contents: list[Any],
        joined: str,
        normalised: bytes,
        changed: bool,
        earlier_answers: bool,
        prefix: str | None,
        extra_chars: int,
        warnings: list[str],
    ) -> _Line | str:
        """A supervised line; reuses the log's own JSON when only weights had to change."""
        clean = messages
        if earlier_answers and prefix is not None and not changed:
            assistants = sum(1 for m in messages if m["role"] == "assistant")
            weighted = _with_weights(prefix, assistants)
            if weighted is not None:
                data = (weighted + "}").encode("utf-8")
                chars = len(joined) + extra_chars
                return _Line(data, hash(data), _digest(normalised), messages, chars, warnings)
        if changed or earlier_answers:
            clean = []
            last = len(messages) - 1
            for i, message in enumerate(messages):
                if i != last and message["role"] == "assistant":
                    # Only the approved last turn is learned; earlier answers are context.
                    clean.append({**message, "content": contents[i], "weight": 0})
                    changed = True
                elif changed and message["content"] != contents[i]:
                    clean.append({**message, "content": contents[i]})
                else:
                    clean.append(message)
        if prefix is not None and not changed:
            data = (prefix + "}").encode("utf-8")
        else:
            data = _ENCODER.encode({"messages": clean}).encode("utf-8")
        chars = len(joined) + extra_chars
        return _Line(data, hash(data), _digest(normalised), clean, chars, warnings)

    def _preference(
        self,
        messages: list[dict[str, Any]],
        contents: list[Any],
        joined: str,
        rejected: Any,
        warnings: list[str],
        pictures: bytes,
    ) -> _Line | str:
        """A preference pair: the approved (corrected) answer over the one it replaced;
        ``pictures`` identifies the input's images for near-duplicate detection."""
        if not isinstance(rejected, str) or not rejected.strip():
            return NOT_A_PAIR
        rejected = scrub(rejected, self.pii, self.pii_tally)
        chosen = contents[-1]
        if normalise(chosen) == normalise(rejected):
            return NOT_A_PAIR
        context = [
            {**{k: v for k, v in m.items() if k != "weight"}, "content": text}
            for m, text in zip(messages[:-1], contents, strict=False)
        ]
        line = {
            "input": {"messages": context},
            "preferred_output": [{"role": "assistant", "content": chosen}],
            "non_preferred_output": [{"role": "assistant", "content": rejected}],
        }
        # Limited and billed as the contract counts a pair: the input with the longer output.
        counted = [*context, {"role": "assistant", "content": chosen}]
        data = _ENCODER.encode(line).encode("utf-8")
        near = _digest(normalise(joined + SEPARATOR + rejected) + pictures)
        chars = len(joined) + len(rejected)
        return _Line(data, hash(data), near, counted, chars, warnings, rejected)

    # -- de-duplication --
    def _new_lines(self, lines: list[_Line]) -> list[_Line]:
        if not lines:
            return []
        args: list[Any] = [SEEN_TTL_S]
        for line in lines:
            args += [line.exact.to_bytes(8, "big", signed=True), line.near]
        verdicts = self._dedup(keys=[self.seen_key], args=args)
        verdicts = verdicts.decode() if isinstance(verdicts, bytes) else str(verdicts)
        kept = []
        for line, verdict in zip(lines, verdicts, strict=True):
            if verdict == "0":
                kept.append(line)
            elif verdict == "1":
                self.counts["exact_duplicates"] += 1
            else:
                self.counts["near_duplicates"] += 1
        return kept

    def _convert_batch(self, raws: list[bytes]) -> list[_Line]:
        """Convert, drop duplicates, then measure tokens (so duplicates cost no counting)."""
        lines: list[_Line] = []
        for raw in raws:
            result = self.convert(raw)
            if isinstance(result, str):
                self.issues[result] += 1
            else:
                lines.append(result)
        return [line for line in self._new_lines(lines) if self._measure(line)]

    def _measure(self, line: _Line) -> bool:
        """Count a line's tokens; False (and an issue) when it is over the limit."""
        line.tokens, line.exact_tokens = self.tokens.measure(
            line.counted, line.chars, line.rejected, line.image_tokens
        )
        if line.tokens > self.limit:
            self.issues[Code.TOO_MANY_TOKENS.value] += 1
            return False
        self.warnings.update(line.warnings)
        return True

    # -- the passes --
    def run(self) -> TrainSet:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        train_tmp = self.out_dir / "train.jsonl.part"
        try:
            with train_tmp.open("wb", buffering=1 << 20) as train:
                self._new_pass(train)
                n_new = self.counts["new_examples"]
                n_valid = self._n_valid(n_new)
                valid_lines, heldout = self._split(train, n_valid)
                self._replay_pass(train, n_new - n_valid)
            return self._finish(train_tmp, valid_lines, heldout)
        finally:
            self.redis.delete(self.seen_key)
            if train_tmp.exists():
                train_tmp.unlink()

    def _new_pass(self, train: Any) -> None:
        request = self.request
        for batch in prefetched(read_range(self.redis, request.after_id, request.upto_id)):
            self.counts["read"] += len(batch)
            for line in self._convert_batch([raw for _, raw in batch]):
                self.counts["new_examples"] += 1
                self.stats.add(line.tokens, line.exact_tokens)
                self._offer_valid(train, line)
            self.heartbeat()

    def _offer_valid(self, train: Any, line: _Line) -> None:
        """Keep the ``valid_cap`` lines with the smallest content hash; write the rest."""
        rank = int.from_bytes(line.near, "big")
        if self.valid_cap == 0:
            self._write_train(train, line.data, line.tokens)
            return
        item = (-rank, line.tokens, line.near, line.data)
        if len(self._heap) < self.valid_cap:
            heapq.heappush(self._heap, item)
            return
        if -self._heap[0][0] > rank:
            _, tokens, _, data = heapq.heapreplace(self._heap, item)
        else:
            tokens, data = line.tokens, line.data
        self._write_train(train, data, tokens)

    def _write_train(self, train: Any, data: bytes, tokens: int) -> None:
        train.write(data)
        train.write(b"\n")
        self.counts["train"] += 1
        self.train_tokens += tokens

    def _n_valid(self, n_new: int) -> int:
        fraction = self.training.validation_fraction
        if fraction <= 0 or n_new < 2 or self.valid_cap == 0:
            return 0
        n_valid = min(max(1, round(n_new * fraction)), self.valid_cap)
        if n_new - n_valid < self.request.min_train:
            n_valid = max(0, n_new - self.request.min_train)
        return n_valid

    def _split(self, train: Any, n_valid: int) -> tuple[list[bytes], tuple[str, ...]]:
        ordered = sorted(self._heap, key=lambda item: -item[0])  # smallest hash first
        self._heap = []
        valid = ordered[:n_valid]
        for _, tokens, _, data in ordered[n_valid:]:
            self._write_train(train, data, tokens)
        self.counts["valid"] = len(valid)
        self.counts["train_new"] = self.counts["train"]
        return [data for _, _, _, data in valid], tuple(near.hex() for _, _, near, _ in valid)

    def _replay_pass(self, train: Any, n_train_new: int) -> None:
        """Mix in a uniform sample of earlier (consumed) approved examples, training file
        only, drawn from the reservoir kept at approval time: the cost grows with the
        sample, not with the history. Held-out validation examples are never replayed."""
        fraction = self.training.replay_fraction
        if fraction <= 0 or n_train_new <= 0 or self.request.after_id in ("0", "0-0"):
            return
        k = min(self.training.replay_max, math.ceil(n_train_new * fraction))
        if k <= 0:
            return
        rng = random.Random(f"{self.training.seed}:{self.request.set_id}")
        candidates, sample = replay_sample(self.redis, self.request.after_id, k, rng)
        self.heartbeat()
        self.counts["replay_candidates"] = candidates
        if not sample:
            return
        lines = []
        for start in range(0, len(sample), READ_BATCH):
            issues_before = sum(self.issues.values())
            lines += self._convert_batch(sample[start : start + READ_BATCH])
            self.counts["replay_rejected"] += sum(self.issues.values()) - issues_before
        if lines:
            heldout = self.redis.smismember(keys.HELDOUT, [line.near.hex() for line in lines])
            for line, held in zip(lines, heldout, strict=True):
                if held:
                    self.counts["replay_heldout"] += 1
                    continue
                self.counts["replay"] += 1
                self.stats.add(line.tokens, line.exact_tokens)
                self._write_train(train, line.data, line.tokens)

    def _finish(
        self, train_tmp: Path, valid_lines: list[bytes], heldout: tuple[str, ...]
    ) -> TrainSet:
        train_path = self.out_dir / "train.jsonl"
        os.replace(train_tmp, train_path)
        valid_path: Path | None = None
        if valid_lines:
            valid_path = self.out_dir / "valid.jsonl"
            with valid_path.open("wb") as out:
                for data in valid_lines:
                    out.write(data)
                    out.write(b"\n")
        n_train = self.counts["train"]
        configured = self.training.openai.n_epochs
        epochs = configured or default_epochs(n_train)
        billed = epochs * self.train_tokens
        price = self._price_per_m()
        manifest = {
            "set_id": self.request.set_id,
            "version": self.request.version,
            "run_id": self.request.run_id,
            "created_at": time.time(),
            "method": self.method.value,
            "base_model": self.request.base_model,
            "after_id": self.request.after_id,
            "upto_id": self.request.upto_id,
            "min_train": self.request.min_train,
            "counts": {
                "read": self.counts["read"],
                "new_examples": self.counts["new_examples"],
                "exact_duplicates": self.counts["exact_duplicates"],
                "near_duplicates": self.counts["near_duplicates"],
                "invalid": sum(self.issues.values()),
                "train": n_train,
                "train_new": self.counts["train_new"],
                "valid": self.counts["valid"],
                "replay": self.counts["replay"],
                "replay_candidates": self.counts["replay_candidates"],
                "replay_heldout": self.counts["replay_heldout"],
            },
            "issues": dict(self.issues),
            "warnings": dict(self.warnings),
            "pii_scrubbed": dict(self.pii_tally),
            "tokens": {
                **self.stats.summary(),
                "train_total": self.train_tokens,
                "limit": self.limit,
                "counter": self.counter_source,
                "exact_counter": self.counter_exact,
                "exactly_counted": self.tokens.exact_examples,
            },
            "estimate": {
                "epochs": epochs,
                "epochs_configured": bool(configured),
                "billed_tokens": billed,
                "price_per_m_tokens": price,
                "cost_usd": round(billed / 1e6 * price, 4) if price is not None else None,
            },
            "files": {
                "train": str(train_path),
                "valid": str(valid_path) if valid_path else None,
            },
        }
        (self.out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
        files = TrainingFiles(
            set_id=self.request.set_id,
            method=self.method,
            train_path=train_path,
            valid_path=valid_path,
            n_train=n_train,
            n_valid=self.counts["valid"],
        )
        return TrainSet(files=files, manifest=manifest, heldout=heldout)


def build(
    redis: Redis,
    settings: Settings,
    request: BuildRequest,
    *,
    heartbeat: Callable[[], None] | None = None,
) -> TrainSet:
    """Build the set ``request`` describes into ``sets_dir/<set id>/`` and record it.

    ``heartbeat`` is called after every batch so a supervisor can tell a long build from
    a dead one. The manifest is stored in Redis (``keys.trainset``) and on disk.
    """
    out_dir = sets_root(settings) / request.set_id
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a crashed earlier attempt at the same set
    builder = _Builder(redis, settings, request, out_dir)
    if heartbeat is not None:
        builder.heartbeat = heartbeat
    result = builder.run()
    save_manifest(redis, result.manifest)
    logger.info(
        "built %s: %d new, %d train, %d valid, %d replayed",
        request.set_id,
        result.n_new,
        result.files.n_train,
        result.files.n_valid,
        result.manifest["counts"]["replay"],
    )
    return result


def save_manifest(redis: Redis, manifest: dict[str, Any]) -> None:
    """Record a set's manifest and list it (newest last)."""
    pipe = redis.pipeline(transaction=True)
    pipe.set(keys.trainset(manifest["set_id"]), json.dumps(manifest))
    pipe.zadd(keys.TRAINSETS, {manifest["set_id"]: manifest["created_at"]})
    pipe.execute()


def load_manifest(redis: Redis, set_id: str) -> dict[str, Any] | None:
    """A set's manifest, None when unknown."""
    raw = redis.get(keys.trainset(set_id))
    return json.loads(raw) if raw else None


def latest_set_id(redis: Redis) -> str | None:
    """The id of the newest built set."""
    newest = replies.members(redis.zrevrange(keys.TRAINSETS, 0, 0))
    return newest[0] if newest else None


def read_lines(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The parsed lines of a set file (validation examples for evaluation)."""
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    with path.open("rb") as f:
        for n, raw in enumerate(f):
            if limit is not None and n >= limit:
                return
            try:
                yield json.loads(raw)
            except ValueError as exc:
                raise DatasetError(f"{path}:{n + 1}: not JSON ({exc})") from None
