"""Self-hosted LoRA training: one run of TRL + PEFT on a local or hub base model.

:func:`train_adapter` trains a LoRA adapter on a chat JSONL file (supervised) or a
preference JSONL file (DPO), continuing from a parent adapter's weights when one is
given, and writes a new versioned adapter directory that vLLM can load. The directory
appears in one rename, with ``tuneloop.json`` beside the adapter, so a crash or a cancel
never leaves a half-written adapter where the registry looks.

torch, transformers, peft, trl and datasets are imported lazily, inside the functions
that need them, so this module (and the backend that enqueues jobs) imports without the
GPU stack; a missing stack surfaces as a :class:`TrainingError` naming the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import TrainingError
from core.examples import LOCAL_RULES, unsupported
from core.settings import LocalTrainerSettings, TrainingMethod
from workers.training.base import ProgressEvent

log = logging.getLogger(__name__)

METADATA_FILE = "tuneloop.json"
"""The metadata file written next to the adapter in every adapter directory."""
ADAPTER_CONFIG_FILE = "adapter_config.json"
GPU_STACK_HINT = "pip install -r requirements-gpu.txt"


class TrainingCancelled(TrainingError):
    """The run was cancelled; nothing was written to the output directory."""


@dataclass(frozen=True)
class AdapterResult:
    """What a finished run produced."""

    path: Path
    model_id: str
    steps: int
    total_steps: int
    train_loss: float | None
    valid_loss: float | None
    tokens: int
    metadata: dict[str, Any] = field(default_factory=dict)


# --- the GPU stack, imported on demand ------------------------------------------------
def require_gpu_stack() -> None:
    """Import the training libraries, or raise TrainingError saying how to install them."""
    try:
        import datasets  # noqa: F401
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise TrainingError(
            f"the local trainer needs the GPU stack, and {missing} cannot be imported: "
            f"{GPU_STACK_HINT} (in the GPU worker's virtualenv)"
        ) from exc


def stack_versions() -> dict[str, str]:
    """Versions of the training libraries, recorded in every adapter's metadata."""
    import datasets
    import peft
    import torch
    import transformers
    import trl

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "trl": trl.__version__,
        "datasets": datasets.__version__,
    }


def resolve_bf16(setting: bool | None) -> bool:
    """bf16 when asked for, or (``None``) when a CUDA GPU supports it."""
    if setting is not None:
        return setting
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


# --- data ------------------------------------------------------------------------------
def _text(content: Any) -> str:
    """A message's content as plain text (content parts are joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


def _messages(raw: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise TrainingError(f"{where}: expected a non-empty list of messages")
    out = []
    for message in raw:
        if not isinstance(message, dict):
            raise TrainingError(f"{where}: a message is not an object")
        why = unsupported(message, LOCAL_RULES)
        if why:
            raise TrainingError(f"{where}: {why}")
        out.append({"role": message["role"], "content": _text(message.get("content"))})
    return out


def _read_jsonl(path: Path) -> list[tuple[str, Any]]:
    rows = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    rows.append((where, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise TrainingError(f"{where}: not valid JSON ({exc.msg})") from None
    except FileNotFoundError:
        raise TrainingError(f"training file {path} does not exist") from None
    if not rows:
        raise TrainingError(f"{path} holds no examples")
    return rows


def supervised_rows(path: Path) -> list[dict[str, Any]]:
    """Chat lines ``{"messages": [...]}`` as TRL conversational prompt/completion rows.

    The loss is on the final assistant message (the answer); earlier turns are context.
    """
    out = []
    for where, row in _read_jsonl(path):
        messages = _messages(row.get("messages") if isinstance(row, dict) else None, where)
        if messages[-1]["role"] != "assistant":
            raise TrainingError(f"{where}: the last message must be the assistant's answer")
        if len(messages) < 2:
            raise TrainingError(f"{where}: an answer needs at least one message before it")
        out.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return out


def preference_rows(path: Path) -> list[dict[str, Any]]:
    """Preference lines (OpenAI DPO format) as TRL conversational prompt/chosen/rejected rows."""
    out = []
    for where, row in _read_jsonl(path):
        if not isinstance(row, dict):
            raise TrainingError(f"{where}: expected a JSON object")
        prompt = _messages((row.get("input") or {}).get("messages"), where + " input")
        chosen = _messages(row.get("preferred_output"), where + " preferred_output")
        rejected = _messages(row.get("non_preferred_output"), where + " non_preferred_output")
        for name, answer in (("preferred_output", chosen), ("non_preferred_output", rejected)):
            if [m["role"] for m in answer] != ["assistant"]:
                raise TrainingError(f"{where}: {name} must be exactly one assistant message")
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(adapter_dir: Path) -> dict[str, Any]:
    """An adapter directory's ``tuneloop.json`` ({} when it has none)."""
    path = Path(adapter_dir) / METADATA_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG_FILE).is_file()


