"""Training throughput of tuneloop's LoRA run against a plain Hugging Face Trainer loop.

Every side trains the same LoRA (same base model, examples, rank, learning rate, batch
size, epochs, precision, gradient checkpointing, seed) in the same process; each repeat
runs every side once, and the side that goes first rotates from repeat to repeat:

* ``tuneloop``: :func:`workers.training.lora.train_adapter` as the training job runs it
  (TRL ``SFTTrainer``, completion-only loss, progress callback, atomic adapter save);
* ``plain HF Trainer``: ``transformers.Trainer`` on the same PEFT model, the examples
  tokenized with the chat template and prompt tokens masked, collated the same way as
  tuneloop collates them (padded rows; with ``--packing`` the same packed bins, each a row
  whose attention stays inside each example, or flattened when FlashAttention is used);
  the model computes its own loss;
* with ``--packing`` also the plain loop without packing, to show what packing buys.

The run fails unless tuneloop and its same-collation baseline did the same work: the same
number of optimizer steps and of training tokens, and final losses within
``--loss-tolerance``. Throughput is non-padding tokens seen per second of ``train()``
(model loading, data preparation and saving are not counted); the ratio is taken per
repeat (runs next to each other) and its median and range reported. On CUDA the peak GPU
memory of each run is reported too.

Without ``--model`` a randomly initialised Llama of the given size is built with a
word-level tokenizer, so nothing is downloaded. Examples:

    .venv-gpu/bin/python bench/bench_lora.py --repeat 5 --steps 20 --threads 1 --no-packing
    .venv-gpu/bin/python bench/bench_lora.py --device cuda --hidden-size 1024 --layers 8 \\
        --steps 100 --batch-size 8 --max-seq-length 1024
    .venv-gpu/bin/python bench/bench_lora.py --device cuda --model /models/Qwen2.5-0.5B-Instruct
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.settings import LocalTrainerSettings, TrainingMethod  # noqa: E402
from workers.training import lora  # noqa: E402

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|> {{ message['content'] }} </s> "
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="local base model directory (default: build a random Llama)")
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=4000, help="words in the synthetic vocabulary")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps of the unpacked run")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--min-words", type=int, default=20, help="shortest answer, in words")
    p.add_argument("--max-words", type=int, default=300, help="longest answer, in words")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    p.add_argument(
        "--gradient-checkpointing",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: on with CUDA, off on CPU (as train_adapter does)",
    )
    p.add_argument("--packing", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument(
        "--repeat", type=int, default=1, help="runs of each side, interleaved; medians reported"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--loss-tolerance",
        type=float,
        default=1e-3,
        help="largest allowed gap between the final losses of tuneloop and its baseline",
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


# --- model and data -----------------------------------------------------------------------
def synthetic_examples(args: argparse.Namespace, n: int) -> tuple[list[dict], list[str]]:
    rng = random.Random(args.seed)
    words = [f"w{i}" for i in range(args.vocab)]
    rows = []
    for _ in range(n):
        question = " ".join(rng.choices(words, k=rng.randint(8, 40))) + " ?"
        answer = " ".join(rng.choices(words, k=rng.randint(args.min_words, args.max_words)))
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "You are tuneloop ."},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer + " ."},
                ]
            }
        )
    return rows, words + ["You", "are", "tuneloop", ".", "?"]


def build_model(args: argparse.Namespace, directory: Path, words: list[str]) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        intermediate_size=args.hidden_size * 4,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=max(2048, args.max_seq_length),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(args.seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# --- the runs -----------------------------------------------------------------------------
def _device_setup(args: argparse.Namespace) -> tuple[bool, bool, bool]:
    import torch

    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device (is the CUDA build of torch installed?)")
    bf16 = {"on": True, "off": False}.get(args.bf16, lora.resolve_bf16(None) if cuda else False)
    checkpointing = {"on": True, "off": False}.get(args.gradient_checkpointing, cuda)
    return cuda, bf16, checkpointing


def _reset_peak(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(cuda: bool) -> float | None:
    if not cuda:
        return None
    import torch

    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


class Clock:
    """Wall and CPU seconds from the start of training to the last step's report.

    Both sides are timed over the same window, from ``on_train_begin`` to the last
    ``on_log``: set-up inside ``train()`` (a full garbage collection, the dataloader) is
    left out. CPU seconds of this process are the steadier measure on a shared machine:
    other jobs slow the wall clock, not the work one run does (torch uses the threads
    given by ``--threads``, so they are counted too). On CUDA read the wall clock: the
    CPU seconds then count only the host's side of the work.
    """

    def __init__(self) -> None:
        self.begin: tuple[float, float] | None = None
        self.last: tuple[float, float] | None = None

    def start(self) -> None:
        self.begin = (time.perf_counter(), time.process_time())

    def lap(self) -> None:
        self.last = (time.perf_counter(), time.process_time())

    def seconds(self) -> tuple[float, float]:
        """(wall, cpu) seconds between the start and the last lap."""
        assert self.begin and self.last, "training reported no step"
        return self.last[0] - self.begin[0], self.last[1] - self.begin[1]

    def timed(
        self, steps: int, tokens: int, final_loss: float | None, cuda: bool
    ) -> dict[str, Any]:
        """One run's numbers, throughput over this clock's window."""
        wall, cpu = self.seconds()
        return {
            "steps": steps,
            "tokens": tokens,
            "seconds": wall,
            "cpu_seconds": cpu,
            "tokens_per_s": tokens / wall,
            "tokens_per_cpu_s": tokens / cpu,
            "final_loss": final_loss,
            "peak_gpu_gib": _peak_gib(cuda),
        }


@dataclass(frozen=True)
class Setup:
    """What every run of one benchmark shares."""

    args: argparse.Namespace
    base: Path
    train: Path
    rows: list[dict]
    settings: LocalTrainerSettings
    bf16: bool
    cuda: bool
    checkpointing: bool
    work: Path


def run_tuneloop(s: Setup) -> dict[str, Any]:
    """One run of ``train_adapter``, as the training job runs it."""
    shutil.rmtree(s.work / "adapters", ignore_errors=True)
    _reset_peak(s.cuda)
    clock = Clock()

    def on_progress(event: Any) -> None:
        if event.step == 0:  # "Training started", from on_train_begin
            clock.start()
        elif event.train_loss is not None:  # a step's report, from on_log
            clock.lap()

    result = lora.train_adapter(
        base_model=str(s.base),
        parent_adapter=None,
        train_path=s.train,
        valid_path=None,
        out_dir=s.work / "adapters" / "bench-1",
        settings=s.settings,
        method=TrainingMethod.SUPERVISED,
        on_progress=on_progress,
        should_cancel=lambda: False,
        seed=s.args.seed,
        gradient_checkpointing=s.checkpointing,
        device="cuda" if s.cuda else "cpu",
    )
    return clock.timed(result.steps, result.tokens, result.train_loss, s.cuda)


def _tokenized(s: Setup, tokenizer: Any) -> Any:
    """The examples as the plain loop feeds them: chat template, prompt tokens masked."""
    from datasets import Dataset

    def tokenize(row: dict) -> dict:
        prompt = tokenizer.apply_chat_template(
            row["messages"][:-1], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        full = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)[
            "input_ids"
        ][: s.settings.max_seq_length]
        labels = [-100] * min(len(prompt), len(full)) + full[len(prompt) :]
        return {"input_ids": full, "labels": labels}

    return Dataset.from_list([tokenize(row) for row in s.rows])


def _collator(pad_id: int, *, packed: bool, flatten: bool) -> Any:
    """Padded rows with an attention mask, or (packed) rows whose position ids restart at
    every example they hold, one row each or flattened into one (for FlashAttention)."""
    import torch

    def collate(batch: list[dict]) -> dict:
        if not packed:
            width = max(len(x["input_ids"]) for x in batch)
            ids, labels, mask = [], [], []
            for x in batch:
                pad = width - len(x["input_ids"])
                ids.append(x["input_ids"] + [pad_id] * pad)
                labels.append(x["labels"] + [-100] * pad)
                mask.append([1] * len(x["input_ids"]) + [0] * pad)
            return {
                "input_ids": torch.tensor(ids),
                "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask),
            }
        rows = []
        for x in batch:
            positions = [p for n in x["seq_lengths"] for p in range(n)]
            rows.append((x["input_ids"], x["labels"], positions))
        if flatten:
            rows = [tuple(sum((list(r[i]) for r in rows), []) for i in range(3))]
        width = max(len(r[0]) for r in rows)
        return {
            "input_ids": torch.tensor([r[0] + [pad_id] * (width - len(r[0])) for r in rows]),
            "labels": torch.tensor([r[1] + [-100] * (width - len(r[1])) for r in rows]),
            "position_ids": torch.tensor([r[2] + [0] * (width - len(r[2])) for r in rows]),
        }

    return collate


def run_hf_trainer(s: Setup, *, packed: bool) -> dict[str, Any]:
    """One run of a plain ``transformers.Trainer`` on the same PEFT model and examples.

    The model computes its own loss (logits over every position, cross-entropy on the
    labelled ones). ``packed``: the examples packed into the same bins as TRL packs them
    (best-fit decreasing to ``max_seq_length``), attention kept inside each example.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )
    from trl.data_utils import pack_dataset

    tokenizer = AutoTokenizer.from_pretrained(s.base)
    data = _tokenized(s, tokenizer)
    attn = lora.attention_implementation(use_cpu=not s.cuda, bf16=s.bf16)
    if packed:
        data = pack_dataset(data, s.settings.max_seq_length, "bfd")
    set_seed(s.args.seed)  # the same initial LoRA weights as train_adapter
    model = AutoModelForCausalLM.from_pretrained(
        s.base, dtype=torch.bfloat16 if s.bf16 else torch.float32, attn_implementation=attn
    )
    model = get_peft_model(
        model,
        LoraConfig(
            r=s.settings.lora_r,
            lora_alpha=s.settings.lora_alpha,
            lora_dropout=s.settings.lora_dropout,
            target_modules=list(s.settings.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    if s.checkpointing:
        model.enable_input_require_grads()
    common = lora.common_training_args(
        work_dir=s.work / "hf",
        settings=s.settings,
        bf16=s.bf16,
        seed=s.args.seed,
        gradient_checkpointing=s.checkpointing,
        use_cpu=not s.cuda,
    )
    common.pop("max_length")
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**common, remove_unused_columns=False),
        train_dataset=data,
        data_collator=_collator(
            tokenizer.pad_token_id, packed=packed, flatten=attn == "flash_attention_2"
        ),
        processing_class=tokenizer,  # non-padding tokens are counted without a mask
    )
    clock = Clock()

    class Timing(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.start()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                clock.lap()

    trainer.add_callback(Timing())
    lora._quiet(trainer)
    _reset_peak(s.cuda)
    trainer.train()
    final_loss = next(e["loss"] for e in reversed(trainer.state.log_history) if "loss" in e)
    return clock.timed(
        int(trainer.state.global_step),
        int(trainer.state.num_input_tokens_seen),
        float(final_loss),
        s.cuda,
    )


def sides(packing: bool) -> list[tuple[str, Callable[[Setup], dict[str, Any]]]]:
    """The runs to compare, the same-work baseline second (packing adds the unpacked loop)."""
    label = "packing" if packing else "no packing"
    out: list[tuple[str, Callable[[Setup], dict[str, Any]]]] = [
        (f"tuneloop train_adapter, {label}", run_tuneloop),
        (f"plain HF Trainer, {label}", lambda s: run_hf_trainer(s, packed=packing)),
    ]
    if packing:
        out.append(("plain HF Trainer, no packing", lambda s: run_hf_trainer(s, packed=False)))
    return out


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "all": [round(x, 3) for x in values],
    }


def summary(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median throughput (wall and CPU time) and its spread over the repeats."""
    peaks = [r["peak_gpu_gib"] for r in runs if r["peak_gpu_gib"] is not None]
    return {
        "name": name,
        "steps": sorted({r["steps"] for r in runs}),
        "tokens": sorted({r["tokens"] for r in runs}),
        "tokens_per_s": _spread([r["tokens_per_s"] for r in runs]),
        "tokens_per_cpu_s": _spread([r["tokens_per_cpu_s"] for r in runs]),
        "final_loss": [r["final_loss"] for r in runs],
        "peak_gpu_gib": max(peaks) if peaks else None,
    }


def loss_gap(ours: dict[str, Any], plain: dict[str, Any]) -> float:
    """The largest gap between the two sides' final losses, repeat by repeat."""
    return max(abs(a - b) for a, b in zip(ours["final_loss"], plain["final_loss"], strict=True))


def same_work(results: list[dict[str, Any]], tolerance: float) -> list[str]:
    """Where tuneloop and its same-work baseline (the first two) did not do the same work."""
    ours, plain = results[0], results[1]
    problems = []
    for key in ("steps", "tokens"):
        if ours[key] != plain[key] or len(ours[key]) != 1:
            problems.append(f"{key}: {ours[key]} against {plain[key]}")
    gap = loss_gap(ours, plain)
    if gap > tolerance:
        problems.append(f"final loss differs by {gap:.2e} (tolerance {tolerance:g})")
    return problems


def _ratios(ours: list[dict[str, Any]], other: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """tuneloop's throughput over the other side's, repeat by repeat (runs next to each other)."""
    return _spread([a[key] / b[key] for a, b in zip(ours, other, strict=True)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lora.require_gpu_stack()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda, bf16, checkpointing = _device_setup(args)
    n = args.steps * args.batch_size
    rows, words = synthetic_examples(args, n)
    settings = LocalTrainerSettings(
        lora_r=args.lora_r,
        lora_alpha=args.lora_r * 2,
        lora_dropout=0.05,
        epochs=1,
        learning_rate=2e-4,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        bf16=bf16,
        packing=args.packing,
    )
    compared = sides(args.packing)
    runs: list[list[dict[str, Any]]] = [[] for _ in compared]
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as tmp:
        work = Path(tmp)
        base = Path(args.model) if args.model else build_model(args, work / "base", words)
        train = work / "train.jsonl"
        train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        setup = Setup(args, base, train, rows, settings, bf16, cuda, checkpointing, work)
        for i in range(args.repeat):
            # Alternate which side goes first, so a drift in the machine's load or a
            # warm-up favours neither.
            shift = i % len(compared)
            for k in list(range(shift, len(compared))) + list(range(shift)):
                # Trainer.train() starts with a full garbage collection; collect the
                # previous run's garbage first, so that no side pays for another's.
                gc.collect()
                runs[k].append(compared[k][1](setup))
            print(
                f"repeat {i + 1}/{args.repeat} (first: {compared[shift][0]}): "
                + ", ".join(
                    f"{r[-1]['tokens_per_s']:,.0f} ({r[-1]['tokens_per_cpu_s']:,.0f} per CPU-s)"
                    for r in runs
                )
                + " tokens/s",
                file=sys.stderr,
            )
    results = [summary(name, r) for (name, _), r in zip(compared, runs, strict=True)]
    ratios = [
        {key: _ratios(runs[0], other, key) for key in ("tokens_per_s", "tokens_per_cpu_s")}
        for other in runs[1:]
    ]
    problems = same_work(results, args.loss_tolerance)
    device = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    report = {
        "device": device,
        "torch": torch.__version__,
        "model": args.model
        or f"random Llama h={args.hidden_size} layers={args.layers} heads={args.heads}",
        "examples": n,
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "bf16": bf16,
        "gradient_checkpointing": checkpointing,
        "repeat": args.repeat,
        "results": results,
        "paired_ratios": ratios,
        "same_work_problems": problems,
    }
    print(
        f"{device}, torch {torch.__version__}, {report['model']}, {n} examples, "
        f"batch {args.batch_size}, max_seq_length {args.max_seq_length}, bf16={bf16}, "
        f"gradient checkpointing={checkpointing}, {args.repeat} repeats, order alternated"
    )
    print()
    print(
        "| run | steps | tokens | tokens/s (median; min-max) | tokens per CPU-s (median; min-max)"
        " | tuneloop vs this, wall (paired; range) | tuneloop vs this, CPU (paired; range)"
        " | final loss | peak GPU GiB |"
    )
    print("|---|---:|---:|---|---|---|---|---|---:|")

    def spread(x: dict[str, Any], unit: str) -> str:
        digits = 2 if unit == "x" else 0
        return f"{x['median']:,.{digits}f}{unit} ({x['min']:,.{digits}f}-{x['max']:,.{digits}f})"

    for k, r in enumerate(results):
        peak = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else "-"
        wall = cpu = "-"
        if k:
            wall = spread(ratios[k - 1]["tokens_per_s"], "x")
            cpu = spread(ratios[k - 1]["tokens_per_cpu_s"], "x")
        losses = sorted({round(x, 4) for x in r["final_loss"]})
        print(
            f"| {r['name']} | {'/'.join(map(str, r['steps']))} | "
            f"{'/'.join(f'{t:,}' for t in r['tokens'])} | {spread(r['tokens_per_s'], '')} | "
            f"{spread(r['tokens_per_cpu_s'], '')} | {wall} | {cpu} | "
            f"{', '.join(f'{x:.4f}' for x in losses)} | {peak} |"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if problems:
        print("\nNOT the same work as the baseline: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(
        f"\nSame work as the baseline: same steps and tokens, final losses at most "
        f"{loss_gap(results[0], results[1]):.1e} apart (tolerance {args.loss_tolerance:g})."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
