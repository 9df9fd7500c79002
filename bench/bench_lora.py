"""Training throughput of tuneloop's LoRA run against a plain Hugging Face Trainer loop.

Both sides train the same LoRA (same base model, data, rank, learning rate, batch size,
epochs, precision, gradient checkpointing) in the same process, one after the other:

* ``tuneloop``: :func:`workers.training.lora.train_adapter` (TRL ``SFTTrainer``, packing as
  given by ``--packing``, completion-only loss, progress callback, atomic adapter save);
* ``hf-trainer``: ``transformers.Trainer`` on the same PEFT model, examples tokenized
  with the chat template, prompt tokens masked, padded per batch, no packing.

Throughput is non-padding tokens seen per second of ``train()`` (model loading, data
preparation and saving are not counted). On CUDA the peak GPU memory of each run is
reported too.

Without ``--model`` a randomly initialised Llama of the given size is built with a
word-level tokenizer, so nothing is downloaded. Examples:

    .venv-gpu/bin/python bench/bench_lora.py                       # small model, CPU
    .venv-gpu/bin/python bench/bench_lora.py --device cuda --hidden-size 1024 --layers 8 \\
        --steps 100 --batch-size 8 --max-seq-length 1024
    .venv-gpu/bin/python bench/bench_lora.py --device cuda --model /models/Qwen2.5-0.5B-Instruct
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
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


# --- the two runs -------------------------------------------------------------------------
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


def run_tuneloop(
    args, base: Path, train: Path, settings, cuda, checkpointing, work: Path
) -> dict[str, Any]:
    _reset_peak(cuda)
    result = lora.train_adapter(
        base_model=str(base),
        parent_adapter=None,
        train_path=train,
        valid_path=None,
        out_dir=work / "adapters" / "bench-1",
        settings=settings,
        method=TrainingMethod.SUPERVISED,
        on_progress=lambda event: None,
        should_cancel=lambda: False,
        seed=args.seed,
        gradient_checkpointing=checkpointing,
        device="cuda" if cuda else "cpu",
    )
    seconds = result.metadata["train_seconds"]
    return {
        "name": "tuneloop train_adapter (TRL SFTTrainer"
        + (", packing)" if settings.packing else ", no packing)"),
        "steps": result.steps,
        "tokens": result.tokens,
        "seconds": seconds,
        "tokens_per_s": result.tokens / seconds,
        "final_loss": result.train_loss,
        "peak_gpu_gib": _peak_gib(cuda),
    }


def run_hf_trainer(
    args, base: Path, rows: list[dict], settings, bf16, cuda, checkpointing, work: Path
) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(base)

    def tokenize(row: dict) -> dict:
        prompt = tokenizer.apply_chat_template(
            row["messages"][:-1], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        full = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)[
            "input_ids"
        ][: settings.max_seq_length]
        labels = [-100] * min(len(prompt), len(full)) + full[len(prompt) :]
        return {"input_ids": full, "labels": labels}

    data = Dataset.from_list([tokenize(row) for row in rows])

    def collate(batch: list[dict]) -> dict:
        width = max(len(x["input_ids"]) for x in batch)
        ids, labels, mask = [], [], []
        for x in batch:
            pad = width - len(x["input_ids"])
            ids.append(x["input_ids"] + [tokenizer.pad_token_id] * pad)
            labels.append(x["labels"] + [-100] * pad)
            mask.append([1] * len(x["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    model = AutoModelForCausalLM.from_pretrained(
        base,
        dtype=torch.bfloat16 if bf16 else torch.float32,
        attn_implementation=lora.attention_implementation(use_cpu=not cuda, bf16=bf16),
    )
    model = get_peft_model(
        model,
        LoraConfig(
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=list(settings.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    if checkpointing:
        model.enable_input_require_grads()
    common = lora.common_training_args(
        work_dir=work / "hf",
        settings=settings,
        bf16=bf16,
        seed=args.seed,
        gradient_checkpointing=checkpointing,
        use_cpu=not cuda,
    )
    common.pop("max_length")
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**common, remove_unused_columns=False),
        train_dataset=data,
        data_collator=collate,
    )
    lora._quiet(trainer)
    _reset_peak(cuda)
    started = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - started
    tokens = int(trainer.state.num_input_tokens_seen)
    return {
        "name": "plain HF Trainer (no packing)",
        "steps": int(trainer.state.global_step),
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "final_loss": next(
            (float(e["loss"]) for e in reversed(trainer.state.log_history) if "loss" in e),
            out.training_loss,
        ),
        "peak_gpu_gib": _peak_gib(cuda),
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, with every run's tokens/s beside it."""
    ordered = sorted(runs, key=lambda r: r["tokens_per_s"])
    median = dict(ordered[len(ordered) // 2])
    median["all_tokens_per_s"] = [round(r["tokens_per_s"], 1) for r in runs]
    return median


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
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as tmp:
        work = Path(tmp)
        base = Path(args.model) if args.model else build_model(args, work / "base", words)
        train = work / "train.jsonl"
        train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        runs: list[list[dict[str, Any]]] = [[], []]
        for i in range(args.repeat):
            shutil.rmtree(work / "adapters", ignore_errors=True)
            runs[0].append(run_tuneloop(args, base, train, settings, cuda, checkpointing, work))
            runs[1].append(
                run_hf_trainer(args, base, rows, settings, bf16, cuda, checkpointing, work)
            )
            print(
                f"repeat {i + 1}/{args.repeat}: "
                + ", ".join(f"{r[-1]['tokens_per_s']:,.0f} tokens/s" for r in runs),
                file=sys.stderr,
            )
        results = [_median_run(r) for r in runs]
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
    }
    print(
        f"{device}, torch {torch.__version__}, {report['model']}, {n} examples, "
        f"batch {args.batch_size}, max_seq_length {args.max_seq_length}, bf16={bf16}, "
        f"gradient checkpointing={checkpointing}"
    )
    print()
    print(
        "| run | steps | tokens | seconds | tokens/s (median) | all runs | final loss | peak GPU GiB |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for r in results:
        peak = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else "-"
        every = ", ".join(f"{x:,.0f}" for x in r["all_tokens_per_s"])
        print(
            f"| {r['name']} | {r['steps']} | {r['tokens']:,} | {r['seconds']:.1f} | "
            f"{r['tokens_per_s']:,.0f} | {every} | {r['final_loss']:.3f} | {peak} |"
        )
    ratio = results[0]["tokens_per_s"] / results[1]["tokens_per_s"]
    print(f"\ntuneloop / plain Trainer throughput: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
