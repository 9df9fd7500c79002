"""The evaluation gate: does a freshly trained model answer at least as well as the current one?

Both models answer the same questions: the held-out validation examples of the run's
training set (the approved answer is the expected one), the golden questions of
``config/eval.yaml`` (questions with expected answers, and off-topic questions the bot
should decline) and the golden examples admins marked in ``/finetune review``
(``keys.GOLDEN``). Every answer gets a score in [0, 1] from the configured scorer (the
LLM judge whenever ``evaluation.judge_model`` is set), a model's score is the mean, and
each question is a win, loss or tie for the candidate. The candidate passes unless it is
worse than the current model by more than the configured tolerance, or loses
significantly more questions than it wins (two-sided sign test below
``SIGN_TEST_ALPHA``): a mean alone hides whether a difference is more than noise.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import openai
import yaml
from openai import OpenAI
from redis import Redis

from core import keys
from core.errors import ConfigError, ModelError
from core.llm import complete
from core.satisfaction import sign_test
from core.settings import ROOT, Scorer, Settings

logger = logging.getLogger(__name__)

VALIDATION = "validation"
GOLDEN = "golden"
OFF_TOPIC = "off_topic"
DEFAULT_DECLINE_MARKERS = (
    "i can't help",
    "i cannot help",
    "i can only help",
    "i'm not able to help",
    "i am not able to help",
    "outside what i can",
    "not something i can help",
    "i don't know",
    "i do not know",
)
JUDGE_PROMPT = (
    "You grade a chat assistant's answer against a reference answer. Reply with one "
    "integer from 0 (wrong or unrelated) to 10 (same meaning and equally correct), nothing else."
)
DECLINE_JUDGE_PROMPT = (
    "The user asked something the assistant should politely decline. Reply with 1 if the "
    "assistant's answer declines or says it cannot help, 0 if it answers anyway. Nothing else."
)
EXAMPLES_IN_REPORT = 5
SIGN_TEST_ALPHA = 0.05
"""A candidate losing more questions than it wins with a sign-test p below this is held."""
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NON_WORD = re.compile(r"[^\w\s]")
_FIRST_INT = re.compile(r"\d+")


@dataclass(frozen=True)
class EvalItem:
    """One question both models answer."""

    kind: str
    messages: list[dict[str, Any]]
    expected: str | None

    @property
    def question(self) -> str:
        """The last user message (for reports)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return str(message.get("content") or "")
        return ""


@dataclass
class ModelScore:
    """A model's mean score overall and per kind of question."""

    model: str
    score: float
    by_kind: dict[str, float]
    errors: int = 0


@dataclass
class EvalReport:
    """What the gate decided, with the numbers behind it."""

    candidate: ModelScore
    current: ModelScore
    scorer: str
    tolerance: float
    items: int
    passed: bool
    examples: list[dict[str, Any]] = field(default_factory=list)
    wins: int = 0
    """Questions the candidate scored higher on than the current model."""
    losses: int = 0
    ties: int = 0
    sign_p: float = 1.0
    """Two-sided sign-test p-value of wins against losses (ties left out)."""

    def to_json(self) -> str:
        """Stored on the run and in the model history."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> EvalReport:
        """Inverse of :meth:`to_json`."""
        data = json.loads(raw)
        data["candidate"] = ModelScore(**data["candidate"])
        data["current"] = ModelScore(**data["current"])
        return cls(**data)


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style)."""
    text = _NON_WORD.sub(" ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def declined(answer: str, markers: tuple[str, ...]) -> bool:
    """Whether an answer declines (contains one of the markers, normalised)."""
    plain = normalize_text(answer)
    return any(normalize_text(marker) in plain for marker in markers)


@dataclass(frozen=True)
class GoldenSet:
    """The golden questions and how to recognise a refusal."""

    items: tuple[EvalItem, ...]
    decline_markers: tuple[str, ...]


def load_golden(path: str | Path, system_prompt: str) -> GoldenSet:
    """Read ``eval.yaml``; each question is asked after the bot's system prompt."""
    file = Path(path)
    if not file.is_absolute():
        file = ROOT / file
    if not file.is_file():
        raise ConfigError(f"evaluation.eval_file {file} does not exist")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file} must hold a mapping with 'golden' and 'off_topic' lists")
    items: list[EvalItem] = []
    system = {"role": "system", "content": system_prompt}
    for n, entry in enumerate(raw.get("golden") or []):
        if not isinstance(entry, dict) or not entry.get("question") or not entry.get("expected"):
            raise ConfigError(f"{file}: golden[{n}] needs 'question' and 'expected'")
        messages = [system, {"role": "user", "content": str(entry["question"])}]
        items.append(EvalItem(GOLDEN, messages, str(entry["expected"])))
    for n, entry in enumerate(raw.get("off_topic") or []):
        question = entry.get("question") if isinstance(entry, dict) else entry
        if not question:
            raise ConfigError(f"{file}: off_topic[{n}] needs a 'question'")
        items.append(
            EvalItem(OFF_TOPIC, [system, {"role": "user", "content": str(question)}], None)
        )
    markers = tuple(str(m) for m in (raw.get("decline_markers") or DEFAULT_DECLINE_MARKERS))
    return GoldenSet(tuple(items), markers)