# --- progress --------------------------------------------------------------------------
class _Progress:
    """Everything the callback records; kept outside the callback class for easy reading."""

    def __init__(
        self,
        on_progress: Callable[[ProgressEvent], None],
        should_cancel: Callable[[], bool],
        has_valid: bool,
    ) -> None:
        self.on_progress = on_progress
        self.should_cancel = should_cancel
        self.has_valid = has_valid
        self.cancelled = False
        self.total_steps = 0
        self.step = 0
        self.tokens = 0
        self.started = 0.0
        self.eval_every = 1
        self.losses: dict[int, dict[str, float]] = {}
        self.seq = 0
        self.last_train_loss: float | None = None
        self.last_valid_loss: float | None = None

    def emit(self, message: str, **metrics: Any) -> None:
        self.seq += 1
        event = ProgressEvent(id=str(self.seq), created_at=time.time(), message=message, **metrics)
        try:
            self.on_progress(event)
        except Exception:  # a reporting failure must not kill a long run
            log.exception("on_progress failed for %r", message)

    def tokens_per_s(self) -> float | None:
        elapsed = time.perf_counter() - self.started
        return self.tokens / elapsed if elapsed > 0 and self.tokens else None

    def eta_s(self) -> float | None:
        if not self.step or not self.total_steps:
            return None
        elapsed = time.perf_counter() - self.started
        return max(0.0, elapsed / self.step * (self.total_steps - self.step))


def _make_callback(progress: _Progress) -> Any:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

    class ProgressCallback(TrainerCallback):
        """Reports each step through ``on_progress`` and stops when ``should_cancel()``."""

        def on_train_begin(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            **kwargs: Any,
        ) -> None:
            progress.total_steps = int(state.max_steps or 0)
            progress.started = time.perf_counter()
            progress.eval_every = max(1, math.ceil(progress.total_steps / 10))
            progress.emit(
                f"Training started: {progress.total_steps} steps",
                step=0,
                total_steps=progress.total_steps,
            )

        def on_step_end(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            **kwargs: Any,
        ) -> TrainerControl:
            progress.step = int(state.global_step)
            progress.tokens = int(state.num_input_tokens_seen or 0)
            if progress.has_valid and (
                progress.step % progress.eval_every == 0 or progress.step == progress.total_steps
            ):
                control.should_evaluate = True
            if progress.should_cancel():
                progress.cancelled = True
                control.should_training_stop = True
                control.should_evaluate = False
                control.should_save = False
            return control

        def on_log(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            logs: dict[str, float] | None = None,
            **kwargs: Any,
        ) -> None:
            logs = logs or {}
            step = int(state.global_step)
            record = progress.losses.setdefault(step, {"step": step})
            if "loss" in logs:
                loss = float(logs["loss"])
                record["train_loss"] = loss
                progress.last_train_loss = loss
                accuracy = logs.get("mean_token_accuracy")
                tps = progress.tokens_per_s()
                eta = progress.eta_s()
                text = f"Step {step}/{progress.total_steps}: train loss {loss:.4f}"
                if tps:
                    text += f", {tps:,.0f} tokens/s"
                if eta is not None:
                    text += f", about {eta:.0f}s left"
                progress.emit(
                    text,
                    step=step,
                    total_steps=progress.total_steps,
                    train_loss=loss,
                    token_accuracy=float(accuracy) if accuracy is not None else None,
                    tokens_per_s=tps,
                    eta_s=eta,
                )
            if "eval_loss" in logs:
                loss = float(logs["eval_loss"])
                record["valid_loss"] = loss
                progress.last_valid_loss = loss
                progress.emit(
                    f"Step {step}/{progress.total_steps}: valid loss {loss:.4f}",
                    step=step,
                    total_steps=progress.total_steps,
                    valid_loss=loss,
                    eta_s=progress.eta_s(),
                )
            if len(record) == 1:
                del progress.losses[step]

    return ProgressCallback()


