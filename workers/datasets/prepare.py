"""Writing a prepared file: the accepted fixes applied while streaming, all or nothing.

The validator (:mod:`workers.datasets.analysis`) decides what is wrong; this module
reads the file a second time and writes each example repaired, dropped or unchanged,
split between training and validation. Output goes to temporary files renamed into
place at the end, and only when OpenAI would accept the result.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from core.examples import (
    DROP_CODES,
    MIN_EXAMPLES,
    Code,
    Format,
    examiner,
    repair_chat_example,
    repair_completion_example,
    repair_preference_example,
)
from workers.datasets.analysis import Analysis, Tally
from workers.datasets.output import AtomicOutputs, dumps
from workers.datasets.readers import ProgressFn, Records

_FILE_CODES = frozenset({Code.TOO_FEW_EXAMPLES, Code.EMPTY_FILE})


@dataclass(frozen=True)
class Plan:
    """What to do while writing: accepted fixes, system prompt, split."""

    fixes: frozenset[Code]
    system_prompt: str | None = None
    validation_fraction: float = 0.0
    seed: int = 42


@dataclass
class WriteResult:
    """What the writing pass did."""

    train: int = 0
    valid: int = 0
    dropped: int = 0
    duplicates: int = 0
    repaired: int = 0
    written: bool = False
    paths: list[Path] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Examples written to both files."""
        return self.train + self.valid


def output_paths(source: Path, output: Path | None, split: bool) -> tuple[Path, Path | None]:
    """``<name>_prepared.jsonl`` next to the source (or ``output``), and with a split
    ``<name>_prepared_valid.jsonl`` beside it."""
    train = output or source.with_name(f"{source.stem}_prepared.jsonl")
    valid = train.with_name(f"{train.stem}_valid.jsonl") if split else None
    return train, valid


def blocking(analysis: Analysis, fixes: Collection[Code]) -> list[Tally]:
    """Errors the accepted fixes leave in place: with any, OpenAI rejects the file.

    Too few examples is judged on what the fixes leave (kept duplicates count).
    """
    out = []
    for tally in analysis.errors():
        if tally.code in _FILE_CODES:
            continue
        if tally.fix is None or tally.code not in fixes:
            out.append(tally)
    if analysis.examples == 0:
        out.append(analysis.tallies[Code.EMPTY_FILE])
    else:
        left = analysis.kept - (analysis.duplicates.count if Code.DUPLICATE_EXAMPLE in fixes else 0)
        if left < MIN_EXAMPLES:
            tally = analysis.tallies.get(Code.TOO_FEW_EXAMPLES) or Tally(Code.TOO_FEW_EXAMPLES)
            tally.count = left
            tally.sample = f"{left} usable examples; OpenAI requires at least {MIN_EXAMPLES}"
            out.append(tally)
    return out


class _CompletionFixer:
    """The whole-file fixes of prompt/completion data, in the legacy tool's order."""

    def __init__(self, analysis: Analysis, fixes: Collection[Code]) -> None:
        self.prompt_prefix = (
            analysis.prompt_prefix or "" if Code.COMMON_PROMPT_PREFIX in fixes else ""
        )
        self.separator = (
            analysis.suggested_separator if Code.MISSING_PROMPT_SEPARATOR in fixes else ""
        )
        self.completion_prefix = (
            analysis.completion_prefix if Code.COMMON_COMPLETION_PREFIX in fixes else ""
        )
        self.space = Code.COMPLETION_LEADING_SPACE in fixes
        self.stop = analysis.suggested_stop if Code.MISSING_STOP_SEQUENCE in fixes else ""

    def __call__(self, example: dict[str, str]) -> dict[str, str]:
        prompt, completion = example["prompt"], example["completion"]
        if self.prompt_prefix and prompt.startswith(self.prompt_prefix):
            prompt = prompt[len(self.prompt_prefix) :]
        prompt += self.separator
        if self.completion_prefix and completion.startswith(self.completion_prefix):
            completion = completion[len(self.completion_prefix) :]
            if self.completion_prefix[0] == " ":
                completion = " " + completion
        if self.space and not completion.startswith(" "):
            completion = " " + completion
        return {"prompt": prompt, "completion": completion + self.stop}


def write_prepared(
    source: Path,
    analysis: Analysis,
    plan: Plan,
    train_path: Path,
    valid_path: Path | None,
    *,
    delimiter: str | None = None,
    progress: ProgressFn | None = None,
) -> WriteResult:
    """Stream ``source`` again and write the prepared example(s) atomically.

    Examples are split with a seeded random draw per example, so the same input and
    seed give the same files. Nothing is written when fewer than the minimum of
    examples remain.
    """
    fixes = plan.fixes
    fmt = Format(analysis.fmt)
    chat = fmt is not Format.COMPLETION
    examine = examiner(fmt)
    if chat:
        examine = partial(examine, rules=analysis.rules)
    counter, limit = analysis.counter, analysis.max_tokens
    example_fixes = frozenset(fixes) - {Code.COMPLETION_LEADING_SPACE}
    fixer = None if chat else _CompletionFixer(analysis, fixes)
    duplicates = analysis.duplicates.lines if Code.DUPLICATE_EXAMPLE in fixes else []
    next_duplicate = 0
    rng = random.Random(plan.seed)
    fraction = plan.validation_fraction if valid_path is not None else 0.0
    result = WriteResult()
    with AtomicOutputs() as outputs:
        train = outputs.open(train_path)
        valid = outputs.open(valid_path) if valid_path is not None else None
        for line, obj in Records(source, delimiter, progress):
            findings = examine(obj, counter, limit, count_all=False).findings
            codes = {finding.code for finding in findings}
            if codes & DROP_CODES:
                result.dropped += 1
                continue
            while next_duplicate < len(duplicates) and duplicates[next_duplicate] < line:
                next_duplicate += 1
            if next_duplicate < len(duplicates) and duplicates[next_duplicate] == line:
                result.duplicates += 1
                continue
            example: dict[str, Any] | None
            if fmt is Format.PREFERENCE:
                example = repair_preference_example(obj, example_fixes, plan.system_prompt)
            elif chat:
                example = repair_chat_example(obj, example_fixes, plan.system_prompt)
            else:
                example = repair_completion_example(obj, example_fixes)
                if example is not None:
                    assert fixer is not None
                    example = fixer(example)
            if example is None:
                result.dropped += 1
                continue
            if codes & fixes:
                result.repaired += 1
            if valid is not None and rng.random() < fraction:
                valid.write(dumps(example))
                result.valid += 1
            else:
                train.write(dumps(example))
                result.train += 1
        if result.total < MIN_EXAMPLES:
            return result
        result.paths = [train_path]
        if valid is not None:
            if result.valid:
                result.paths.append(valid_path)  # type: ignore[arg-type]
            else:
                outputs.forget(valid)  # an empty file would be rejected by OpenAI
        outputs.commit()
    result.written = True
    return result