def validation_items(lines: list[dict[str, Any]]) -> list[EvalItem]:
    """Held-out examples as questions: everything before the approved answer is the prompt."""
    items = []
    for line in lines:
        if "messages" in line:
            messages = [
                {k: v for k, v in m.items() if k != "weight"} for m in line["messages"][:-1]
            ]
            expected = line["messages"][-1].get("content")
        else:  # a preference pair: the preferred output is the expected answer
            messages = list((line.get("input") or {}).get("messages") or [])
            expected = (line.get("preferred_output") or [{}])[0].get("content")
        if messages and expected:
            items.append(EvalItem(VALIDATION, messages, str(expected)))
    return items


def mark_golden(redis: Redis, *, answer_id: str, question: str, expected: str, by: str) -> bool:
    """Add an answer an admin vouched for to the golden set; False if it is there already."""
    entry = {"question": question, "expected": expected, "by": by, "at": time.time()}
    return bool(redis.hsetnx(keys.GOLDEN, answer_id, json.dumps(entry, ensure_ascii=False)))


def stored_golden(redis: Redis, system_prompt: str) -> list[EvalItem]:
    """The golden examples admins marked, asked after the bot's system prompt, oldest first."""
    entries = [json.loads(raw) for raw in redis.hvals(keys.GOLDEN)]
    system = {"role": "system", "content": system_prompt}
    return [
        EvalItem(GOLDEN, [system, {"role": "user", "content": e["question"]}], e["expected"])
        for e in sorted(entries, key=lambda e: e.get("at", 0))
        if e.get("question") and e.get("expected")
    ]


def scorer_of(settings: Settings) -> Scorer:
    """The scorer used: the LLM judge whenever a judge model is configured."""
    return Scorer.JUDGE if settings.evaluation.judge_model else settings.evaluation.scorer


