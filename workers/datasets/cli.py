"""``python -m workers.datasets``: import, validate, repair, measure and load datasets.

Every command streams its input, writes its outputs through temporary files renamed
at the end, and reports problems as one line naming the file and the line. Exit
status: 0 done, 1 the data was refused or could not be read (nothing written), 2 a
usage error.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import click

from core.errors import DatasetError, TuneloopError
from core.examples import (
    FIXES,
    CachedCounter,
    Code,
    Format,
    Severity,
    TrainerRules,
    completion_fields,
    detect_format,
    examine_chat,
    examiner,
    example_limit,
    format_problem,
    rules_for,
)
from core.pricing import price_for
from core.settings import Settings, load_behaviour
from core.tokens import counter_for_model
from workers.datasets.analysis import (
    SEPARATORS,
    STOPS,
    Analysis,
    Tally,
    analyze,
    default_jobs,
    marker_of,
    show,
)
from workers.datasets.importers import (
    QaStats,
    actors,
    chat_examples,
    completion_examples,
    completion_to_messages,
    conversations,
    qa_example,
    qa_pairs,
)
from workers.datasets.output import AtomicOutputs, dumps
from workers.datasets.prepare import Plan, blocking, output_paths, write_prepared
from workers.datasets.readers import ProgressFn, Records, Table
from workers.datasets.seed import DEFAULT_REDIS_URL, connect, seed, source_of
from workers.datasets.stats import render, summary

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)
FORMATS = click.Choice(["auto", *(fmt.value for fmt in Format)])
_FILE_CODES = frozenset({Code.EMPTY_FILE, Code.TOO_FEW_EXAMPLES, Code.FEW_EXAMPLES})


class _Group(click.Group):
    """Turns every failure into one line on stderr and a non-zero exit: no tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except TuneloopError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.ClickException(
                "interrupted: output files are only written at the end, so none was "
                "(an interrupted load is completed by running it again)"
            ) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None
        except Exception as exc:
            if os.environ.get("TUNELOOP_DEBUG"):
                raise
            raise click.ClickException(
                f"internal error ({type(exc).__name__}: {exc}); "
                "run with TUNELOOP_DEBUG=1 to see where"
            ) from None


