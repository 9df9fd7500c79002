"""The streaming validator: one pass over a file, every check, memory that stays flat.

:class:`Analysis` is fed one example at a time and keeps only counters, the first few
line numbers of each finding, a histogram of token counts (bounded by the largest
count, not by the file) and the running common prefixes/suffixes the prompt/completion
checks need. Duplicates go through :mod:`workers.datasets.dedup`, which spills to
disk. Nothing per example is kept, so a 1 GB file is validated in the memory of a
small one.

Large JSONL files are split into byte ranges validated by forked worker processes
(``jobs``); their analyses merge exactly, line numbers included, so the result does
not depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
import string
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from os.path import commonprefix
from typing import Any

from core.examples import (
    DROP_CODES,
    FIXES,
    MIN_EXAMPLES,
    OPENAI_RULES,
    Code,
    Finding,
    Format,
    Severity,
    TokenCounter,
    TrainerRules,
    completion_fields,
    examine_chat,
    examine_completion,
    examine_preference,
    severity,
)
from workers.datasets.dedup import DuplicateFinder, Duplicates, resolve
from workers.datasets.readers import (
    DatasetFileError,
    JsonlReader,
    ProgressFn,
    Records,
    kind_of,
    split_ranges,
)

FEW_EXAMPLES = 200  # "at least a few hundred" is the advice; fewer gets a warning
SHOWN_LINES = 3
MAX_PROMPT_PREFIX = 12  # longer common prompt prefixes are reported (legacy tool)
MAX_COMPLETION_PREFIX = 5
LONG_MARKER = 10
LABEL_CAP = 2000  # more distinct labels than this is not classification data
SHORT_LABEL = 64
IMBALANCE_RATIO = 5
PARALLEL_MIN_BYTES = 16 * 1024 * 1024
SEPARATORS = (" ->", "\n\n###\n\n", "\n\n===\n\n", "\n\n---\n\n", "\n\n===>\n\n", "\n\n--->\n\n")
FALLBACK_SEPARATOR = "\n\n### =>\n\n"
STOPS = ("\n", ".", " END", "***", "+++", "&&&", "$$$", "@@@", "%%%")
FALLBACK_STOP = " [END]"
_DELETE_UPPER = str.maketrans("", "", string.ascii_uppercase)
_DELETE_LOWER = str.maketrans("", "", string.ascii_lowercase)


def show(text: str) -> str:
    """A marker or prefix quoted as users type it: newlines as \\n."""
    return "'" + text.replace("\n", "\\n").replace("\t", "\\t") + "'"


@dataclass
class Tally:
    """All findings of one code: how many examples, the first lines, one example message."""

    code: Code
    count: int = 0
    lines: list[int] = field(default_factory=list)
    sample: str = ""
    fixable: bool = True
    """False when this run cannot apply the code's fix (e.g. no system prompt to add)."""

    @property
    def severity(self) -> Severity:
        """Error or warning."""
        return severity(self.code)

    @property
    def fix(self) -> str | None:
        """What ``--fix`` does about it, or None when nothing can be done automatically."""
        return FIXES.get(self.code) if self.fixable else None


def _common_suffix(a: str, b: str) -> str:
    n = len(commonprefix([a[::-1], b[::-1]]))
    return a[len(a) - n :] if n else ""


def marker_of(suffix: str, known: Iterable[str]) -> str:
    """The separator or stop sequence inside a common suffix: a known one it ends with,
    else the part from its first newline, else nothing (a shared last word is no marker).
    """
    for candidate in sorted(known, key=len, reverse=True):
        if candidate != "." and suffix.endswith(candidate):
            return candidate
    return suffix[suffix.index("\n") :] if "\n" in suffix else ""