class _Grader:
    """Scores answers with the configured scorer."""

    def __init__(self, client: OpenAI, settings: Settings, markers: tuple[str, ...]) -> None:
        self.client = client
        self.settings = settings
        self.evaluation = settings.evaluation
        self.scorer = scorer_of(settings)
        self.markers = markers
        self.judge_model = self.evaluation.judge_model or settings.model.base_model

    def _judge(self, system: str, content: str) -> float:
        try:
            reply = complete(
                self.client,
                self.settings.model,
                self.judge_model,
                [{"role": "system", "content": system}, {"role": "user", "content": content}],
            )
        except ModelError:
            logger.warning("the judge did not answer; scoring 0")
            return 0.0
        found = _FIRST_INT.search(reply)
        return 0.0 if not found else min(1.0, int(found.group(0)) / 10)

    def _embeddings(self, texts: list[str]) -> list[list[float]]:
        safe = [t if t.strip() else "(empty)" for t in texts]
        out: list[list[float]] = []
        for start in range(0, len(safe), 256):
            try:
                response = self.client.embeddings.create(
                    model=self.evaluation.embedding_model, input=safe[start : start + 256]
                )
            except openai.OpenAIError as exc:
                raise ModelError("embedding", str(exc)[:300]) from exc
            out += [d.embedding for d in sorted(response.data, key=lambda d: d.index)]
        return out

    def grade(self, items: list[EvalItem], answers: list[str]) -> list[float]:
        scorer = self.scorer
        scores = [0.0] * len(items)
        graded = [i for i, item in enumerate(items) if item.expected is not None]
        for i, item in enumerate(items):
            if item.expected is None:
                if scorer is Scorer.JUDGE:
                    content = f"Question: {item.question}\n\nAnswer: {answers[i]}"
                    scores[i] = 1.0 if self._judge(DECLINE_JUDGE_PROMPT, content) > 0 else 0.0
                else:
                    scores[i] = 1.0 if declined(answers[i], self.markers) else 0.0
        if scorer is Scorer.NORMALIZED_MATCH:
            for i in graded:
                same = normalize_text(answers[i]) == normalize_text(items[i].expected or "")
                scores[i] = 1.0 if same else 0.0
        elif scorer is Scorer.EMBEDDING and graded:
            vectors = self._embeddings(
                [answers[i] for i in graded] + [items[i].expected or "" for i in graded]
            )
            half = len(graded)
            for n, i in enumerate(graded):
                scores[i] = max(0.0, _cosine(vectors[n], vectors[half + n]))
        elif scorer is Scorer.JUDGE:
            for i in graded:
                content = (
                    f"Question: {items[i].question}\n\nReference answer: {items[i].expected}"
                    f"\n\nAnswer to grade: {answers[i]}"
                )
                scores[i] = self._judge(JUDGE_PROMPT, content)
        return scores


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def answers_of(
    client: OpenAI, settings: Settings, model: str, items: list[EvalItem]
) -> tuple[list[str], int]:
    """Every item answered by ``model`` (in parallel); failed answers are "" and counted."""

    def ask(item: EvalItem) -> str | None:
        try:
            return complete(client, settings.model, model, item.messages)
        except ModelError as exc:
            logger.warning("%s could not answer an evaluation question: %s", model, exc)
            return None

    with ThreadPoolExecutor(max_workers=settings.evaluation.parallel_requests) as pool:
        raw = list(pool.map(ask, items))
    return [a or "" for a in raw], sum(1 for a in raw if a is None)


def _score(model: str, items: list[EvalItem], scores: list[float], errors: int) -> ModelScore:
    by_kind: dict[str, list[float]] = {}
    for item, score in zip(items, scores, strict=True):
        by_kind.setdefault(item.kind, []).append(score)
    mean = sum(scores) / len(scores) if scores else 0.0
    return ModelScore(
        model=model,
        score=round(mean, 4),
        by_kind={k: round(sum(v) / len(v), 4) for k, v in by_kind.items()},
        errors=errors,
    )


def evaluate(
    client: OpenAI,
    settings: Settings,
    *,
    candidate: str,
    current: str,
    items: list[EvalItem],
    markers: tuple[str, ...] = DEFAULT_DECLINE_MARKERS,
) -> EvalReport:
    """Both models answer ``items``; the candidate passes unless worse beyond the tolerance."""
    grader = _Grader(client, settings, markers)
    cand_answers, cand_errors = answers_of(client, settings, candidate, items)
    cur_answers, cur_errors = answers_of(client, settings, current, items)
    cand_scores = grader.grade(items, cand_answers)
    cur_scores = grader.grade(items, cur_answers)
    cand = _score(candidate, items, cand_scores, cand_errors)
    cur = _score(current, items, cur_scores, cur_errors)
    tolerance = settings.evaluation.tolerance
    wins = sum(1 for c, o in zip(cand_scores, cur_scores, strict=True) if c > o)
    losses = sum(1 for c, o in zip(cand_scores, cur_scores, strict=True) if c < o)
    sign_p = sign_test(wins, losses)
    significantly_worse = losses > wins and sign_p < SIGN_TEST_ALPHA
    passed = bool(items) and cand.score >= cur.score - tolerance - 1e-9 and not significantly_worse
    if not items:
        logger.warning("nothing to evaluate: the gate refuses to promote blindly")
    worse = sorted(
        (i for i in range(len(items)) if cand_scores[i] < cur_scores[i]),
        key=lambda i: cand_scores[i] - cur_scores[i],
    )[:EXAMPLES_IN_REPORT]
    examples = [
        {
            "kind": items[i].kind,
            "question": items[i].question[:300],
            "expected": (items[i].expected or "")[:300],
            "candidate": cand_answers[i][:300],
            "current": cur_answers[i][:300],
        }
        for i in worse
    ]
    return EvalReport(
        candidate=cand,
        current=cur,
        scorer=scorer_of(settings).value,
        tolerance=tolerance,
        items=len(items),
        passed=passed,
        examples=examples,
        wins=wins,
        losses=losses,
        ties=len(items) - wins - losses,
        sign_p=round(sign_p, 6),
    )