# --- the run ---------------------------------------------------------------------------
def attention_implementation(*, use_cpu: bool, bf16: bool) -> str:
    """FlashAttention 2 when it is installed and usable (CUDA, bf16), else SDPA.

    Packing (TRL's best-fit packing) attends within each packed example only. With
    FlashAttention a batch is one flattened sequence (TRL's padding-free collation),
    which costs nothing extra; with SDPA each packed example stays a row of the batch
    (:func:`_packed_rows_collator`), masked block-diagonally row by row.
    """
    import importlib.util

    if not use_cpu and bf16 and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def _load_model(
    base_model: str,
    parent_adapter: Path | None,
    settings: LocalTrainerSettings,
    bf16: bool,
    attn: str,
) -> Any:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if bf16 else torch.float32
    try:
        base = AutoModelForCausalLM.from_pretrained(
            base_model, dtype=dtype, attn_implementation=attn
        )
    except OSError as exc:
        raise TrainingError(f"cannot load base model {base_model!r}: {exc}") from exc
    if parent_adapter is not None:
        # Continue from the current adapter: its weights, not a fresh initialisation.
        return PeftModel.from_pretrained(base, str(parent_adapter), is_trainable=True)
    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, config)


def _load_tokenizer(base_model: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
    except OSError as exc:
        raise TrainingError(f"cannot load the tokenizer of {base_model!r}: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise TrainingError(
            f"the tokenizer of {base_model!r} has no chat template; use an instruct/chat base model"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _checkpointing_field() -> str:
    """transformers 5.x renamed ``gradient_checkpointing`` to ``activation_checkpointing``."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    return (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )


def common_training_args(
    *,
    work_dir: Path,
    settings: LocalTrainerSettings,
    bf16: bool,
    seed: int,
    gradient_checkpointing: bool,
    use_cpu: bool,
) -> dict[str, Any]:
    """Arguments shared by the TRL configs (and the benchmark's plain Trainer baseline,
    which drops ``max_length``)."""
    return {
        "output_dir": str(work_dir),
        "num_train_epochs": settings.epochs,
        "learning_rate": settings.learning_rate,
        "per_device_train_batch_size": settings.batch_size,
        "per_device_eval_batch_size": settings.batch_size,
        "gradient_accumulation_steps": 1,
        "bf16": bf16,
        "fp16": False,
        _checkpointing_field(): gradient_checkpointing,
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",  # evaluation is requested by the progress callback
        "report_to": "none",
        "disable_tqdm": True,
        "seed": seed,
        "include_num_input_tokens_seen": "non_padding",
        "use_cpu": use_cpu,
        "max_length": settings.max_seq_length,
    }


# Config attributes through which a model rescales or caps its logits. TRL's fused LM
# head applies them; the plain head below is used only for models that have none.
_LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)


def _plain_lm_head_ok(model_config: Any, device_type: str) -> bool:
    """Whether the supervised loss may project only the completion tokens with a plain
    ``lm_head`` call and cross-entropy, instead of TRL's fused LM head.

    TRL's fused head is a Triton kernel on CUDA/XPU that scores only the completion
    tokens without building the logits (the right choice there, and what runs). Elsewhere
    it falls back to fp32 torch ops over every position, padding and prompt included,
    recomputes the logits in the backward pass and adds entropy and top-1 statistics:
    on CPU that is a third of the step. The plain head does the same loss on the same
    tokens. Models that rescale or cap their logits keep TRL's head, which knows how.
    """
    from transformers.utils import is_triton_available

    if device_type in ("cuda", "xpu") and is_triton_available():
        return False
    text_config = model_config.get_text_config()
    return all(getattr(text_config, name, None) is None for name in _LOGIT_TRANSFORMS)


def _lean_sft_trainer(**kwargs: Any) -> Any:
    """An ``SFTTrainer`` whose step computes what the run reports and nothing else.

    Where the plain LM head applies (see :func:`_plain_lm_head_ok`), the step computes
    the loss (summed over the completion tokens and divided by the batch's count of
    them, as in TRL) and the token accuracy reported with each step; TRL's step also
    computes the entropy of every prediction and a running token count, which nothing
    here reads. Elsewhere (CUDA with Triton, logit-rescaling models, MoE auxiliary loss)
    TRL's own step runs.
    """
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel
    from trl import SFTTrainer

    class LeanSFTTrainer(SFTTrainer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            # Looked up once: the PEFT model's causal LM keeps its identity for the run.
            causal_lm = self.model.get_base_model() if isinstance(self.model, PeftModel) else None
            if not isinstance(causal_lm, PreTrainedModel):
                raise TrainingError("the supervised trainer trains a LoRA adapter of a causal LM")
            self._causal_lm = causal_lm
            self._plain_head = not self.aux_loss_enabled and _plain_lm_head_ok(
                self._causal_lm.config, self.args.device.type
            )

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            if return_outputs or not self._plain_head:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            causal_lm = self._causal_lm
            mode = "train" if model.training else "eval"
            model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            hidden = causal_lm.base_model(**model_inputs, use_cache=False).last_hidden_state
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            targets = labels[mask]
            logits = causal_lm.get_output_embeddings()(hidden[:, :-1][mask]).float()
            count = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
            loss = loss / torch.as_tensor(count, device=loss.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            with torch.no_grad():
                correct = (logits.argmax(dim=-1) == targets).sum()
                valid = self.accelerator.gather_for_metrics(mask.sum()).sum()
                correct = self.accelerator.gather_for_metrics(correct).sum()
                accuracy = (correct / valid).item() if valid > 0 else 0.0
            self._metrics[mode]["mean_token_accuracy"].append(accuracy)
            return loss

    return LeanSFTTrainer(**kwargs)


def _packed_rows_collator(pad_token_id: int) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """Collate packed examples as one row each, attention kept inside every packed example.

    TRL collates packed examples padding-free: the whole batch becomes one flattened
    sequence. FlashAttention takes that as it is; any other attention gets a
    block-diagonal mask over the whole flattened batch, quadratic in the batch's total
    length (4x the work for 4 rows). Here each packed example stays a row, its position
    ids restart at every example it holds, and there is no attention mask, so
    transformers masks each row block-diagonally: the same attention, per row. Every
    example starts with prompt tokens, whose labels are ignored, so no example learns to
    predict the next one.
    """
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, return_position_ids=True)

    def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = rows(examples)
        del batch["attention_mask"]  # padding is a run of one-token examples (position 0)
        return batch

    return collate


def _build_trainer(
    *,
    method: TrainingMethod,
    model: Any,
    tokenizer: Any,
    train_rows: list[dict[str, Any]],
    valid_rows: list[dict[str, Any]] | None,
    args: dict[str, Any],
    settings: LocalTrainerSettings,
    dpo_beta: float | None,
    callback: Any,
    attn: str,
) -> Any:
    from datasets import Dataset

    train = Dataset.from_list(train_rows)
    valid = Dataset.from_list(valid_rows) if valid_rows else None
    if method is TrainingMethod.DPO:
        from trl import DPOConfig, DPOTrainer

        # Without a beta of its own the run keeps TRL's default.
        dpo_config = DPOConfig(**args) if dpo_beta is None else DPOConfig(**args, beta=dpo_beta)
        return DPOTrainer(
            model=model,
            args=dpo_config,
            train_dataset=train,
            eval_dataset=valid,
            processing_class=tokenizer,
            callbacks=[callback],
        )
    from trl import SFTConfig

    sft_config = SFTConfig(**args, packing=settings.packing)
    trainer = _lean_sft_trainer(
        model=model,
        args=sft_config,
        train_dataset=train,
        eval_dataset=valid,
        processing_class=tokenizer,
        callbacks=[callback],
    )
    if settings.packing and attn != "flash_attention_2":
        trainer.data_collator = _packed_rows_collator(tokenizer.pad_token_id)
    return trainer


def _quiet(trainer: Any) -> None:
    """Drop transformers' stdout printers: progress goes through ``on_progress`` only."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def train_adapter(
    *,
    base_model: str,
    parent_adapter: Path | None,
    train_path: Path,
    valid_path: Path | None,
    out_dir: Path,
    settings: LocalTrainerSettings,
    method: TrainingMethod,
    on_progress: Callable[[ProgressEvent], None],
    should_cancel: Callable[[], bool],
    training_set_id: str | None = None,
    seed: int = 42,
    dpo_beta: float | None = None,
    gradient_checkpointing: bool | None = None,
    device: str | None = None,
) -> AdapterResult:
    """Train one LoRA adapter and register it atomically as ``out_dir``.

    ``parent_adapter``: an adapter directory to continue from (its weights are loaded and
    trained further; its LoRA shape wins over ``settings``), or None for a fresh adapter.
    ``gradient_checkpointing``: None turns it on with CUDA (memory) and off on CPU.
    ``device``: "cpu" forces the CPU; None lets transformers pick (CUDA when present).
    Raises :class:`TrainingCancelled` when ``should_cancel()`` turned true (nothing is
    written to ``out_dir``), :class:`TrainingError` for anything else we can name.
    """
    require_gpu_stack()
    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()  # progress goes through on_progress

    out_dir = Path(out_dir)
    train_path = Path(train_path)
    valid_path = Path(valid_path) if valid_path else None
    parent_adapter = Path(parent_adapter) if parent_adapter else None
    if out_dir.exists():
        raise TrainingError(f"adapter directory {out_dir} already exists; adapters are immutable")
    if parent_adapter is not None:
        if not is_adapter_dir(parent_adapter):
            raise TrainingError(f"parent adapter {parent_adapter} has no {ADAPTER_CONFIG_FILE}")
        parent_base = read_metadata(parent_adapter).get("base_model")
        if parent_base and parent_base != base_model:
            raise TrainingError(
                f"parent adapter {parent_adapter.name} was trained on {parent_base!r}, "
                f"not on {base_model!r}"
            )

    rows_of = preference_rows if method is TrainingMethod.DPO else supervised_rows
    train_rows = rows_of(train_path)
    valid_rows = rows_of(valid_path) if valid_path else None
    bf16 = resolve_bf16(settings.bf16)
    use_cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    if gradient_checkpointing is None:
        gradient_checkpointing = not use_cpu

    progress = _Progress(on_progress, should_cancel, has_valid=bool(valid_rows))
    if should_cancel():
        raise TrainingCancelled("cancelled before training started")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # A sibling on the same file system, so the final rename is atomic.
    staging = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    work_dir = Path(tempfile.mkdtemp(prefix="tuneloop-train-"))
    try:
        tokenizer = _load_tokenizer(base_model)
        attn = attention_implementation(use_cpu=use_cpu, bf16=bf16)
        # A fresh adapter's initial weights come from the seed too: same data and seed,
        # same adapter.
        transformers.set_seed(seed)
        model = _load_model(base_model, parent_adapter, settings, bf16, attn)
        if should_cancel():
            raise TrainingCancelled("cancelled before training started")
        args = common_training_args(
            work_dir=work_dir,
            settings=settings,
            bf16=bf16,
            seed=seed,
            gradient_checkpointing=gradient_checkpointing,
            use_cpu=use_cpu,
        )
        trainer = _build_trainer(
            method=method,
            model=model,
            tokenizer=tokenizer,
            train_rows=train_rows,
            valid_rows=valid_rows,
            args=args,
            settings=settings,
            dpo_beta=dpo_beta,
            callback=_make_callback(progress),
            attn=attn,
        )
        _quiet(trainer)
        started = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - started
        if progress.cancelled or should_cancel():
            raise TrainingCancelled(f"cancelled at step {progress.step}/{progress.total_steps}")

        staging.mkdir()
        # DPO adds a frozen "ref" copy of the adapter; only the trained one is saved.
        trainer.model.save_pretrained(str(staging), selected_adapters=["default"])
        adapter_files = {
            path.name: sha256_file(path)
            for path in sorted(staging.iterdir())
            if path.is_file() and path.name != METADATA_FILE
        }
        lora = trainer.model.peft_config["default"]
        training_files = {"train": {"path": str(train_path), "sha256": sha256_file(train_path)}}
        if valid_path:
            training_files["valid"] = {"path": str(valid_path), "sha256": sha256_file(valid_path)}
        metadata = {
            "model_id": out_dir.name,
            "parent_adapter": parent_adapter.name if parent_adapter else None,
            "parent_adapter_path": str(parent_adapter) if parent_adapter else None,
            "training_set_id": training_set_id,
            "base_model": base_model,
            "method": method.value,
            "steps": progress.step,
            "total_steps": progress.total_steps,
            "examples": {"train": len(train_rows), "valid": len(valid_rows or [])},
            "tokens": progress.tokens,
            "train_seconds": round(train_seconds, 3),
            "losses": [progress.losses[step] for step in sorted(progress.losses)],
            "final_train_loss": progress.last_train_loss,
            "final_valid_loss": progress.last_valid_loss,
            "hyperparameters": {
                "epochs": settings.epochs,
                "learning_rate": settings.learning_rate,
                "batch_size": settings.batch_size,
                "max_seq_length": settings.max_seq_length,
                "packing": settings.packing if method is TrainingMethod.SUPERVISED else False,
                "bf16": bf16,
                "gradient_checkpointing": gradient_checkpointing,
                "attn_implementation": attn,
                "seed": seed,
                "dpo_beta": dpo_beta if method is TrainingMethod.DPO else None,
            },
            "lora": {
                "r": lora.r,
                "alpha": lora.lora_alpha,
                "dropout": lora.lora_dropout,
                "target_modules": sorted(lora.target_modules or []),
            },
            "adapter_files": adapter_files,
            "training_files": training_files,
            "versions": stack_versions(),
            "created_at": time.time(),
        }
        (staging / METADATA_FILE).write_text(
            json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        if should_cancel():
            raise TrainingCancelled("cancelled while saving")
        try:
            os.rename(staging, out_dir)  # fails if out_dir appeared meanwhile: never merge
        except OSError as exc:
            raise TrainingError(f"cannot register adapter {out_dir}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(work_dir, ignore_errors=True)

    return AdapterResult(
        path=out_dir,
        model_id=out_dir.name,
        steps=progress.step,
        total_steps=progress.total_steps,
        train_loss=progress.last_train_loss,
        valid_loss=progress.last_valid_loss,
        tokens=progress.tokens,
        metadata=metadata,
    )