class _State:
    """Settings loaded on first use, so ``--help`` works even with a broken config."""

    def __init__(self, config: Path | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_behaviour(self.config)
        return self._settings


@click.group(cls=_Group, context_settings=CONTEXT)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="CONFIG_FILE",
    help="Behaviour settings (default config/settings.yaml): system prompt, base model, "
    "token limit, validation fraction, seed.",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """Turn chat logs, Q&A tables and old fine-tuning files into valid fine-tuning
    files, measure their cost, and seed the bot's approved-example log."""
    ctx.obj = _State(config)


# --- shared pieces -------------------------------------------------------------------------
def _state() -> _State:
    state = click.get_current_context().find_object(_State)
    if state is None:  # a command run on its own, without the group that holds the settings
        raise click.UsageError("run the dataset commands through their group (workers.datasets)")
    return state


@contextmanager
def _progress(enabled: bool | None, path: Path, label: str) -> Iterator[ProgressFn | None]:
    """A progress bar on stderr over the bytes of ``path`` (only on a terminal)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield None
        return
    with click.progressbar(length=path.stat().st_size, label=label, file=sys.stderr) as bar:
        yield bar.update


def _rules() -> TrainerRules:
    """The rules of the configured trainer (``training.backend``): data for the local
    trainer may not hold tool turns, data for OpenAI may."""
    return rules_for(_state().settings.training.backend)


def _counter(model: str) -> CachedCounter:
    return CachedCounter(counter_for_model(model))


def _detect_format(path: Path, delimiter: str | None, requested: str) -> str:
    """``chat``, ``preference`` or ``completion``, from the option or the first example /
    the columns."""
    if requested != "auto":
        return requested
    records = Records(path, delimiter)
    if records.columns is not None:
        return "chat" if "messages" in records.columns else "completion"
    iterator = iter(records)
    try:
        first = next(iterator, None)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    return detect_format(first[1] if first else None).value


def _where(lines: list[int], count: int) -> str:
    """``line 4`` or ``lines 4, 9, 17, ...`` (the first few of ``count``)."""
    shown = ", ".join(str(n) for n in lines)
    more = ", ..." if count > len(lines) else ""
    return f"line {shown}" if len(lines) == 1 and not more else f"lines {shown}{more}"


def _describe(tally: Tally) -> str:
    label = "error" if tally.severity is Severity.ERROR else "warning"
    if tally.lines:
        noun = "example" if tally.count == 1 else "examples"
        where = _where(tally.lines, tally.count)
        return f"{label}: {tally.code.value}: {tally.count:,} {noun} ({where}): {tally.sample}"
    return f"{label}: {tally.code.value}: {tally.sample}"


def _report(analysis: Analysis, name: str, *, with_fixes: bool = True) -> None:
    counter = analysis.counter
    if not counter.exact:
        exactness = "token counts ESTIMATED (no tokenizer available)"
    elif analysis.count_all:
        exactness = f"tokens counted exactly ({counter.source}, {getattr(counter, 'encoding', '')})"
    else:
        exactness = (
            f"token limit checked exactly ({counter.source}, {getattr(counter, 'encoding', '')})"
        )
    click.echo(f"{name}: {analysis.examples:,} examples, {analysis.fmt} format; {exactness}")
    for note in analysis.notes:
        click.echo(f"  note: {note}")
    tallies = analysis.ordered()
    if not tallies:
        click.echo("  no problems found")
    for tally in tallies:
        click.echo("  " + _describe(tally))
        if with_fixes and tally.fix:
            click.echo(f"      fix: {tally.fix}")


def _analyze(
    path: Path,
    fmt: str,
    model: str,
    max_tokens: int,
    delimiter: str | None,
    jobs: int | None,
    progress: bool | None,
    *,
    count_all: bool,
) -> Analysis:
    with _progress(progress, path, f"checking {path.name}") as update:
        analysis = analyze(
            path,
            fmt,
            _counter(model),
            max_tokens,
            jobs=jobs or default_jobs(),
            delimiter=delimiter,
            progress=update,
            count_all=count_all,
            rules=_rules(),
        )
    problem = format_problem(model, Format(fmt))
    if problem and analysis.examples:
        analysis.tallies[Code.FORMAT_NOT_FOR_MODEL] = Tally(
            Code.FORMAT_NOT_FOR_MODEL,
            analysis.examples,
            [],
            f"{problem}: OpenAI refuses it for this model; pass --model for the model "
            "you mean to train",
        )
    return analysis


def _common(function: Any) -> Any:
    """Options every file-reading command has."""
    options = [
        click.option(
            "--format",
            "fmt",
            type=FORMATS,
            default="auto",
            show_default=True,
            help="chat ({'messages': [...]}), preference ({'input', 'preferred_output', "
            "'non_preferred_output'}) or completion ({'prompt', 'completion'}); "
            "auto looks at the first example or the columns.",
        ),
        click.option(
            "--model",
            help="Model to train (token encoding, limit, price); default: the configured "
            "base model. ft: names work.",
        ),
        click.option(
            "--max-tokens",
            type=click.IntRange(min=1),
            help="Per-example token limit (default: training.max_example_tokens).",
        ),
        click.option(
            "--csv-delimiter",
            help="Cell delimiter of CSV input: , ; tab | (default: guessed from the header).",
        ),
        click.option(
            "--jobs",
            type=click.IntRange(min=1),
            help="Processes for large JSONL files (default: the CPUs, up to 8).",
        ),
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Progress bar on stderr (default: when stderr is a terminal).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _model_and_limit(model: str | None, max_tokens: int | None) -> tuple[str, int]:
    settings = _state().settings
    model = model or settings.model.base_model
    return model, max_tokens or example_limit(model, settings.training.max_example_tokens)


def _redis_options(function: Any) -> Any:
    function = click.option(
        "--redis-url",
        envvar="REDIS_URL",
        default=DEFAULT_REDIS_URL,
        show_default=True,
        help="Redis holding the approved-example log (env REDIS_URL).",
    )(function)
    return function


def _split_options(function: Any) -> Any:
    function = click.option(
        "--seed",
        type=int,
        help="Seed of the training/validation split (default: training.seed).",
    )(function)
    function = click.option(
        "--validation-fraction",
        type=click.FloatRange(0.0, 1.0, max_open=True),
        help="Share of examples for the validation file (default: training.validation_fraction).",
    )(function)
    return function


def _import_output_options(function: Any) -> Any:
    """Where an import writes, what it checks against, and whether it seeds the log."""
    function = _redis_options(function)
    function = click.option(
        "--to-redis", is_flag=True, help="Also add the examples to the approved-example log."
    )(function)
    function = click.option(
        "--model", help="Model for the token checks (default: the configured base model)."
    )(function)
    function = click.option(
        "--out-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Where to write <name>_train.jsonl and <name>_valid.jsonl (default: next to FILE).",
    )(function)
    return function


def _system_option(what: str = "System prompt for chat examples") -> Any:
    return click.option(
        "--system",
        help=f"{what} (default: the configured model.system_prompt; '' for none).",
    )


def _system(value: str | None) -> str | None:
    if value is None:
        return _state().settings.model.system_prompt
    return value or None


def _seed_lines(result: Any, url: str) -> str:
    from workers.datasets.seed import redacted

    return (
        f"approved-example log at {redacted(url)}: {result.added:,} added, "
        f"{result.existing:,} already there"
    )


# --- import-chats --------------------------------------------------------------------------
@cli.command("import-chats", context_settings=CONTEXT)
@click.argument("file", type=FILE)
@click.option(
    "--csv-delimiter",
    help="Cell delimiter: , or ; (spreadsheets often export ' ; '), tab (default: guessed).",
)
@click.option(
    "--delimiter",
    default="###",
    show_default=True,
    help="A row whose cells all equal this ends a conversation.",
)
@click.option(
    "--buffer-size",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Previous messages in each prompt; 0 gives empty prompts (learning a voice).",
)
@click.option(
    "--include-stop/--no-include-stop",
    default=True,
    show_default=True,
    help="End completions with the stop sequence: newline, first actor's name, ': '.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["completion", "chat"]),
    default="completion",
    show_default=True,
)
@_system_option()
@_split_options
@_import_output_options
def import_chats(
    file: Path,
    csv_delimiter: str | None,
    delimiter: str,
    buffer_size: int,
    include_stop: bool,
    fmt: str,
    system: str | None,
    validation_fraction: float | None,
    seed: int | None,
    out_dir: Path | None,
    model: str | None,
    to_redis: bool,
    redis_url: str,
) -> None:
    """Import conversations from a CSV/XLSX table.

    The first row names the two actors (e.g. Human;AI); each row is one exchange; a row
    of delimiters (###) ends a conversation. One example per reply of the second actor,
    with the conversation so far (up to --buffer-size messages) as context.
    Conversations go whole to training or validation, so no context leaks between them.
    """
    system_prompt = _system(system)
    names = actors(Table(file, csv_delimiter, strip_cells=True))

    def units() -> Iterator[_Unit]:
        for turns in conversations(Table(file, csv_delimiter, strip_cells=True), delimiter):
            chats = chat_examples(turns, buffer_size, system_prompt)
            if fmt == "chat":
                yield [(line, chat, chat) for line, chat in chats]
            else:
                written = completion_examples(turns, names, buffer_size, include_stop)
                yield [
                    (line, example, chat)
                    for (line, example), (_, chat) in zip(written, chats, strict=True)
                ]

    def report(analysis: Analysis, counts: dict[str, int], split: _Split) -> None:
        _import_report(analysis, file, names, counts, split.train_path, split.valid_path)

    _run_import(
        file,
        fmt,
        model,
        out_dir,
        validation_fraction,
        seed,
        redis_url if to_redis else None,
        units,
        "conversations",
        report,
    )


_Unit = list[tuple[int, dict[str, Any], dict[str, Any]]]
"""What an import goes to training or validation with, whole: one conversation or one
pair, as (table line, example to write, the same example as a chat for the log)."""


def _run_import(
    file: Path,
    fmt: str,
    model: str | None,
    out_dir: Path | None,
    validation_fraction: float | None,
    seed: int | None,
    redis_url: str | None,
    units: Callable[[], Iterator[_Unit]],
    unit_name: str,
    report: Callable[[Analysis, dict[str, int], _Split], None],
) -> None:
    """The import pipeline every table importer runs: check each example as it is made,
    send each unit whole to training or validation (a seeded draw), write both files
    atomically, report, and with ``redis_url`` seed the approved-example log with the
    chat form of the examples that passed (reading the table again: nothing is kept)."""
    settings = _state().settings
    model, limit = _model_and_limit(model, None)
    redis = connect(redis_url) if redis_url else None
    fraction = (
        settings.training.validation_fraction
        if validation_fraction is None
        else validation_fraction
    )
    rng = random.Random(settings.training.seed if seed is None else seed)
    analysis = Analysis(fmt, _counter(model), limit, rules=_rules())
    feed = analysis.feeder()
    counts = {"train": 0, "valid": 0, unit_name: 0}
    with _split_output(file, out_dir, analysis, counts) as split:
        for unit in units():
            counts[unit_name] += 1
            to_valid = rng.random() < fraction
            for line, example, _ in unit:
                if feed(line, example):
                    split.write(example, to_valid)
    report(analysis, counts, split)
    if redis is not None:

        def chats() -> Iterator[list[dict[str, Any]]]:
            for unit in units():
                for _, _, chat in unit:
                    facts = examine_chat(chat, analysis.counter, limit, rules=analysis.rules)
                    if _loadable(facts.findings):
                        yield chat["messages"]

        assert redis_url is not None
        click.echo(_seed_lines(seed_log(redis, chats(), file), redis_url))


def seed_log(redis: Any, examples: Iterator[list[dict[str, Any]]], file: Path) -> Any:
    """Seed the log with examples from ``file`` (source ``import:<file name>``)."""
    return seed(redis, examples, source_of(file.name))


def _loadable(findings: list[Any]) -> bool:
    return not any(f.severity is Severity.ERROR for f in findings)


class _Split:
    """The train and validation files an import writes, and its counts of each."""

    def __init__(
        self, outputs: AtomicOutputs, folder: Path, stem: str, counts: dict[str, int]
    ) -> None:
        self.train_path = folder / f"{stem}_train.jsonl"
        self.valid_path = folder / f"{stem}_valid.jsonl"
        self.train = outputs.open(self.train_path)
        self.valid = outputs.open(self.valid_path)
        self.counts = counts

    def write(self, example: dict[str, Any], to_valid: bool) -> None:
        """One example, to the validation file or the training file."""
        (self.valid if to_valid else self.train).write(dumps(example))
        self.counts["valid" if to_valid else "train"] += 1


@contextmanager
def _split_output(
    file: Path, out_dir: Path | None, analysis: Analysis, counts: dict[str, int]
) -> Iterator[_Split]:
    """An import's output files: committed whole when the import ends well (an empty
    validation file left out), none of them if it fails or found no example; the
    analysis is finished or discarded with them."""
    try:
        with AtomicOutputs() as outputs:
            split = _Split(outputs, out_dir or file.parent, file.stem, counts)
            yield split
            if not counts["train"] + counts["valid"]:
                raise DatasetError(f"{file}: no examples found: nothing written")
            if not counts["valid"]:
                outputs.forget(split.valid)
            outputs.commit()
    except BaseException:
        analysis.discard()
        raise
    analysis.finish()


def _import_report(
    analysis: Analysis,
    file: Path,
    names: tuple[str, str] | None,
    counts: dict[str, int],
    train_path: Path,
    valid_path: Path,
) -> None:
    what = f"{counts['conversations']:,} conversations ({names[0]}/{names[1]})" if names else ""
    if not what:
        what = f"{counts.get('pairs', 0):,} pairs"
    click.echo(f"{file.name}: {counts['train'] + counts['valid']:,} examples from {what}")
    click.echo(f"  wrote {train_path} ({counts['train']:,} examples)")
    if counts["valid"]:
        click.echo(f"  wrote {valid_path} ({counts['valid']:,} examples)")
    else:
        click.echo("  no validation examples (raise --validation-fraction to get some)")
    for note in analysis.notes:
        click.echo(f"  note: {note}")
    for tally in analysis.ordered():
        if tally.severity is Severity.ERROR and tally.code not in _FILE_CODES:
            click.echo("  dropped, " + _describe(tally))
        else:
            click.echo("  " + _describe(tally).replace("error: ", "warning: ", 1))


# --- import-qa -----------------------------------------------------------------------------
@cli.command("import-qa", context_settings=CONTEXT)
@click.argument("file", type=FILE)
@click.option("--question-column", default="question", show_default=True)
@click.option("--answer-column", default="answer", show_default=True)
@click.option("--csv-delimiter", help="Cell delimiter of a CSV (default: guessed from the header).")
@click.option(
    "--split-numbered/--no-split-numbered",
    default=True,
    show_default=True,
    help="Cells holding numbered lists ('1. ...' on separate lines) give one pair per number.",
)
@click.option(
    "--min-length",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Drop pairs whose question or answer has fewer characters.",
)
@click.option("--stop", default="", help="Stop marker appended to every answer (default: none).")
@_system_option()
@_split_options
@_import_output_options
def import_qa(
    file: Path,
    question_column: str,
    answer_column: str,
    csv_delimiter: str | None,
    split_numbered: bool,
    min_length: int,
    stop: str,
    system: str | None,
    validation_fraction: float | None,
    seed: int | None,
    out_dir: Path | None,
    model: str | None,
    to_redis: bool,
    redis_url: str,
) -> None:
    """Import a Q&A table (CSV/XLSX) as chat examples with the system prompt."""
    system_prompt = _system(system)
    stats = QaStats()

    def units() -> Iterator[_Unit]:
        nonlocal stats
        stats = QaStats()
        table = Table(file, csv_delimiter)
        pairs = qa_pairs(table, question_column, answer_column, split_numbered, min_length, stats)
        for line, question, answer in pairs:
            example = qa_example(question, answer, system_prompt, stop)
            yield [(line, example, example)]

    def report(analysis: Analysis, counts: dict[str, int], split: _Split) -> None:
        _import_report(analysis, file, None, counts, split.train_path, split.valid_path)
        if stats.too_short:
            click.echo(
                f"  dropped {stats.too_short:,} pairs shorter than {min_length} characters "
                f"({_where(stats.too_short_lines, stats.too_short)})"
            )
        if stats.unpaired:
            click.echo(
                f"  dropped {stats.unpaired:,} numbered items without a partner "
                f"({_where(stats.unpaired_lines, stats.unpaired)})"
            )

    _run_import(
        file,
        "chat",
        model,
        out_dir,
        validation_fraction,
        seed,
        redis_url if to_redis else None,
        units,
        "pairs",
        report,
    )


# --- prepare -------------------------------------------------------------------------------
@cli.command(context_settings=CONTEXT)
@click.argument("file", type=FILE)
@_common
@click.option(
    "--fix/--no-fix",
    default=None,
    help="Apply every available fix without asking / apply none. Default: ask when run "
    "in a terminal, otherwise only report.",
)
@click.option(
    "--interactive/--no-interactive",
    default=None,
    help="Ask about each fix (default: when stdin and stdout are a terminal).",
)
@click.option("--check", is_flag=True, help="Only report; write nothing.")
@click.option(
    "--split",
    is_flag=True,
    help="Also write a validation file (<name>_prepared_valid.jsonl).",
)
@_split_options
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Training file to write (default: <name>_prepared.jsonl next to FILE).",
)
@_system_option("System prompt the missing_system_message fix adds")
def prepare(
    file: Path,
    fmt: str,
    model: str | None,
    max_tokens: int | None,
    csv_delimiter: str | None,
    jobs: int | None,
    progress: bool | None,
    fix: bool | None,
    interactive: bool | None,
    check: bool,
    split: bool,
    validation_fraction: float | None,
    seed: int | None,
    output: Path | None,
    system: str | None,
) -> None:
    """Validate a CSV, TSV, XLSX, JSON or JSONL file and write <name>_prepared.jsonl.

    Reports everything OpenAI's preparation tools check (format errors, duplicates,
    token limit, separators, stop sequences, common prefixes, classification labels,
    too few examples), each with how many examples it touches and up to three lines.
    With --fix (or answering the questions in a terminal) it repairs or drops what it
    can. Exits 1 without writing when OpenAI would reject the result.
    """
    settings = _state().settings
    model, limit = _model_and_limit(model, max_tokens)
    fmt = _detect_format(file, csv_delimiter, fmt)
    analysis = _analyze(file, fmt, model, limit, csv_delimiter, jobs, progress, count_all=False)
    system_prompt = _system(system)
    no_system = analysis.tallies.get(Code.MISSING_SYSTEM_MESSAGE)
    if no_system is not None and not system_prompt:
        # Nothing to add: offering the fix would report a repair that changes nothing.
        no_system.fixable = False
        no_system.sample += " (no system prompt to add: pass --system or set model.system_prompt)"
    _report(analysis, file.name)
    if check:
        problems = blocking(analysis, frozenset())
        if problems:
            raise click.ClickException(
                f"{file.name} would be rejected: {len(problems)} kind(s) of error above"
            )
        return
    fixable = [tally for tally in analysis.ordered() if tally.fix]
    if fix is None and interactive is None:
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
    accepted: set[Code] = set()
    if fix:
        accepted = {tally.code for tally in fixable}
    elif fix is None and interactive and fixable:
        for tally in fixable:
            if click.confirm(
                f"Fix {tally.code.value} ({tally.count:,} example{'' if tally.count == 1 else 's'}): "
                f"{FIXES[tally.code]}?",
                default=True,
            ):
                accepted.add(tally.code)
    problems = blocking(analysis, accepted)
    if problems:
        codes = ", ".join(tally.code.value for tally in problems)
        fixable_left = any(tally.fix for tally in problems)
        hint = "; re-run with --fix to repair or drop them" if fixable_left else ""
        raise click.ClickException(
            f"{file.name} would be rejected by OpenAI ({codes}): nothing written{hint}"
        )
    fraction = validation_fraction
    if fraction is None:
        fraction = settings.training.validation_fraction if split else 0.0
    train_path, valid_path = output_paths(file, output, fraction > 0)
    plan = Plan(
        frozenset(accepted),
        system_prompt,
        fraction,
        settings.training.seed if seed is None else seed,
    )
    with _progress(progress, file, f"writing {train_path.name}") as update:
        result = write_prepared(
            file, analysis, plan, train_path, valid_path, delimiter=csv_delimiter, progress=update
        )
    if not result.written:
        raise click.ClickException(
            f"only {result.total} examples left after the fixes; OpenAI requires at least 10: "
            "nothing written"
        )
    changes = []
    if result.repaired:
        changes.append(f"{result.repaired:,} repaired")
    if result.dropped:
        changes.append(f"{result.dropped:,} dropped")
    if result.duplicates:
        changes.append(f"{result.duplicates:,} duplicates dropped")
    click.echo(
        f"wrote {result.paths[0]} ({result.train:,} examples)"
        + (f" and {result.paths[1]} ({result.valid:,} examples)" if len(result.paths) > 1 else "")
        + (f": {', '.join(changes)}" if changes else "")
    )
    if valid_path is not None and len(result.paths) == 1:
        click.echo("  the validation split came out empty: no validation file written")
    if fmt == "completion" and not analysis.open_ended:
        separator = (
            analysis.suggested_separator
            if Code.MISSING_PROMPT_SEPARATOR in accepted
            else analysis.separator
        )
        stop = analysis.suggested_stop if Code.MISSING_STOP_SEQUENCE in accepted else analysis.stop
        if separator:
            click.echo(f"  after fine-tuning, end every prompt with {show(separator)}")
        if stop:
            click.echo(f"  and pass stop=[{show(stop)}] so generation ends where it should")


# --- stats ---------------------------------------------------------------------------------
@cli.command(context_settings=CONTEXT)
@click.argument("file", type=FILE)
@_common
@click.option(
    "--epochs",
    type=click.IntRange(1, 50),
    help="Epochs to price (default: training.openai.n_epochs, else OpenAI's default rule).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def stats(
    file: Path,
    fmt: str,
    model: str | None,
    max_tokens: int | None,
    csv_delimiter: str | None,
    jobs: int | None,
    progress: bool | None,
    epochs: int | None,
    as_json: bool,
) -> None:
    """Examples, tokens per example (min/mean/p95/max), examples over the limit,
    assistant tokens, billed training tokens and the estimated price."""
    settings = _state().settings
    model, limit = _model_and_limit(model, max_tokens)
    fmt = _detect_format(file, csv_delimiter, fmt)
    analysis = _analyze(file, fmt, model, limit, csv_delimiter, jobs, progress, count_all=True)
    data = summary(analysis, model, epochs or settings.training.openai.n_epochs, price_for(model))
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        for line in render(data, file.name):
            click.echo(line)


# --- load ----------------------------------------------------------------------------------
@cli.command(context_settings=CONTEXT)
@click.argument("file", type=FILE)
@_common
@_redis_options
@_system_option("System prompt put first in converted completions")
@click.option(
    "--separator",
    help="Prompt separator to strip from completion-format prompts (default: detected).",
)
@click.option(
    "--stop",
    help="Stop sequence to strip from completion-format completions (default: detected).",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Load the valid examples even when some are invalid (default: load nothing).",
)
def load(
    file: Path,
    fmt: str,
    model: str | None,
    max_tokens: int | None,
    csv_delimiter: str | None,
    jobs: int | None,
    progress: bool | None,
    redis_url: str,
    system: str | None,
    separator: str | None,
    stop: str | None,
    skip_invalid: bool,
) -> None:
    """Add a file's valid examples to the approved-example log (source import:<file>).

    Completion-format examples become chats: system prompt, the prompt as the user
    message and the completion as the answer, without separator, stop sequence and
    leading space. Content already in the log is not added again.
    """
    model, limit = _model_and_limit(model, max_tokens)
    fmt = _detect_format(file, csv_delimiter, fmt)
    if fmt == Format.PREFERENCE.value:
        raise click.ClickException(
            f"{file.name} holds preference pairs: load takes chat or prompt/completion files "
            "(the log's examples become pairs when a correction is approved)"
        )
    redis = connect(redis_url)
    analysis = _analyze(file, fmt, model, limit, csv_delimiter, jobs, progress, count_all=False)
    invalid = analysis.invalid  # examples with errors of their own (file-wide ones do not matter)
    if invalid:
        _report(analysis, file.name, with_fixes=False)
        if not skip_invalid:
            raise click.ClickException(
                f"{invalid:,} invalid examples in {file.name}: nothing loaded "
                "(fix them with prepare --fix, or pass --skip-invalid)"
            )
    system_prompt = _system(system)
    if separator is None:
        separator = (
            marker_of(analysis.prompt_suffix, SEPARATORS)
            if analysis.prompt_prefix is not None
            else ""
        )
    if stop is None:
        stop = (
            marker_of(analysis.completion_suffix, STOPS)
            if analysis.prompt_prefix is not None
            else ""
        )
    examine = examiner(Format(fmt))
    if fmt == Format.CHAT.value:
        examine = partial(examine, rules=analysis.rules)
    counter = analysis.counter

    def chats(update: ProgressFn | None) -> Iterator[list[dict[str, Any]]]:
        for _, obj in Records(file, csv_delimiter, update):
            if not _loadable(examine(obj, counter, limit).findings):
                continue
            if fmt == "chat":
                yield obj["messages"]
            else:
                keys, _ = completion_fields(obj)
                yield completion_to_messages(
                    obj[keys["prompt"]], obj[keys["completion"]], system_prompt, separator, stop
                )

    with _progress(progress, file, f"loading {file.name}") as update:
        result = seed_log(redis, chats(update), file)
    skipped = f", {invalid:,} invalid skipped" if invalid else ""
    click.echo(f"{file.name}: {analysis.examples:,} examples{skipped}")
    click.echo("  " + _seed_lines(result, redis_url))


def main() -> None:
    """Entry point of ``python -m workers.datasets``."""
    cli(prog_name="python -m workers.datasets")
