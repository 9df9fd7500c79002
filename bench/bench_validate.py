"""Validating a big chat JSONL: the streaming validator next to a straightforward loop.

A chat file is generated (system prompt, a user question and an assistant answer per
line, every user and assistant text unique, about 1% duplicated lines and 0.5% broken
ones), then validated in the same run by:

* ``baseline``: what one writes first: ``json.loads`` per line, the same per-example
  checks (:func:`core.examples.examine_chat`) with the same token counter
  (:func:`core.tokens.counter_for_model`), everything collected in lists, then
  duplicates and errors computed from the lists. Like ``prepare`` it counts tokens only
  for examples that could reach the limit: it does the same work, and nothing more;
* ``baseline-exact``: the same loop counting every example's tokens exactly and
  computing the token distribution from the lists: the same work as ``stats``;
* ``prepare``: :func:`workers.datasets.analysis.analyze` as ``prepare`` and ``load``
  run it, in one process: every check, tokens counted only for examples that could
  reach the limit (a token covers at least one UTF-8 byte, a character at most four);
  compared with ``baseline``;
* ``stats``: the same validator counting every example's tokens exactly, as ``stats``
  runs it (token distribution, billed tokens); compared with ``baseline-exact``;
* ``prepare-jN`` / ``stats-jN``: the same with the file split over N forked processes
  (the command line's default on a machine with N CPUs).

Each variant runs in its own fresh process, so its peak memory is its own, and the
whole set runs ``--repeat`` times, in alternating order; the median time counts. Reported:
lines per second (wall time of the validation, reading included) and peak RSS with its
growth over the RSS after start-up (interpreter, tokenizer): the memory validation
itself needed. The variants must agree on examples, invalid examples, duplicates and
total tokens, or the run fails. Memory is also measured on a tenth of the file, to show
which variant grows with the file.

    python -m bench.bench_validate                 # 1,000,000 lines (about 2 minutes)
    python -m bench.bench_validate --lines 200000  # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: python bench/bench_validate.py
    sys.path.insert(0, str(ROOT))

MODEL = "gpt-4o-mini-2024-07-18"
MAX_TOKENS = 65536


# --- synthetic data ---------------------------------------------------------------------
def _sentences(rng: random.Random, count: int = 4000) -> list[str]:
    common = [
        "the",
        "a",
        "to",
        "of",
        "and",
        "in",
        "is",
        "for",
        "on",
        "with",
        "that",
        "this",
        "it",
        "you",
        "we",
        "can",
        "be",
        "how",
        "do",
        "i",
        "our",
        "deploy",
        "build",
        "server",
        "vpn",
        "laptop",
        "ticket",
        "policy",
        "release",
        "cache",
        "token",
        "model",
        "channel",
        "password",
        "reset",
        "expense",
        "report",
        "holiday",
        "printer",
        "database",
        "query",
        "error",
        "log",
        "branch",
        "please",
        "thanks",
        "when",
        "where",
        "why",
        "what",
        "which",
        "should",
        "would",
        "could",
        "need",
        "want",
        "help",
        "team",
    ]
    letters = "abcdefghijklmnopqrstuvwxyz"
    rare = ["".join(rng.choices(letters, k=rng.randint(3, 10))) for _ in range(2000)]
    out = []
    for _ in range(count):
        words = [
            rng.choice(common) if rng.random() < 0.7 else rng.choice(rare)
            for _ in range(rng.randint(5, 16))
        ]
        out.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ":"]))
    return out


def generate(path: Path, lines: int, seed: int = 7) -> None:
    """Write ``lines`` chat examples; user and assistant texts are all distinct."""
    from core.settings import load_behaviour

    system = load_behaviour().model.system_prompt
    rng = random.Random(seed)
    pool = _sentences(rng)
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    previous = ""
    with path.open("w", encoding="utf-8") as handle:
        for i in range(lines):
            roll = rng.random()
            if previous and roll < 0.01:
                handle.write(previous)  # an exact duplicate of the line before
                continue
            user = " ".join(rng.choices(pool, k=rng.randint(1, 3))) + f" (ticket {i})"
            answer = " ".join(rng.choices(pool, k=rng.randint(2, 8))) + f" Ref {i * 7919 % 100003}."
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
                {"role": "assistant", "content": answer},
            ]
            if roll > 0.9975:
                messages = messages[:2]  # no assistant message
            elif roll > 0.995:
                messages[1]["role"] = "Human"  # unknown role
            previous = dumps({"messages": messages}) + "\n"
            handle.write(previous)


# --- the variants, each run in a fresh process --------------------------------------------
def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_baseline(path: Path, count_all: bool) -> dict[str, Any]:
    """json.loads per line, the same checks and counter, everything kept in lists;
    tokens counted for every example (``count_all``) or, as ``prepare`` does, only
    where the limit could be reached."""
    from core.examples import DROP_CODES, Severity, examine_chat
    from core.tokens import counter_for_model

    counter = counter_for_model(MODEL)
    counter.count("warm up")
    start_rss = _rss_kib()
    started = time.perf_counter()
    examples: list[Any] = []
    facts = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            example = json.loads(line)
            examples.append(example)
            facts.append(examine_chat(example, counter, MAX_TOKENS, count_all=count_all))
    tokens = sorted(f.tokens for f in facts if f.tokens >= 0)
    invalid = [f for f in facts if any(x.severity is Severity.ERROR for x in f.findings)]
    seen: dict[int, int] = {}
    duplicates = []
    for number, fact in enumerate(facts, 1):
        if fact.fingerprint is None or any(x.code in DROP_CODES for x in fact.findings):
            continue
        if fact.fingerprint in seen:
            duplicates.append(number)
        else:
            seen[fact.fingerprint] = number
    p95 = tokens[max(0, math.ceil(0.95 * len(tokens)) - 1)] if tokens else 0
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "examples": len(examples),
        "invalid": len(invalid),
        "duplicates": len(duplicates),
        "tokens": sum(tokens) if count_all else None,
        "p95": p95 if count_all else None,
        "start_rss_kib": start_rss,
    }


def run_streaming(path: Path, jobs: int, count_all: bool) -> dict[str, Any]:
    """The validator ``prepare`` (count_all False) and ``stats`` (True) use."""
    from core.examples import CachedCounter
    from core.tokens import counter_for_model
    from workers.datasets.analysis import analyze

    counter = CachedCounter(counter_for_model(MODEL))
    start_rss = _rss_kib()
    started = time.perf_counter()
    analysis = analyze(path, "chat", counter, MAX_TOKENS, jobs=jobs, count_all=count_all)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "examples": analysis.examples,
        "invalid": analysis.invalid,
        "duplicates": analysis.duplicates.count,
        "tokens": analysis.tokens_total if count_all else None,
        "p95": analysis.percentile(0.95) if count_all else None,
        "start_rss_kib": start_rss,
    }


def _child(variant: str, path: Path) -> None:
    if variant.startswith("baseline"):
        result = run_baseline(path, count_all=variant == "baseline-exact")
    else:
        jobs = int(variant.rsplit("-j", 1)[1]) if "-j" in variant else 1
        result = run_streaming(path, jobs, count_all=variant.startswith("stats"))
    result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["worker_peak_rss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps(result))


def measure(variant: str, path: Path) -> dict[str, Any]:
    """Run one variant in a fresh interpreter and return its numbers."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--file", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"{variant} failed: {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the report ---------------------------------------------------------------------------
