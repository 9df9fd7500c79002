"""Building an incremental training set from approved transcripts in Redis, next to a
straightforward pandas conversion of the same data, in the same run; and the cost of a
retrain against the size of the consumed history.

For each size, the approved log in an empty Redis db is filled with synthetic Slack
transcripts (multi-turn threads, markdown, numbers, some emails, phone and card
numbers, Slack mentions, corrections, near-duplicate re-approvals), then each variant
runs in its own fresh process so its peak memory is its own:

* ``trainset``: :func:`workers.trainset.build` as the training job runs it (streamed
  batches, Redis-side de-duplication, sampled exact token counts).
* ``trainset-exact``: the same with every example's tokens counted exactly.
* ``pandas``: what the chat-to-JSONL notebooks do: load every transcript into a
  DataFrame, ``apply`` a row-wise conversion, the contract's format checks,
  ``drop_duplicates``, exact token counts of what is left against the same limit,
  ``sample`` a validation split and write JSONL.
* ``pandas-helpers``: the same with the project's PII scrubber and normaliser, so only
  the pipeline differs.

The speed-up that counts is ``pandas`` against ``trainset-exact``: both count every
token exactly. ``trainset`` (sampled counts) must keep and reject exactly the lines
``trainset-exact`` does (same file content, same over-limit rejections; the run fails
otherwise); the error of its token total is printed. With a low ``--limit`` (700) some
examples are over it, and all variants must reject the same number. Every variant runs
``--repeat`` times in alternating order; the median counts.

    python -m bench.bench_trainset --sizes 25000,100000

With ``--retrain 10000,100000`` it measures instead a retrain: that many consumed
examples, then ``--new`` (1,000) approved after the cursor, and the build of the new set
with replay drawn from the approval-time reservoir against the same build drawing it by
scanning the consumed log (the way it was done before), alternating, repeated.

Reported: examples per second (transcripts read / wall time of the build, reading from
Redis included), peak RSS of the process and its growth over the RSS after start-up
(imports, tokenizer) — the working memory the build itself needed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis import Redis

from core import approved, keys

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini-2024-07-18"
SYSTEM = (
    "You are tuneloop, a helpful assistant for this team in Slack. Answer clearly and "
    "briefly, use Slack markdown, and say so when you do not know."
)
VARIANTS = ("trainset", "trainset-exact", "pandas", "pandas-helpers")
LIMIT = 65536
"""The per-example limit, as configured by default: most examples are far below it, so
``trainset`` estimates their tokens from a sample. ``--limit 700`` makes every variant
reject some of these transcripts (~470 tokens on average) as over the limit; the build
then counts those near the limit exactly, as it always does."""


# --- synthetic data ---------------------------------------------------------------------
def _vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
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
    ]
    words = list(common)
    while len(words) < size:
        words.append("".join(rng.choice(letters) for _ in range(rng.randint(3, 10))))
    return words


def _sentence(rng: random.Random, words: list[str], n: int) -> str:
    picked = [
        rng.choice(words) if rng.random() < 0.6 else words[rng.randint(0, 60)] for _ in range(n)
    ]
    text = " ".join(picked)
    return text[0].upper() + text[1:] + rng.choice([".", "?", "!", "."])


def _pii(rng: random.Random, i: int) -> str:
    roll = rng.random()
    if roll < 0.04:
        return f" Mail me at person{i}@example.com."
    if roll < 0.06:
        return f" Call +1 415-555-{i % 10000:04d}."
    if roll < 0.065:
        return " My card is 4111 1111 1111 1111."
    if roll < 0.17:
        return f" Ask <@U{i % 900 + 100:03d}ABC> about it."
    if roll < 0.37:
        return f" Version {rng.randint(1, 9)}.{rng.randint(0, 20)} from {rng.randint(2019, 2026)}."
    return ""


def _transcript(rng: random.Random, words: list[str], i: int) -> approved.Example:
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):  # earlier turns of the thread
        messages.append({"role": "user", "content": _sentence(rng, words, rng.randint(6, 25))})
        messages.append(
            {"role": "assistant", "content": _sentence(rng, words, rng.randint(20, 90))}
        )
    question = _sentence(rng, words, rng.randint(8, 40)) + _pii(rng, i)
    answer_parts = [_sentence(rng, words, rng.randint(10, 30)) for _ in range(rng.randint(2, 6))]
    if rng.random() < 0.3:
        answer_parts.insert(1, "\n".join(f"• {_sentence(rng, words, 6)}" for _ in range(3)))
    messages.append({"role": "user", "content": question})
    messages.append({"role": "assistant", "content": "\n\n".join(answer_parts)})
    rejected = _sentence(rng, words, rng.randint(20, 60)) if rng.random() < 0.1 else None
    return approved.Example(
        messages=messages,
        source="slack",
        approved_by="bench",
        approved_at=1_700_000_000 + i,
        answer_id=f"C1-{i}",
        rejected=rejected,
    )


def _near_copy(example: approved.Example) -> approved.Example:
    """The same transcript re-approved with different case and punctuation."""
    messages = [dict(m) for m in example.messages]
    messages[-1]["content"] = messages[-1]["content"].upper().replace(".", " .")
    return approved.Example(
        messages=messages, source="slack", approved_by="bench", answer_id=example.answer_id
    )


def fill(redis: Redis, n: int, seed: int = 7, first: int = 0) -> None:
    """Append ``n`` approved transcripts (about 4% near-duplicates) to the log, the way
    approvals append them (content-hash guard and replay reservoir in one script)."""
    rng = random.Random(seed)
    words = _vocabulary(rng)
    recent: list[approved.Example] = []
    pipe = redis.pipeline(transaction=False)
    for i in range(n):
        if recent and rng.random() < 0.04:
            example = _near_copy(rng.choice(recent))
        else:
            example = _transcript(rng, words, first + i)
            recent = (recent + [example])[-200:]
        pipe.eval(
            approved._APPEND,
            4,
            keys.APPROVED_HASHES,
            keys.APPROVED_LOG,
            keys.APPROVED_RESERVOIR,
            keys.APPROVED_RESERVOIR_SEEN,
            example.content_hash(),
            example.to_json(),
            approved.RESERVOIR_SIZE,
            repr(rng.random()),
        )
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


# --- the variants (each runs in a fresh process) ----------------------------------------
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _settings(out: Path, limit: int, **training: Any) -> Any:
    from core.settings import load_behaviour

    settings = load_behaviour()
    update = {"sets_dir": str(out), "max_example_tokens": limit, **training}
    return settings.model_copy(update={"training": settings.training.model_copy(update=update)})


def _digest_of(paths: list[Path | None]) -> str:
    """One hash of the lines of the set files, in sorted order (what was kept)."""
    lines: list[bytes] = []
    for path in paths:
        if path is not None:
            lines += path.read_bytes().splitlines()
    return hashlib.sha256(b"\n".join(sorted(lines))).hexdigest()[:16]


def run_trainset(redis: Redis, out: Path, exact: bool, limit: int) -> dict[str, Any]:
    from core.tokens import counter_for_model
    from workers import trainset

    settings = _settings(out, limit)
    if exact:
        settings = _settings(out, limit, exact_token_examples=10**9)
    counter_for_model(MODEL).count("warm up")
    start_rss = _rss_mb()
    started = time.perf_counter()
    request = trainset.BuildRequest(
        set_id="set-bench",
        version=1,
        after_id="0-0",
        upto_id=trainset.last_id(redis),
        base_model=MODEL,
        min_train=10,
    )
    result = trainset.build(redis, settings, request)
    seconds = time.perf_counter() - started
    peak = _rss_mb()  # before reading the files back for the comparison
    counts = result.manifest["counts"]
    return {
        "seconds": seconds,
        "read": counts["read"],
        "train": counts["train"],
        "valid": counts["valid"],
        "dropped_duplicates": counts["exact_duplicates"] + counts["near_duplicates"],
        "over_limit": result.manifest["issues"].get("too_many_tokens", 0),
        "tokens": result.manifest["tokens"]["total"],
        "kept": _digest_of([result.files.train_path, result.files.valid_path]),
        "start_rss_mb": start_rss,
        "peak_rss_mb": peak,
    }


def run_pandas(redis: Redis, out: Path, helpers: bool, limit: int) -> dict[str, Any]:
    """The notebook way: everything in a DataFrame, row-wise ``apply``, then JSONL.

    The same decisions as the build: the contract's format checks, de-duplication on
    the same key, then exact token counts of what is left (after de-duplication, as the
    build counts them) against the same limit. Without ``helpers`` each text goes
    through the PII patterns and a regex normaliser as a straightforward script would;
    with them it uses the project's scrubber and normaliser (C-speed pre-checks), so
    only the pipeline differs from ``trainset``.
    """
    import re
    import sys as _sys

    import pandas as pd

    from core.examples import CachedCounter, Severity, examine_chat
    from core.tokens import counter_for_model
    from workers import pii as scrubbing
    from workers import trainset

    settings = _settings(out, limit)
    pii = settings.training.pii
    counter = counter_for_model(MODEL)
    counter.count("warm up")
    checker = CachedCounter(counter)
    punctuation = re.compile(r"[\W_]+")

    def scrub_plain(text: str) -> str:
        text = scrubbing._EMAIL.sub(scrubbing.EMAIL_MASK, text)
        text = scrubbing._MENTION.sub(scrubbing.MENTION_MASK, text)
        text = scrubbing._mask_cards(text, None)
        return scrubbing._PHONE.sub(scrubbing.PHONE_MASK, text)

    def scrub(text: str) -> str:
        return scrubbing.scrub(text, pii) if helpers else scrub_plain(text)

    def key(chat: dict[str, Any]) -> bytes | str:
        joined = trainset.SEPARATOR.join(m["content"] for m in chat["messages"])
        return trainset.normalise(joined) if helpers else punctuation.sub("", joined.lower())

    def error(chat: dict[str, Any]) -> str | None:
        facts = examine_chat(chat, checker, _sys.maxsize, count_all=False)
        errors = [f.code.value for f in facts.findings if f.severity is Severity.ERROR]
        return errors[0] if errors else None

    start_rss = _rss_mb()
    started = time.perf_counter()

    rows = [example.__dict__ for _, example in approved.read_after(redis)]
    df = pd.DataFrame(rows)

    def to_chat(row: pd.Series) -> dict[str, Any]:
        messages = []
        last = len(row["messages"]) - 1
        for i, m in enumerate(row["messages"]):
            message = {"role": m["role"], "content": scrub(m["content"])}
            if m["role"] == "assistant" and i != last:
                message["weight"] = 0
            messages.append(message)
        return {"messages": messages}

    df["chat"] = df.apply(to_chat, axis=1)
    df["error"] = df["chat"].apply(error)
    df = df[df["error"].isna()]
    df["key"] = df["chat"].apply(key)
    deduplicated = df.drop_duplicates(subset="key")
    df = deduplicated.copy()
    df["n_tokens"] = df["chat"].apply(lambda c: counter.count_messages(c["messages"]))
    over_limit = int((df["n_tokens"] > limit).sum())
    df = df[df["n_tokens"] <= limit]
    n_valid = min(settings.training.max_validation_examples, round(len(df) * 0.1))
    valid = df.sample(n=n_valid, random_state=settings.training.seed)
    train = df.drop(valid.index)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("valid", valid)):
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for chat in part["chat"]:
                f.write(json.dumps(chat, ensure_ascii=False) + "\n")
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "read": len(rows),
        "train": len(train),
        "valid": len(valid),
        "dropped_duplicates": len(rows) - len(deduplicated),
        "over_limit": over_limit,
        "tokens": int(df["n_tokens"].sum()),
        "kept": "",
        "start_rss_mb": start_rss,
        "peak_rss_mb": _rss_mb(),
    }


def scan_replay_sample(redis: Redis, upto_id: str, k: int, rng: random.Random) -> Any:
    """The replay draw before the reservoir: Algorithm R over the whole consumed log."""
    from workers.logread import prefetched, read_range

    sample: list[bytes] = []
    seen = 0
    for batch in prefetched(read_range(redis, "0-0", upto_id)):
        for _, raw in batch:
            seen += 1
            if len(sample) < k:
                sample.append(raw)
            else:
                j = rng.randrange(seen)
                if j < k:
                    sample[j] = raw
    return seen, sample


def run_retrain(redis: Redis, out: Path, scan: bool) -> dict[str, Any]:
    """A retrain: the set of the new examples after the cursor, with replay."""
    from core.tokens import counter_for_model
    from workers import trainset

    if scan:
        trainset.replay_sample = scan_replay_sample  # the only difference between the two
    settings = _settings(out, 65536)
    counter_for_model(MODEL).count("warm up")
    cursor = redis.get(keys.APPROVED_CURSOR).decode()
    started = time.perf_counter()
    request = trainset.BuildRequest(
        set_id="set-bench",
        version=1,
        after_id=cursor,
        upto_id=trainset.last_id(redis),
        base_model=MODEL,
        min_train=10,
    )
    result = trainset.build(redis, settings, request)
    counts = result.manifest["counts"]
    return {
        "seconds": time.perf_counter() - started,
        "read": counts["read"],
        "train": counts["train"],
        "replay": counts["replay"],
        "replay_candidates": counts["replay_candidates"],
    }


def _child(variant: str, redis_url: str, limit: int) -> None:
    redis = Redis.from_url(redis_url)
    with tempfile.TemporaryDirectory() as tmp:
        if variant.startswith("retrain"):
            result = run_retrain(redis, Path(tmp), scan=variant == "retrain-scan")
        elif variant.startswith("pandas"):
            result = run_pandas(redis, Path(tmp), variant == "pandas-helpers", limit)
        else:
            result = run_trainset(redis, Path(tmp), variant == "trainset-exact", limit)
    print(json.dumps(result))


def _run_child(variant: str, redis_url: str, limit: int = 65536) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_trainset",
            "--child",
            variant,
            "--redis-url",
            redis_url,
            "--limit",
            str(limit),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise SystemExit(f"{variant} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[len(ordered) // 2], "all_seconds": [r["seconds"] for r in runs]}


def _builds(redis: Redis, args: argparse.Namespace, variants: list[str]) -> None:
    print(
        f"{'size':>8} {'variant':<15} {'seconds (runs)':<22} {'examples/s':>11} {'peak MB':>8} "
        f"{'growth MB':>9} {'train':>7} {'valid':>6} {'dups':>6} {'over':>5} {'tokens':>11}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        redis.flushdb()
        fill(redis, size)
        runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
        for repeat in range(args.repeat):
            for variant in variants if repeat % 2 == 0 else variants[::-1]:
                runs[variant].append(_run_child(variant, args.redis_url, args.limit))
        results = {variant: _median(runs[variant]) for variant in variants}
        for variant, r in results.items():
            seconds = ", ".join(f"{x:.2f}" for x in r["all_seconds"])
            print(
                f"{size:>8} {variant:<15} {seconds:<22} {r['read'] / r['seconds']:>11,.0f} "
                f"{r['peak_rss_mb']:>8.0f} {r['peak_rss_mb'] - r['start_rss_mb']:>9.0f} "
                f"{r['train']:>7} {r['valid']:>6} {r['dropped_duplicates']:>6} "
                f"{r['over_limit']:>5} {r['tokens']:>11,}",
                flush=True,
            )
        decisions = ("train", "valid", "dropped_duplicates", "over_limit")
        for variant, r in results.items():
            if variant != "trainset-exact" and "trainset-exact" in results:
                same = all(r[k] == results["trainset-exact"][k] for k in decisions)
                if not same:
                    sys.exit(f"{variant} decided differently from trainset-exact: {r}")
        if "trainset" in results and "trainset-exact" in results:
            sampled, exact = results["trainset"], results["trainset-exact"]
            if sampled["kept"] != exact["kept"]:
                sys.exit("sampled token counts changed which lines were kept")
            error = abs(sampled["tokens"] - exact["tokens"]) / exact["tokens"]
            print(
                f"{size:>8} sampled counts: the same lines kept and rejected as exact counts; "
                f"token total off by {error:.3%}",
                flush=True,
            )
        if "pandas" in results and "trainset-exact" in results:
            speedup = results["pandas"]["seconds"] / results["trainset-exact"]["seconds"]
            print(f"{size:>8} trainset-exact is {speedup:.1f}x faster than pandas", flush=True)
        if "pandas" in results and "trainset" in results:
            speedup = results["pandas"]["seconds"] / results["trainset"]["seconds"]
            print(f"{size:>8} trainset (sampled) is {speedup:.1f}x faster than pandas", flush=True)


def _retrains(redis: Redis, args: argparse.Namespace) -> None:
    print(
        f"{'consumed':>9} {'new':>6} {'replay from':<10} {'seconds (runs)':<22} "
        f"{'replayed':>8} {'candidates':>10}"
    )
    for history in (int(s) for s in args.retrain.split(",")):
        redis.flushdb()
        fill(redis, history)
        redis.set(keys.APPROVED_CURSOR, redis.xrevrange(keys.APPROVED_LOG, count=1)[0][0])
        fill(redis, args.new, seed=11, first=history)
        variants = ["retrain", "retrain-scan"]
        runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
        for repeat in range(args.repeat):
            for variant in variants if repeat % 2 == 0 else variants[::-1]:
                runs[variant].append(_run_child(variant, args.redis_url))
        for variant in variants:
            r = _median(runs[variant])
            seconds = ", ".join(f"{x:.2f}" for x in r["all_seconds"])
            source = "reservoir" if variant == "retrain" else "log scan"
            print(
                f"{history:>9,} {r['read']:>6,} {source:<10} {seconds:<22} "
                f"{r['replay']:>8,} {r['replay_candidates']:>10,}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="25000,100000", help="comma-separated log sizes")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--limit", type=int, default=LIMIT, help="per-example token limit")
    parser.add_argument("--repeat", type=int, default=2, help="runs of every variant")
    parser.add_argument(
        "--retrain",
        help="instead: retrain cost after these consumed history sizes (e.g. 10000,100000)",
    )
    parser.add_argument("--new", type=int, default=1000, help="new examples of a retrain")
    parser.add_argument(
        "--child", choices=(*VARIANTS, "retrain", "retrain-scan"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.redis_url, args.limit)
        return
    variants = args.variants.split(",")
    try:
        import pandas  # noqa: F401
    except ImportError:
        print("pandas is not installed (pip install pandas==3.1.1): its baselines are skipped")
        variants = [v for v in variants if not v.startswith("pandas")]
    redis = Redis.from_url(args.redis_url)
    if redis.dbsize():
        sys.exit(f"{args.redis_url} is not empty; give --redis-url of an empty db")
    try:
        if args.retrain:
            _retrains(redis, args)
        else:
            _builds(redis, args, variants)
    finally:
        redis.flushdb()


if __name__ == "__main__":
    main()