class Analysis:
    """State of the streaming validation of one file, or of one byte range of it."""

    def __init__(
        self,
        fmt: str,
        counter: TokenCounter,
        max_tokens: int,
        dedup_dir: str | None = None,
        count_all: bool = True,
        rules: TrainerRules = OPENAI_RULES,
    ) -> None:
        self.fmt = fmt
        self.rules = rules
        """What the trainer the data is for can train on (the configured backend's)."""
        self.counter = counter
        self.max_tokens = max_tokens
        self.count_all = count_all
        self.examples = 0
        self.lines = 0
        self.invalid = 0
        self.dropped = 0
        self.over_limit = 0
        """Examples whose only reason to be dropped is their length (OpenAI truncates
        them, and the cookbook counts them when it picks the epochs)."""
        self.kept = 0
        self.kept_lines: list[int] = []
        self.tallies: dict[Code, Tally] = {}
        self.token_hist: dict[int, int] = {}
        self.tokens_total = 0
        self.trained_total = 0
        self.labels: dict[Any, list[Any]] | None = {}
        self.dedup = DuplicateFinder(dedup_dir)
        self._dedup_parts: list[tuple[DuplicateFinder, int]] = [(self.dedup, 0)]
        self.duplicates = Duplicates()
        self.notes: list[str] = []
        self.classification = False
        self.open_ended = False
        # prompt/completion aggregates (None until the first valid example)
        self.prompt_prefix: str | None = None
        self.prompt_suffix = ""
        self.completion_prefix = ""
        self.completion_suffix = ""
        self.first_prompt = ""
        self.first_completion = ""
        self.same_prompts = True
        self.same_completions = True
        self.prompt_chars = 0
        self.prompt_newline = False
        self.separators_seen = [False] * len(SEPARATORS)
        self.stops_seen = [False] * len(STOPS)
        self.case = [0, 0, 0, 0]  # prompt upper, prompt lower, completion upper, completion lower
        # decided by finish()
        self.separator = ""
        self.stop = ""
        self.suggested_separator = FALLBACK_SEPARATOR
        self.suggested_stop = FALLBACK_STOP

    # --- feeding -----------------------------------------------------------------------
    def feeder(self) -> Callable[[int, Any], bool]:
        """The per-example function for this file's format."""
        if self.fmt == Format.COMPLETION:
            return self.feed_completion
        return self.feed_preference if self.fmt == Format.PREFERENCE else self.feed_chat

    def _tally(self, line: int, findings: list[Finding]) -> bool:
        """Count the findings of one example; True when a full ``--fix`` drops it."""
        error = drop = False
        seen: set[Code] = set()
        tallies = self.tallies
        for finding in findings:
            code = finding.code
            if code in seen:
                continue
            seen.add(code)
            tally = tallies.get(code)
            if tally is None:
                tally = tallies[code] = Tally(code, sample=finding.message)
            tally.count += 1
            if len(tally.lines) < SHOWN_LINES:
                tally.lines.append(line)
            if code in DROP_CODES:
                drop = True
            if severity(code) is Severity.ERROR:
                error = True
        if error:
            self.invalid += 1
        if drop:
            self.dropped += 1
            if seen & DROP_CODES == {Code.TOO_MANY_TOKENS}:
                self.over_limit += 1
        return drop

    def _keep(self, line: int, fingerprint: int | None, label: str | None) -> None:
        self.kept += 1
        if len(self.kept_lines) < SHOWN_LINES:
            self.kept_lines.append(line)
        if fingerprint is not None:
            self.dedup.add(fingerprint, line)
        labels = self.labels
        if labels is not None and label is not None:
            key: Any = label if len(label) <= SHORT_LABEL else hash(label)
            entry = labels.get(key)
            if entry is not None:
                entry[0] += 1
            elif len(labels) >= LABEL_CAP:
                self.labels = None
            else:
                labels[key] = [1, line, label[: SHORT_LABEL + 1]]

    def feed_chat(self, line: int, obj: Any) -> bool:
        """Check one chat example and fold it into the totals; False when a fix drops it."""
        return self._feed(
            line,
            examine_chat(
                obj, self.counter, self.max_tokens, count_all=self.count_all, rules=self.rules
            ),
        )

    def feed_preference(self, line: int, obj: Any) -> bool:
        """Check one preference (DPO) example and fold it in; False when a fix drops it."""
        return self._feed(
            line,
            examine_preference(
                obj, self.counter, self.max_tokens, count_all=self.count_all, rules=self.rules
            ),
        )

    def _feed(self, line: int, facts: Any) -> bool:
        self.examples += 1
        findings, tokens, trained, fingerprint, label = facts
        if tokens >= 0:
            hist = self.token_hist
            hist[tokens] = hist.get(tokens, 0) + 1
            self.tokens_total += tokens
            self.trained_total += trained
        if findings and self._tally(line, findings):
            return False
        self._keep(line, fingerprint, label)
        return True

    def feed_completion(self, line: int, obj: Any) -> bool:
        """Check one prompt/completion example and fold it in; False when a fix drops it."""
        self.examples += 1
        findings, tokens, trained, fingerprint, label = examine_completion(
            obj, self.counter, self.max_tokens, count_all=self.count_all
        )
        if tokens >= 0:
            hist = self.token_hist
            hist[tokens] = hist.get(tokens, 0) + 1
            self.tokens_total += tokens
            self.trained_total += trained
        if findings and self._tally(line, findings):
            return False
        if len(obj) == 2 and "prompt" in obj and "completion" in obj:
            prompt, completion = obj["prompt"], obj["completion"]
        else:
            keys, _ = completion_fields(obj)
            prompt, completion = obj[keys["prompt"]], obj[keys["completion"]]
        if type(prompt) is str and type(completion) is str:
            self._aggregate(prompt, completion)
        self._keep(line, fingerprint, label)
        return True

    def _aggregate(self, prompt: str, completion: str) -> None:
        if self.prompt_prefix is None:
            self.prompt_prefix = self.prompt_suffix = self.first_prompt = prompt
            self.completion_prefix = self.completion_suffix = self.first_completion = completion
        else:
            if not prompt.startswith(self.prompt_prefix):
                self.prompt_prefix = commonprefix([self.prompt_prefix, prompt])
            if not prompt.endswith(self.prompt_suffix):
                self.prompt_suffix = _common_suffix(self.prompt_suffix, prompt)
            if not completion.startswith(self.completion_prefix):
                self.completion_prefix = commonprefix([self.completion_prefix, completion])
            if not completion.endswith(self.completion_suffix):
                self.completion_suffix = _common_suffix(self.completion_suffix, completion)
            if self.same_prompts and prompt != self.first_prompt:
                self.same_prompts = False
            if self.same_completions and completion != self.first_completion:
                self.same_completions = False
        self.prompt_chars += len(prompt)
        if not self.prompt_newline and "\n" in prompt:
            self.prompt_newline = True
        seen = self.separators_seen
        for index, candidate in enumerate(SEPARATORS):
            if not seen[index] and candidate in prompt:
                seen[index] = True
        seen = self.stops_seen
        for index, candidate in enumerate(STOPS):
            if not seen[index] and candidate in completion:
                seen[index] = True
        case = self.case
        case[0] += len(prompt) - len(prompt.translate(_DELETE_UPPER))
        case[1] += len(prompt) - len(prompt.translate(_DELETE_LOWER))
        case[2] += len(completion) - len(completion.translate(_DELETE_UPPER))
        case[3] += len(completion) - len(completion.translate(_DELETE_LOWER))

    # --- merging (parallel workers) ----------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["counter"]  # does not travel back from a worker; the merge sets its own
        return state

    def merge(self, other: Analysis, offset: int) -> None:
        """Add the analysis of the next byte range; its lines start after ``offset``."""
        self.examples += other.examples
        self.invalid += other.invalid
        self.dropped += other.dropped
        self.over_limit += other.over_limit
        self.kept += other.kept
        self.kept_lines = sorted(self.kept_lines + [n + offset for n in other.kept_lines])[
            :SHOWN_LINES
        ]
        for code, theirs in other.tallies.items():
            mine = self.tallies.get(code)
            if mine is None:
                mine = self.tallies[code] = Tally(code, sample=theirs.sample)
            mine.count += theirs.count
            mine.lines = sorted(mine.lines + [n + offset for n in theirs.lines])[:SHOWN_LINES]
        for tokens, n in other.token_hist.items():
            self.token_hist[tokens] = self.token_hist.get(tokens, 0) + n
        self.tokens_total += other.tokens_total
        self.trained_total += other.trained_total
        if self.labels is not None and other.labels is not None:
            for key, (n, line, text) in other.labels.items():
                entry = self.labels.get(key)
                if entry is not None:
                    entry[0] += n
                else:
                    self.labels[key] = [n, line + offset, text]
            if len(self.labels) > LABEL_CAP:
                self.labels = None
        else:
            self.labels = None
        self._dedup_parts.append((other.dedup, offset))
        if other.prompt_prefix is not None:
            if self.prompt_prefix is None:
                for name in (
                    "prompt_prefix",
                    "prompt_suffix",
                    "completion_prefix",
                    "completion_suffix",
                    "first_prompt",
                    "first_completion",
                    "same_prompts",
                    "same_completions",
                ):
                    setattr(self, name, getattr(other, name))
            else:
                self.prompt_prefix = commonprefix([self.prompt_prefix, other.prompt_prefix])
                self.prompt_suffix = _common_suffix(self.prompt_suffix, other.prompt_suffix)
                self.completion_prefix = commonprefix(
                    [self.completion_prefix, other.completion_prefix]
                )
                self.completion_suffix = _common_suffix(
                    self.completion_suffix, other.completion_suffix
                )
                self.same_prompts = (
                    self.same_prompts
                    and other.same_prompts
                    and self.first_prompt == other.first_prompt
                )
                self.same_completions = (
                    self.same_completions
                    and other.same_completions
                    and self.first_completion == other.first_completion
                )
        self.prompt_chars += other.prompt_chars
        self.prompt_newline = self.prompt_newline or other.prompt_newline
        self.separators_seen = [
            a or b for a, b in zip(self.separators_seen, other.separators_seen, strict=True)
        ]
        self.stops_seen = [a or b for a, b in zip(self.stops_seen, other.stops_seen, strict=True)]
        self.case = [a + b for a, b in zip(self.case, other.case, strict=True)]

    # --- whole-file findings -------------------------------------------------------------
    def _add(self, code: Code, count: int, lines: list[int], message: str) -> None:
        self.tallies[code] = Tally(code, count, lines[:SHOWN_LINES], message)

    @property
    def remaining(self) -> int:
        """Examples a full ``--fix`` would write."""
        return self.kept - self.duplicates.count

    def resolve_duplicates(self) -> None:
        """Find the duplicates among everything fed (once) and remove the spill files."""
        if not self._dedup_parts:
            return
        try:
            self.duplicates = resolve(self._dedup_parts)
        finally:
            for finder, _ in self._dedup_parts:
                finder.cleanup()
            self._dedup_parts = []

    def discard(self) -> None:
        """Remove the spill files of an analysis that will not be finished."""
        for finder, _ in self._dedup_parts:
            finder.cleanup()
        self._dedup_parts = []

    def finish(self) -> None:
        """Resolve duplicates and add the findings about the file as a whole."""
        self.resolve_duplicates()
        if self.duplicates.count:
            self._add(
                Code.DUPLICATE_EXAMPLE,
                self.duplicates.count,
                self.duplicates.first(),
                "same content as an earlier example",
            )
        if self.examples == 0:
            self._add(Code.EMPTY_FILE, 0, [], "the file holds no examples")
            return
        remaining = self.remaining
        if remaining < MIN_EXAMPLES:
            self._add(
                Code.TOO_FEW_EXAMPLES,
                remaining,
                [],
                f"{remaining} usable examples; OpenAI requires at least {MIN_EXAMPLES}",
            )
        elif remaining < FEW_EXAMPLES:
            self._add(
                Code.FEW_EXAMPLES,
                remaining,
                [],
                f"{remaining} examples: a few hundred or more train noticeably better "
                "(quality tends to grow with every doubling)",
            )
        if self.fmt == "completion" and self.prompt_prefix is not None:
            self.open_ended = self.prompt_chars == 0
        labels = self.labels
        self.classification = (
            labels is not None
            and not self.open_ended
            and self.kept >= MIN_EXAMPLES
            and 2 <= len(labels) < self.kept / 3
        )
        if self.fmt == "completion" and self.prompt_prefix is not None:
            self._finish_completion()
        if self.classification:
            self._finish_labels()

    def _finish_completion(self) -> None:
        n, lines = self.kept, self.kept_lines
        for index, candidate in enumerate(SEPARATORS):
            if candidate == " ->" and self.prompt_newline:
                continue
            if not self.separators_seen[index]:
                self.suggested_separator = candidate
                break
        for index, candidate in enumerate(STOPS):
            if not self.stops_seen[index]:
                self.suggested_stop = candidate
                break
        if self.open_ended:
            self.notes.append("all prompts are empty: open-ended generation (e.g. a voice)")
        elif self.same_prompts and n > 1:
            self._add(
                Code.IDENTICAL_PROMPTS,
                n,
                lines,
                f"every prompt is {self.first_prompt[:60]!r}: leave prompts empty for "
                "open-ended generation, or make them differ",
            )
        else:
            self.separator = marker_of(self.prompt_suffix, SEPARATORS) or self.prompt_suffix
            if not self.separator:
                self._add(
                    Code.MISSING_PROMPT_SEPARATOR,
                    n,
                    lines,
                    "the prompts do not end with a common separator; it shows the model where "
                    f"the completion starts (suggested: {show(self.suggested_separator)})",
                )
            else:
                note = f"prompts end with the separator {show(self.separator)}"
                if len(self.separator) > LONG_MARKER:
                    note += f" (long: consider {show(self.suggested_separator)})"
                self.notes.append(note)
            if self.prompt_prefix and len(self.prompt_prefix) > MAX_PROMPT_PREFIX:
                self._add(
                    Code.COMMON_PROMPT_PREFIX,
                    n,
                    lines,
                    f"every prompt starts with {show(self.prompt_prefix[:60])}: fine-tuning "
                    "needs no instructions, only the input",
                )
        if len(self.completion_prefix) >= MAX_COMPLETION_PREFIX and not self.same_completions:
            self._add(
                Code.COMMON_COMPLETION_PREFIX,
                n,
                lines,
                f"every completion starts with {show(self.completion_prefix[:60])}: "
                "completions should hold only the output",
            )
        if self.same_completions and n > 1:
            self._add(
                Code.IDENTICAL_COMPLETIONS,
                n,
                lines,
                f"every completion is {self.first_completion[:60]!r}: the model would only "
                "learn to repeat it",
            )
        self.stop = marker_of(self.completion_suffix, STOPS) or self.completion_suffix
        if self.stop:
            note = f"completions end with the stop sequence {show(self.stop)}"
            if len(self.stop) > LONG_MARKER:
                note += f" (long: consider {show(self.suggested_stop)})"
            self.notes.append(note)
        elif not self.open_ended and not self.classification and not self.same_completions:
            # classification needs no stop sequence (one-token labels end by themselves)
            self._add(
                Code.MISSING_STOP_SEQUENCE,
                n,
                lines,
                "the completions do not end with a common stop sequence; it shows the model "
                f"where to stop (suggested: {show(self.suggested_stop)})",
            )
        upper_p, lower_p, upper_c, lower_c = self.case
        shouting = [
            what
            for what, upper, lower in (
                ("prompts", upper_p, lower_p),
                ("completions", upper_c, lower_c),
            )
            if upper * 2 > lower and upper + lower
        ]
        if shouting:
            self._add(
                Code.MOSTLY_UPPERCASE,
                n,
                lines,
                f"more than a third of the letters of the {' and the '.join(shouting)} are upper "
                "case, which trains worse than normal text; lower-case them if that fits",
            )

    def _finish_labels(self) -> None:
        labels = self.labels
        assert labels is not None
        ranked = sorted(labels.values(), key=lambda entry: -entry[0])
        shown = ", ".join(f"{entry[2][:20]!r}: {entry[0]}" for entry in ranked[:5])
        self.notes.append(
            f"classification data: {len(labels)} classes ({shown}{', ...' if len(ranked) > 5 else ''});"
            " keep a validation split (--split) to measure it"
        )
        largest, smallest = ranked[0][0], ranked[-1][0]
        if largest >= IMBALANCE_RATIO * smallest:
            self._add(
                Code.CLASS_IMBALANCE,
                self.kept,
                [],
                f"the largest class has {largest} examples, the smallest {smallest}: "
                "the model will favour the large classes",
            )
        stop = marker_of(self.completion_suffix, STOPS) if self.fmt == "completion" else ""
        multi: list[list[Any]] = []
        for entry in ranked:
            text = entry[2]
            if len(text) > SHORT_LABEL:
                multi.append(entry + [None])
                continue
            if stop and text.endswith(stop):
                text = text[: -len(stop)]
            tokens = self.counter.count(text)
            if tokens != 1:
                multi.append(entry + [tokens])
        if multi:
            multi.sort(key=lambda entry: entry[1])
            detail = ", ".join(
                f"{entry[2][:20]!r} ({'many' if entry[3] is None else entry[3]} tokens)"
                for entry in multi[:3]
            )
            self._add(
                Code.LABEL_NOT_SINGLE_TOKEN,
                sum(entry[0] for entry in multi),
                [entry[1] for entry in multi],
                f"{len(multi)} of {len(labels)} labels are not one token ({detail}): one-token "
                "labels make classification cheaper and more reliable",
            )

    def scan_markers(self, records: Iterable[tuple[int, Any]]) -> None:
        """Second, light pass for prompt/completion files: the separator or stop sequence
        also appearing inside prompts or completions confuses the model about where to
        start or stop. Only possible once the common suffixes are known.
        """
        separator, stop = self.separator, self.stop
        if not separator and not stop:
            return
        inside_p = Tally(Code.SEPARATOR_INSIDE_PROMPT)
        inside_c = Tally(Code.STOP_INSIDE_COMPLETION)
        for line, obj in records:
            if not isinstance(obj, dict):
                continue
            keys, _ = completion_fields(obj)
            prompt, completion = obj.get(keys.get("prompt")), obj.get(keys.get("completion"))
            if separator and type(prompt) is str and separator in prompt[: -len(separator)]:
                inside_p.count += 1
                if len(inside_p.lines) < SHOWN_LINES:
                    inside_p.lines.append(line)
            if stop and type(completion) is str and stop in completion[: -len(stop)]:
                inside_c.count += 1
                if len(inside_c.lines) < SHOWN_LINES:
                    inside_c.lines.append(line)
        if inside_p.count:
            inside_p.sample = (
                f"the separator {show(separator)} also appears inside these prompts: "
                "use a separator that appears only at the end"
            )
            self.tallies[Code.SEPARATOR_INSIDE_PROMPT] = inside_p
        if inside_c.count:
            inside_c.sample = (
                f"the stop sequence {show(stop)} also appears inside these completions: "
                "generation would stop early"
            )
            self.tallies[Code.STOP_INSIDE_COMPLETION] = inside_c

    # --- results -------------------------------------------------------------------------
    def percentile(self, fraction: float) -> int:
        """A percentile of tokens per example (exact, from the histogram)."""
        total = sum(self.token_hist.values())
        if not total:
            return 0
        rank = max(1, -(-int(fraction * total * 1000) // 1000))
        seen = 0
        for tokens in sorted(self.token_hist):
            seen += self.token_hist[tokens]
            if seen >= rank:
                return tokens
        return max(self.token_hist)

    @property
    def counted(self) -> int:
        """Examples whose tokens could be counted."""
        return sum(self.token_hist.values())

    def billed_per_epoch(self) -> int:
        """Training tokens billed per epoch: examples over the limit count up to it."""
        limit = self.max_tokens
        return sum(min(limit, tokens) * n for tokens, n in self.token_hist.items())

    def errors(self) -> list[Tally]:
        """Findings that make OpenAI reject the file as it is."""
        return [t for t in self.ordered() if t.severity is Severity.ERROR]

    def ordered(self) -> list[Tally]:
        """Findings, errors first, in the order of the codes."""
        order = {code: index for index, code in enumerate(Code)}
        return sorted(
            self.tallies.values(),
            key=lambda t: (t.severity is not Severity.ERROR, order[t.code]),
        )


# --- running it over a file ----------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _worker_init(
    fmt: str,
    counter: TokenCounter,
    max_tokens: int,
    count_all: bool,
    rules: TrainerRules,
    directory: str,
    shared: Any,
) -> None:
    _WORKER.update(
        rules=rules,
        fmt=fmt,
        counter=counter,
        max_tokens=max_tokens,
        count_all=count_all,
        dir=directory,
        shared=shared,
    )


def _worker_run(job: tuple[str, int, int]) -> tuple[str, Any, int, str]:
    path, start, end = job
    shared = _WORKER["shared"]

    def progress(n: int) -> None:
        with shared.get_lock():
            shared.value += n

    analysis = Analysis(
        _WORKER["fmt"],
        _WORKER["counter"],
        _WORKER["max_tokens"],
        _WORKER["dir"],
        _WORKER["count_all"],
        _WORKER["rules"],
    )
    reader = JsonlReader(path, start, end, progress)
    feed = analysis.feeder()
    try:
        for line, obj in reader:
            feed(line, obj)
    except DatasetFileError as exc:
        return ("error", None, exc.line or 0, exc.detail)
    analysis.lines = reader.lines
    return ("ok", analysis, reader.lines, "")


def default_jobs() -> int:
    """Worker processes for big JSONL files: the CPUs this process may use, up to 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _can_fork() -> bool:
    methods = multiprocessing.get_all_start_methods()
    return "fork" in methods and "forkserver" in methods


def analyze(
    path: str | os.PathLike[str],
    fmt: str,
    counter: TokenCounter,
    max_tokens: int,
    *,
    jobs: int = 1,
    delimiter: str | None = None,
    progress: ProgressFn | None = None,
    parallel_min_bytes: int = PARALLEL_MIN_BYTES,
    count_all: bool = True,
    rules: TrainerRules = OPENAI_RULES,
) -> Analysis:
    """Validate a whole file in one streaming pass (plus a light one for markers).

    JSONL files of at least ``parallel_min_bytes`` are split over ``jobs`` forked
    processes (below that, starting them costs more than it saves); anything else is
    read by this process. ``progress`` gets byte counts for a progress bar.
    ``count_all=False`` counts tokens only where the limit could be reached (enough
    for validating; ``stats`` needs every count). ``rules`` are those of the trainer
    the data is for.
    """
    kind = kind_of(path)
    big = kind == "jsonl" and os.path.getsize(path) >= parallel_min_bytes
    if jobs > 1 and big and _can_fork():
        analysis = _analyze_parallel(
            path, fmt, counter, max_tokens, jobs, progress, count_all, rules
        )
    else:
        records = Records(path, delimiter, progress)
        analysis = Analysis(fmt, counter, max_tokens, count_all=count_all, rules=rules)
        analysis.notes.extend(records.notes)
        feed = analysis.feeder()
        try:
            for line, obj in records:
                feed(line, obj)
        except BaseException:
            analysis.discard()
            raise
    analysis.finish()
    if fmt == "completion":
        analysis.scan_markers(Records(path, delimiter))
    return analysis


def _analyze_parallel(
    path: str | os.PathLike[str],
    fmt: str,
    counter: TokenCounter,
    max_tokens: int,
    jobs: int,
    progress: ProgressFn | None,
    count_all: bool,
    rules: TrainerRules,
) -> Analysis:
    # Forking copies every lock of the parent as it is at that moment: in a process with
    # other threads running (a host embedding this, a test runner), a child can inherit a
    # lock held by one of them and wait forever. Such a process starts its workers from a
    # fresh fork server instead (the token counter travels by its encoding's name).
    method = "fork" if threading.active_count() == 1 else "forkserver"
    context = multiprocessing.get_context(method)
    shared = context.Value("q", 0)
    ranges = [(os.fspath(path), start, end) for start, end in split_ranges(path, jobs * 2)]
    with tempfile.TemporaryDirectory(prefix="tuneloop-validate-") as directory:
        pool = context.Pool(
            min(jobs, len(ranges)),
            initializer=_worker_init,
            initargs=(fmt, counter, max_tokens, count_all, rules, directory, shared),
        )
        try:
            pending = pool.map_async(_worker_run, ranges, chunksize=1)
            reported = 0
            while not pending.ready():
                pending.wait(0.2)
                if progress is not None:
                    now = shared.value
                    progress(now - reported)
                    reported = now
            results = pending.get()
        finally:
            pool.terminate()
            pool.join()
        merged: Analysis | None = None
        offset = 0
        for status, part, lines, detail in results:
            if status == "error":
                raise DatasetFileError(path, offset + lines, detail)
            if merged is None:
                merged = part
                merged.counter = counter
            else:
                merged.merge(part, offset)
            offset += lines
        assert merged is not None
        merged.lines = offset
        merged.resolve_duplicates()  # the spilled pairs live in ``directory``
        return merged
