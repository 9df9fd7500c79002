"""Cost: OpenAI's default-epochs rule and the dated prices in ``config/prices.yaml``.

Training prices are shared by the dataset tool (``stats``) and the training-set builder,
so both quote the same numbers; answering prices price every answer by its model (a
fine-tuned model at its fine-tuned rates; an unknown model gets no price, never a guess).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError
from core.settings import ROOT

logger = logging.getLogger(__name__)

PRICES_FILE = ROOT / "config" / "prices.yaml"
# The default-epochs rule of OpenAI's data-preparation notebook.
DEFAULT_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_EPOCHS = 1
MAX_EPOCHS = 25


def default_epochs(n_examples: int) -> int:
    """Epochs OpenAI picks when none are given, computed as the notebook does: 3, raised
    towards 100 examples x epochs (at most 25), lowered to stay within 25,000 (at least
    1), with integer division both ways."""
    if n_examples <= 0:
        return DEFAULT_EPOCHS
    if n_examples * DEFAULT_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * DEFAULT_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return DEFAULT_EPOCHS


@dataclass(frozen=True)
class Price:
    """A training price and where it comes from."""

    model: str
    per_million: float
    as_of: dt.date
    source: str


def _date(value: Any, path: Path) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{path}: as_of must be a date like 2026-11-01, got {value!r}") from None


def price_for(model: str, path: Path = PRICES_FILE, today: dt.date | None = None) -> Price | None:
    """The training price of a model from the newest applicable table, or None."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: it holds the training prices") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from None
    tables = data.get("tables") if isinstance(data, dict) else None
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: expected a list of dated price tables under 'tables'")
    today = today or dt.date.today()
    dated = []
    for table in tables:
        if not isinstance(table, dict) or not isinstance(table.get("training"), dict):
            raise ConfigError(f"{path}: every table needs 'as_of' and a 'training' mapping")
        dated.append((_date(table.get("as_of"), path), table))
    applicable = [item for item in dated if item[0] <= today] or dated
    as_of, table = max(applicable, key=lambda item: item[0])
    prices: dict[str, Any] = table["training"]
    name = model.split(":", 2)[1] if model.startswith("ft:") else model
    key = name if name in prices else None
    if key is None:
        candidates = [k for k in prices if name.startswith(k + "-")]
        key = max(candidates, key=len) if candidates else None
    if key is None:
        return None
    return Price(key, float(prices[key]), as_of, str(table.get("source", "")).strip())


def training_cost(model: str, trained_tokens: int, today: dt.date | None = None) -> float | None:
    """What a finished job's trained tokens cost (the job reports them); None when the
    model has no training price (a self-hosted run)."""
    price = price_for(model, today=today)
    return None if price is None else round(trained_tokens / 1e6 * price.per_million, 4)


@dataclass(frozen=True)
class InferencePrice:
    """Answering prices of a model, per 1M tokens, and where they come from."""

    model: str
    input_per_million: float
    output_per_million: float
    fine_tuned: bool
    as_of: dt.date

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one answer."""
        return (
            prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        ) / 1e6


def _match(name: str, table: dict[str, Any]) -> str | None:
    if name in table:
        return name
    candidates = [k for k in table if name.startswith(k + "-")]
    return max(candidates, key=len) if candidates else None


@functools.lru_cache(maxsize=8)
def _inference_tables(path: Path, mtime_ns: int) -> tuple[tuple[dt.date, dict[str, Any]], ...]:
    """The dated answering tables, parsed once per version of the file (an answer is
    priced on the hot path)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from None
    tables = data.get("inference_tables") if isinstance(data, dict) else None
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: expected a list of dated price tables under 'inference_tables'")
    out = []
    for table in tables:
        if not isinstance(table, dict) or not isinstance(table.get("base"), dict):
            raise ConfigError(f"{path}: every inference table needs 'as_of' and a 'base' mapping")
        for kind in ("base", "fine_tuned"):
            for model, rates in (table.get(kind) or {}).items():
                if not isinstance(rates, dict) or not {"input", "output"} <= set(rates):
                    raise ConfigError(f"{path}: {kind}.{model} needs 'input' and 'output'")
        out.append((_date(table.get("as_of"), path), table))
    return tuple(out)


def inference_price(
    model: str, path: Path = PRICES_FILE, today: dt.date | None = None
) -> InferencePrice | None:
    """The answering price of ``model`` from the newest applicable table, or None."""
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: it holds the prices") from None
    tables = _inference_tables(path, mtime)
    today = today or dt.date.today()
    applicable = [item for item in tables if item[0] <= today] or list(tables)
    as_of, table = max(applicable, key=lambda item: item[0])
    fine_tuned = model.startswith("ft:")
    name = model.split(":", 2)[1] if fine_tuned else model
    rates_table: dict[str, Any] = table.get("fine_tuned" if fine_tuned else "base") or {}
    key = _match(name, rates_table)
    if key is None:
        return None
    rates = rates_table[key]
    return InferencePrice(key, float(rates["input"]), float(rates["output"]), fine_tuned, as_of)


def answer_cost(
    model: str, prompt_tokens: int, completion_tokens: int, today: dt.date | None = None
) -> float | None:
    """USD one answer cost, or None for a model without a known price. A broken price
    file is logged and leaves the answer unpriced: an answer is never lost over a price."""
    try:
        price = inference_price(model, today=today)
    except ConfigError:
        logger.exception("answers cannot be priced")
        return None
    return None if price is None else price.cost(prompt_tokens, completion_tokens)