def _mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


BASELINE_OF = {"prepare": "baseline", "stats": "baseline-exact"}
"""Which baseline does the same work as each validator variant."""


def _baseline_of(variant: str) -> str:
    return BASELINE_OF[variant.split("-j")[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines of the big file")
    parser.add_argument(
        "--jobs", type=int, default=0, help="workers for streaming-jN (default: CPUs)"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs of every variant")
    parser.add_argument("--dir", type=Path, help="where to write the files (default: a temp dir)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.file)
        return

    from workers.datasets.analysis import default_jobs

    jobs = args.jobs or default_jobs()
    variants = ["baseline", "prepare", "baseline-exact", "stats"]
    if jobs > 1:
        variants += [f"prepare-j{jobs}", f"stats-j{jobs}"]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-validate-") as folder:
        sizes = [max(1, args.lines // 10), args.lines]
        files = {}
        for size in sizes:
            path = Path(folder) / f"chat-{size}.jsonl"
            started = time.perf_counter()
            generate(path, size)
            print(
                f"generated {size:,} lines ({path.stat().st_size / 2**20:,.0f} MiB) "
                f"in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            files[size] = path
        results: dict[tuple[int, str], dict[str, Any]] = {}
        for size in sizes:
            runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
            for repeat in range(args.repeat):
                order = variants if repeat % 2 == 0 else variants[::-1]
                for variant in order:
                    r = measure(variant, files[size])
                    runs[variant].append(r)
                    print(
                        f"  {size:>9,} lines  {variant:<14} "
                        f"{r['examples'] / r['seconds']:>9,.0f} lines/s  "
                        f"peak RSS {_mib(r['peak_rss_kib'])}",
                        flush=True,
                    )
            for variant in variants:
                ordered = sorted(runs[variant], key=lambda r: r["seconds"])
                median = ordered[len(ordered) // 2]
                median["all_seconds"] = [r["seconds"] for r in runs[variant]]
                results[size, variant] = median
            for variant in variants:
                if variant.startswith("baseline"):
                    continue
                mine, reference = results[size, variant], results[size, _baseline_of(variant)]
                for key in ("examples", "invalid", "duplicates", "tokens", "p95"):
                    if mine[key] != reference[key]:
                        raise SystemExit(
                            f"{variant} disagrees with its baseline on {key}: "
                            f"{mine[key]} != {reference[key]}"
                        )
    big = args.lines
    base = results[big, "baseline-exact"]
    print()
    print(
        f"{big:,}-line chat JSONL, {base['examples']:,} examples, {base['invalid']:,} invalid, "
        f"{base['duplicates']:,} duplicates, {base['tokens']:,} tokens; {os.cpu_count()} CPUs; "
        f"median of {args.repeat} runs in alternating order"
    )
    print()
    print(
        "| variant | same work as | lines/s | speed-up | runs (s) | peak RSS "
        "| growth over start-up | growth at 1/10 of the lines |"
    )
    print("|---|---|---:|---:|---|---:|---:|---:|")
    for variant in variants:
        r = results[big, variant]
        small = results[sizes[0], variant]
        workers = ""
        if "-j" in variant:
            workers = f" + {jobs} x {_mib(r['worker_peak_rss_kib'])} workers"
        rate = r["examples"] / r["seconds"]
        if variant.startswith("baseline"):
            against, ratio = "-", "1.00x"
        else:
            against = _baseline_of(variant)
            ratio = f"{results[big, against]['seconds'] / r['seconds']:.2f}x"
        runs_text = ", ".join(f"{seconds:.1f}" for seconds in r["all_seconds"])
        print(
            f"| {variant} | {against} | {rate:,.0f} | {ratio} | {runs_text} | "
            f"{_mib(r['peak_rss_kib'])}{workers} | "
            f"{_mib(r['peak_rss_kib'] - r['start_rss_kib'])} | "
            f"{_mib(small['peak_rss_kib'] - small['start_rss_kib'])} |"
        )


if __name__ == "__main__":
    main()
