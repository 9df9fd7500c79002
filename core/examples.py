"""The training-data contract: example formats, their checks, token counting and limits.

Every part of tuneloop that makes, checks or trains on fine-tuning examples uses this
module, and only this one: the dataset tool (``python -m workers.datasets``), the
training-set builder (:mod:`workers.trainset`) and both trainers (OpenAI and the local
LoRA trainer). So a line the dataset tool accepts is a line the set builder keeps and the
trainer it is meant for can train on.

It defines:

* the three formats (:class:`Format`): chat SFT (``{"messages": [...]}`` with optional
  ``weight``, ``tools`` and ``tool_calls``), DPO preference pairs (``input`` /
  ``preferred_output`` / ``non_preferred_output``) and legacy prompt/completion;
* the roles and keys allowed, and what each trainer can train on (:class:`TrainerRules`);
* images: OpenAI's vision fine-tuning content parts in user messages (see
  :data:`IMAGE_MIME_TYPES`), never a link to a private Slack file;
* token counting of a whole example, tool calls, tool definitions and images included;
* the per-model limits (``config/model_limits.yaml``: training-example context and
  formats of each base model, with source and date) and OpenAI's minimum of examples.

Entry points:

* :func:`examine_chat` / :func:`examine_preference` / :func:`examine_completion` return
  the findings (a list of :class:`Finding`, empty when the example is fine) plus the
  facts a validator needs anyway (tokens, trained tokens, a duplicate fingerprint, the
  label), so a file is walked once; ``check_*_example`` return only the findings;
* ``repair_*_example`` apply the repairs a user accepted, or tell that the example has
  to be dropped.

Codes of chat findings use the names of the OpenAI cookbook's data-preparation notebook
(``data_type``, ``missing_messages_list``, ...), so a user can look them up there. The
checks are pure functions of one parsed example, a token counter and a limit.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import yaml

from core.errors import ConfigError
from core.settings import ROOT, TrainerBackend
from core.tokens import (
    REPLY_PRIMING,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    Tokenizer,
    image_tokens,
    json_text,
)

MIN_EXAMPLES = 10
"""OpenAI refuses a training file with fewer examples; the local trainer keeps the rule."""
LIMITS_FILE = ROOT / "config" / "model_limits.yaml"


class Format(str, Enum):
    """The shapes of a fine-tuning line."""

    CHAT = "chat"
    """``{"messages": [...], "tools": [...]?}``: supervised fine-tuning of chat models."""
    PREFERENCE = "preference"
    """``{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output":
    [...]}``: DPO."""
    COMPLETION = "completion"
    """``{"prompt", "completion"}``: babbage-002 / davinci-002."""


# --- per-model limits ---------------------------------------------------------------------
@dataclass(frozen=True)
class ModelLimits:
    """What a base model accepts as training data, from ``config/model_limits.yaml``."""

    model: str
    example_tokens: int
    """Training-example context: the most tokens one example may have."""
    formats: frozenset[Format]
    as_of: dt.date
    source: str


@lru_cache(maxsize=4)
def _limits_table(path: Path) -> tuple[dict[str, ModelLimits], tuple[str, ...]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: it holds the per-model limits") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict) or not models:
        raise ConfigError(f"{path}: expected a mapping of base models under 'models'")
    table: dict[str, ModelLimits] = {}
    for name, entry in models.items():
        try:
            formats = frozenset(Format(value) for value in entry["formats"])
            as_of = entry["as_of"]
            table[str(name)] = ModelLimits(
                str(name),
                int(entry["example_tokens"]),
                formats,
                as_of if isinstance(as_of, dt.date) else dt.date.fromisoformat(str(as_of)),
                str(entry["source"]).strip(),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{path}: model {name!r} needs example_tokens, formats (chat, preference, "
                f"completion), as_of (a date) and source ({exc})"
            ) from None
    return table, tuple(sorted(table, key=len, reverse=True))


def base_model_name(model: str) -> str:
    """``ft:gpt-4o-mini-2024-07-18:org:x:id`` -> ``gpt-4o-mini-2024-07-18``; others as given."""
    return model.split(":", 2)[1] if model.startswith("ft:") else model


def limits_for(model: str, path: Path = LIMITS_FILE) -> ModelLimits | None:
    """A model's limits: by exact name, else the longest name it starts with followed by
    ``-`` (a dated snapshot of a family); ``ft:`` models as their base. None when the
    table does not know the model (a self-hosted one: the configured limit applies)."""
    table, by_length = _limits_table(path)
    name = base_model_name(model)
    if name in table:
        return table[name]
    for candidate in by_length:
        if name.startswith(candidate + "-"):
            return table[candidate]
    return None


def example_limit(model: str, configured: int) -> int:
    """The per-example token limit to enforce: the configured one, lowered to the model's
    training-example context when the table knows it (a larger setting would let through
    examples OpenAI refuses)."""
    limits = limits_for(model)
    return min(configured, limits.example_tokens) if limits else configured


def format_problem(model: str, fmt: Format) -> str | None:
    """Why ``model`` cannot train on data of ``fmt`` (None when it can, or is unknown)."""
    limits = limits_for(model)
    if limits is None or fmt in limits.formats:
        return None
    wanted = " or ".join(sorted(f.value for f in limits.formats))
    if fmt is Format.COMPLETION:
        what = "prompt/completion data (for babbage-002/davinci-002)"
    else:
        what = f"{fmt.value} data"
    return f"{limits.model} trains on {wanted} examples only, and this is {what}"


# --- what each trainer can train on ---------------------------------------------------------
@dataclass(frozen=True)
class TrainerRules:
    """What a trainer accepts beyond the format: the roles, whether tool calls and images."""

    name: str
    roles: frozenset[str]
    tool_calls: bool
    images: bool


OPENAI_RULES = TrainerRules(
    "OpenAI", frozenset({"system", "user", "assistant", "tool", "function"}), True, True
)
LOCAL_RULES = TrainerRules(
    "the local LoRA trainer", frozenset({"system", "user", "assistant"}), False, False
)
"""The local trainer turns each message into ``{"role", "content"}`` for the chat template
of a text model: tool turns, tool calls and images would be lost, so they are refused
before a set is built."""


def rules_for(backend: TrainerBackend) -> TrainerRules:
    """The rules of a configured trainer backend."""
    return LOCAL_RULES if backend is TrainerBackend.LOCAL else OPENAI_RULES


def unsupported(message: dict[str, Any], rules: TrainerRules) -> str | None:
    """Why ``rules``' trainer cannot train on this message (None when it can)."""
    role = message.get("role")
    if not isinstance(role, str) or role not in rules.roles:
        return f"role {role!r} cannot be trained by {rules.name}"
    if not rules.tool_calls and any(message.get(key) for key in _TOOL_KEYS):
        return f"tool calls cannot be trained by {rules.name}"
    if not rules.images and content_images(message.get("content")):
        return f"images cannot be trained by {rules.name}"
    return None


# --- images -------------------------------------------------------------------------------
# OpenAI's vision fine-tuning guide (developers.openai.com/api/docs/guides/vision-fine-tuning,
# "Image dataset requirements", read 2026-12): images are ``image_url`` content parts of
# user messages only (never of assistant messages), given as an HTTP(S) URL or a base64
# ``data:`` URL; JPEG, PNG or WEBP (RGB/RGBA); at most 10 MB each and 64 per example.
# Their token cost is core.tokens.image_tokens.
IMAGE_MIME_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
MAX_IMAGES_PER_EXAMPLE = 64
MAX_IMAGE_BYTES = 10 * 1024 * 1024
IMAGE_DETAILS = frozenset({"low", "high", "auto"})
SLACK_FILE_HOSTS = ("slack.com", "slack-edge.com", "slack-files.com", "slack-imgs.com")
"""Hosts of Slack's files (``url_private`` links are on files.slack.com): the provider
cannot fetch them and must never be sent them; images go into training data embedded."""
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,", re.ASCII)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}", re.ASCII)


def content_images(content: Any) -> list[dict[str, Any]]:
    """The ``image_url`` parts of a message's content (none for text content)."""
    if not isinstance(content, list):
        return []
    return [p for p in content if isinstance(p, dict) and p.get("type") == "image_url"]


def is_slack_url(url: str) -> bool:
    """True for a link to a file on Slack (a private ``url_private`` link or its CDN)."""
    host = (urlsplit(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in SLACK_FILE_HOSTS)


def image_problem(part: dict[str, Any]) -> tuple[Code, str] | None:
    """Why OpenAI's vision fine-tuning would refuse one ``image_url`` part (None if fine).

    A data URL is checked for its type, its base64 and its decoded size; an HTTP(S) URL
    can only be checked for where it points (the provider fetches it), and a Slack one is
    refused: it is private and would send a Slack link to the provider.
    """
    if "image_url" not in part:
        return None  # nothing that could be sent anywhere: left to the provider's checks
    image = part["image_url"]
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str) or not url:
        return Code.INVALID_IMAGE, 'an image_url part needs {"url": ...}'
    detail = image.get("detail")
    if detail is not None and detail not in IMAGE_DETAILS:
        return Code.INVALID_IMAGE, f"image detail {detail!r} is not low, high or auto"
    scheme = url[:8].lower()
    if scheme.startswith(("https://", "http://")):
        if is_slack_url(url):
            return (
                Code.SLACK_IMAGE_URL,
                "the image links to a private Slack file: embed it as a data: URL",
            )
        return None
    match = _DATA_URL.match(url)
    if match is None:
        return Code.INVALID_IMAGE, "an image URL must be https:// or data:image/...;base64,"
    mime = match.group(1).lower()
    if mime not in IMAGE_MIME_TYPES:
        return Code.INVALID_IMAGE, f"image type {mime} is not JPEG, PNG or WEBP"
    payload_len = len(url) - match.end()
    if not payload_len or _BASE64.fullmatch(url, match.end()) is None or payload_len % 4:
        return Code.INVALID_IMAGE, "the image's data URL is not valid base64"
    size = payload_len // 4 * 3 - (url.endswith("==") + url.endswith("="))
    if size > MAX_IMAGE_BYTES:
        return Code.INVALID_IMAGE, f"the image is {size:,} bytes, over the 10 MB limit"
    return None


class Severity(str, Enum):
    """ERROR: OpenAI rejects the file as it is. WARNING: accepted, but worse training."""

    ERROR = "error"
    WARNING = "warning"


class Code(str, Enum):
    """What is wrong; the value is the stable name shown to users and in JSON output."""

    # Chat examples: the cookbook's format errors, same names.
    DATA_TYPE = "data_type"
    MISSING_MESSAGES_LIST = "missing_messages_list"
    MESSAGE_DATA_TYPE = "message_data_type"
    MESSAGE_MISSING_KEY = "message_missing_key"
    MESSAGE_UNRECOGNIZED_KEY = "message_unrecognized_key"
    UNRECOGNIZED_ROLE = "unrecognized_role"
    MISSING_CONTENT = "missing_content"
    CONTENT_WRONG_TYPE = "content_wrong_type"
    INVALID_WEIGHT = "invalid_weight"
    EXAMPLE_MISSING_ASSISTANT_MESSAGE = "example_missing_assistant_message"
    NOT_TRAINABLE = "not_trainable_by_trainer"
    INVALID_TEXT = "invalid_text"
    INVALID_IMAGE = "invalid_image"
    SLACK_IMAGE_URL = "slack_image_url"
    # Preference (DPO) examples.
    INVALID_PREFERENCE_OUTPUT = "invalid_preference_output"
    MISSING_SYSTEM_MESSAGE = "missing_system_message"
    MISSING_USER_MESSAGE = "missing_user_message"
    # Both formats.
    UNRECOGNIZED_KEY = "unrecognized_key"
    TOO_MANY_TOKENS = "too_many_tokens"
    # Prompt/completion examples: the legacy prepare_data tool's checks.
    MISSING_KEY = "missing_key"
    KEY_CASE = "key_case"
    EMPTY_COMPLETION = "empty_completion"
    COMPLETION_LEADING_SPACE = "completion_missing_leading_space"
    # Whole-file findings (computed by the validator, listed here so codes stay unique).
    EMPTY_FILE = "empty_file"
    FORMAT_NOT_FOR_MODEL = "format_not_for_model"
    TOO_FEW_EXAMPLES = "too_few_examples"
    FEW_EXAMPLES = "few_examples"
    DUPLICATE_EXAMPLE = "duplicate_example"
    MISSING_PROMPT_SEPARATOR = "missing_prompt_separator"
    SEPARATOR_INSIDE_PROMPT = "separator_inside_prompt"
    IDENTICAL_PROMPTS = "identical_prompts"
    MISSING_STOP_SEQUENCE = "missing_stop_sequence"
    STOP_INSIDE_COMPLETION = "stop_inside_completion"
    IDENTICAL_COMPLETIONS = "identical_completions"
    COMMON_PROMPT_PREFIX = "common_prompt_prefix"
    COMMON_COMPLETION_PREFIX = "common_completion_prefix"
    MOSTLY_UPPERCASE = "mostly_uppercase"
    CLASS_IMBALANCE = "class_imbalance"
    LABEL_NOT_SINGLE_TOKEN = "label_not_single_token"


_WARNINGS = frozenset(
    {
        # A warning, not an error: the same file is right for another base model, and the
        # model checked against is often only the configured default.
        Code.FORMAT_NOT_FOR_MODEL,
        Code.MISSING_SYSTEM_MESSAGE,
        Code.MISSING_USER_MESSAGE,
        Code.COMPLETION_LEADING_SPACE,
        Code.FEW_EXAMPLES,
        Code.DUPLICATE_EXAMPLE,
        Code.MISSING_PROMPT_SEPARATOR,
        Code.SEPARATOR_INSIDE_PROMPT,
        Code.MISSING_STOP_SEQUENCE,
        Code.STOP_INSIDE_COMPLETION,
        Code.COMMON_PROMPT_PREFIX,
        Code.COMMON_COMPLETION_PREFIX,
        Code.MOSTLY_UPPERCASE,
        Code.CLASS_IMBALANCE,
        Code.LABEL_NOT_SINGLE_TOKEN,
    }
)


def severity(code: Code) -> Severity:
    """How bad a finding of this code is."""
    return Severity.WARNING if code in _WARNINGS else Severity.ERROR


# What ``--fix`` does about each code. Codes not listed have no automatic repair (for
# example too few examples: only more data helps).
FIXES: dict[Code, str] = {
    Code.DATA_TYPE: "drop these examples",
    Code.MISSING_MESSAGES_LIST: "drop these examples",
    Code.MESSAGE_DATA_TYPE: "drop these examples",
    Code.MESSAGE_MISSING_KEY: "drop these examples",
    Code.MESSAGE_UNRECOGNIZED_KEY: "remove the unknown keys",
    Code.UNRECOGNIZED_ROLE: "map known synonyms (human, ai, bot, ...) and drop the rest",
    Code.MISSING_CONTENT: "drop these examples",
    Code.CONTENT_WRONG_TYPE: "convert numbers and text parts to text, drop the rest",
    Code.INVALID_WEIGHT: "remove the invalid weights",
    Code.EXAMPLE_MISSING_ASSISTANT_MESSAGE: "drop these examples",
    Code.NOT_TRAINABLE: "drop these examples",
    Code.INVALID_TEXT: "drop these examples",
    Code.INVALID_IMAGE: "drop these examples",
    Code.SLACK_IMAGE_URL: "drop these examples",
    Code.INVALID_PREFERENCE_OUTPUT: "drop these examples",
    Code.KEY_CASE: "write the keys in lower case",
    Code.MISSING_SYSTEM_MESSAGE: "add the configured system prompt",
    Code.UNRECOGNIZED_KEY: "remove the extra keys/columns",
    Code.TOO_MANY_TOKENS: "drop these examples",
    Code.MISSING_KEY: "drop these examples",
    Code.EMPTY_COMPLETION: "drop these examples",
    Code.COMPLETION_LEADING_SPACE: "add a space at the start of the completions",
    Code.DUPLICATE_EXAMPLE: "drop the later copies",
    Code.MISSING_PROMPT_SEPARATOR: "append a separator to every prompt",
    Code.MISSING_STOP_SEQUENCE: "append a stop sequence to every completion",
    Code.COMMON_PROMPT_PREFIX: "remove the prefix from every prompt",
    Code.COMMON_COMPLETION_PREFIX: "remove the prefix from every completion",
}

# Codes whose fix removes the example rather than repairing it.
DROP_CODES = frozenset(code for code, fix in FIXES.items() if fix.startswith("drop"))


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem of one example: a stable ``code`` and a human ``message``."""

    code: Code
    message: str

    @property
    def severity(self) -> Severity:
        """Error (the file would be rejected) or warning."""
        return severity(self.code)


class TokenCounter(Protocol):
    """What the checks need from a counter: :class:`core.tokens.Tokenizer` or a cache."""

    exact: bool
    source: str

    def count(self, text: str) -> int: ...


class CachedCounter:
    """A token counter that counts each distinct text once (bounded cache).

    Training files repeat the same system prompt and role names on every line; caching
    them removes much of the tokenizer's work without changing any count. The cache is
    cleared when it is full, so memory does not grow with the file while the hot texts
    come back within a few lines. ``role_tokens`` holds the counts of the standard
    roles for :func:`examine_chat`'s inner loop.
    """

    __slots__ = (
        "_counter",
        "_cache",
        "_max",
        "_encode",
        "exact",
        "source",
        "encoding",
        "role_tokens",
    )

    def __init__(self, counter: Tokenizer, max_entries: int = 8192) -> None:
        self._counter = counter
        self._cache: dict[str, int] = {}
        self._max = max_entries
        self.exact = counter.exact
        self.source = counter.source
        self.encoding = counter.encoding
        self._encode = _direct_encoder(counter)
        self.role_tokens: dict[str, int] = {role: self.count(role) for role in ROLES}

    def __reduce__(self) -> tuple[Any, tuple[Tokenizer, int]]:
        """Pickled as the counter it wraps (the cache starts empty in the new process)."""
        return CachedCounter, (self._counter, self._max)

    def _count_new(self, text: str) -> int:
        encode = self._encode
        if encode is not None:
            try:
                return len(encode(text))
            except UnicodeEncodeError:  # lone surrogates: the wrapper knows what to do
                pass
        return self._counter.count(text)

    def count(self, text: str) -> int:
        """Tokens in ``text``, from the cache when it was counted before."""
        cache = self._cache
        n = cache.get(text)
        if n is None:
            n = self._count_new(text) if text else 0
            if len(cache) >= self._max:
                cache.clear()
            cache[text] = n
        return n

    def count_messages(self, messages: list[dict[str, Any]]) -> int:
        """Same as :meth:`core.tokens.Tokenizer.count_messages`, through the cache."""
        return Tokenizer.count_messages(self, messages)  # type: ignore[arg-type]

    def message_content_tokens(self, message: dict[str, Any]) -> int:
        """Same as :meth:`core.tokens.Tokenizer.message_content_tokens`."""
        return Tokenizer.message_content_tokens(self, message)  # type: ignore[arg-type]


def _direct_encoder(counter: Tokenizer) -> Any:
    """tiktoken's Rust encoder without its Python wrappers, when it gives the same counts.

    Saves two Python calls per uncached text. Checked on a sample at start-up; any
    surprise (another tokenizer, a changed tiktoken) falls back to ``counter.count``.
    """
    core = getattr(getattr(counter, "_encoder", None), "_core_bpe", None)
    encode = getattr(core, "encode_ordinary", None)
    if encode is None or not counter.exact:
        return None
    sample = "Hello, world! Größe 12345 <|endoftext|>\n\n  tabs\tand emoji 🙂"
    try:
        if len(encode(sample)) != counter.count(sample):
            return None
    except Exception:  # noqa: BLE001 - any surprise means: do not use it
        return None
    return encode


class ExampleFacts(NamedTuple):
    """Everything one pass over an example learns.

    ``tokens`` is -1 when the example is too broken to count; ``fingerprint`` (equal for
    examples with the same content, within one process) is None then too. ``label`` is
    the text a classifier would learn: the last assistant message or the completion.
    """

    findings: list[Finding]
    tokens: int
    trained_tokens: int
    fingerprint: int | None
    label: str | None


ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight"}
)
CHAT_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})
COMPLETION_KEYS = ("prompt", "completion")
ROLE_SYNONYMS = {
    "user": "user",
    "human": "user",
    "customer": "user",
    "question": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "bot": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "answer": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "function",
}
_TOOL_KEYS = ("tool_calls", "function_call")
_NO_ROLES: dict[str, int] = {}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


def text_of(content: Any) -> str:
    """The text a counter sees in a content value (mirrors ``Tokenizer``)."""
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _parts_ok(content: list[Any]) -> bool:
    return bool(content) and all(
        isinstance(part, dict) and isinstance(part.get("type"), str) for part in content
    )


def _message_problems(index: int, message: dict[str, Any], findings: list[Finding]) -> None:
    """The rare checks of a message with missing or extra keys (kept off the hot path)."""
    has_tool = any(message.get(key) for key in _TOOL_KEYS)
    missing = [
        key
        for key in ("role", "content")
        if key not in message and not (key == "content" and has_tool)
    ]
    if missing:
        findings.append(
            Finding(Code.MESSAGE_MISSING_KEY, f"message {index} has no {' or '.join(missing)}")
        )
    extra = [key for key in message if key not in MESSAGE_KEYS]
    if extra:
        findings.append(
            Finding(
                Code.MESSAGE_UNRECOGNIZED_KEY,
                f"message {index} has unknown keys {', '.join(map(repr, extra))}",
            )
        )
    if "weight" in message:
        weight = message["weight"]
        if message.get("role") != "assistant" or type(weight) is not int or weight not in (0, 1):
            findings.append(
                Finding(
                    Code.INVALID_WEIGHT,
                    f"message {index}: weight must be 0 or 1 on an assistant message, "
                    f"got {weight!r}",
                )
            )


def _invalid_text(text: str) -> bool:
    """True when ``text`` cannot be written as UTF-8: a lone surrogate (``\\ud800``) that
    JSON's escapes allow but no training file can hold."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _role_of(role: Any) -> str | None:
    """The role a message plays: an allowed role, or the one a known synonym maps to."""
    if type(role) is str:
        if role in ROLES:
            return role
        return ROLE_SYNONYMS.get(role.strip().lower())
    return None


def examine_chat(
    obj: Any,
    counter: TokenCounter,
    max_tokens: int,
    *,
    count_all: bool = True,
    rules: TrainerRules = OPENAI_RULES,
) -> ExampleFacts:
    """Check one chat example (``{"messages": [...]}``) and count its tokens.

    Tokens are counted as :meth:`core.tokens.Tokenizer.count_messages` does (framing
    included), plus the compact JSON of tool calls and of the ``tools``/``functions``
    definitions, which OpenAI bills and counts against the limit too. With
    ``count_all=False`` they are only counted when the example could be over the limit:
    a token covers at least one UTF-8 byte and a character at most four, so an example
    of fewer than ``max_tokens / 4`` characters cannot be; ``tokens`` is then -1. The
    fingerprint is the hash of the (role, text) pairs: two lines with the same
    conversation are duplicates whatever their key order or weights.

    A role written as a known synonym (human, ai, ...) is reported as unrecognised (the
    fix maps it) but counts as the role it stands for, so a file that uses synonyms is
    repaired, not dropped for lacking an assistant message. ``rules`` says which trainer
    the data is for: the local trainer cannot train on tool turns.
    """
    if not isinstance(obj, dict):
        message = f"expected a JSON object, got {_type_name(obj)}"
        return ExampleFacts([Finding(Code.DATA_TYPE, message)], -1, 0, None, None)
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        what = "no messages list" if messages is None else f"messages is {_type_name(messages)}"
        if isinstance(messages, list):
            what = "the messages list is empty"
        return ExampleFacts([Finding(Code.MISSING_MESSAGES_LIST, what)], -1, 0, None, None)
    findings: list[Finding] = []
    tool_defs = ""
    if len(obj) > 1:
        extra = [key for key in obj if key not in CHAT_KEYS]
        if extra:
            findings.append(
                Finding(Code.UNRECOGNIZED_KEY, f"unknown keys {', '.join(map(repr, extra))}")
            )
        tools = obj.get("tools") or obj.get("functions")
        if tools:
            tool_defs = json_text(tools)
    parts, names, size, label, roles, images, pictures = _walk(messages, findings, rules)
    if "assistant" not in roles:
        findings.append(
            Finding(Code.EXAMPLE_MISSING_ASSISTANT_MESSAGE, "no assistant message to learn from")
        )
    else:
        if "system" not in roles:
            findings.append(Finding(Code.MISSING_SYSTEM_MESSAGE, "no system message"))
        if "user" not in roles:
            findings.append(Finding(Code.MISSING_USER_MESSAGE, "no user message"))
    size += len(tool_defs)
    bound = (
        REPLY_PRIMING + len(parts) * (TOKENS_PER_MESSAGE + TOKENS_PER_NAME) + 4 * size + pictures
    )
    tokens, trained = -1, 0
    if count_all or bound > max_tokens:
        tokens, trained = _count_chat(parts, names, counter)
        tokens += pictures
        if tool_defs:
            tokens += counter.count(tool_defs)
        if tokens > max_tokens:
            findings.append(
                Finding(
                    Code.TOO_MANY_TOKENS, f"{tokens:,} tokens, over the limit of {max_tokens:,}"
                )
            )
    if images:
        fingerprint = hash((tuple(parts), tool_defs, tuple(images)))
    else:
        fingerprint = hash((tuple(parts), tool_defs)) if tool_defs else hash(tuple(parts))
    return ExampleFacts(findings, tokens, trained, fingerprint, label)


_PLAIN_ROLES = frozenset({"system", "user", "assistant"})


class _Walked(NamedTuple):
    """What one pass over a messages list learns, for counting and de-duplication."""

    parts: list[str]
    """role, text, role, text, ... (text parts joined; tool calls as their JSON)."""
    names: list[str] | None
    size: int
    """Characters of the texts (bounds their tokens from above)."""
    label: str | None
    roles: set[str]
    images: list[str]
    """The URLs of the images, in order (part of the fingerprint)."""
    image_tokens: int


def _walk(messages: list[Any], findings: list[Finding], rules: TrainerRules) -> _Walked:
    """Check a messages list (chat lines and preference inputs) in one pass.

    Appends the findings of each message to ``findings`` and returns what counting and
    de-duplication need. Tool calls are part of their message's text (the model learns to
    write them); images are counted apart (:func:`core.tokens.image_tokens`). A plain
    ``{"role", "content"}`` message with text takes a short path: most lines are only that.
    """
    parts: list[str] = []  # role, text, role, text, ...
    names: list[str] | None = None
    size = 0
    label = None
    roles: set[str] = set()
    images: list[str] = []
    pictures = 0
    for index, message in enumerate(messages, 1):
        if type(message) is not dict:
            findings.append(
                Finding(
                    Code.MESSAGE_DATA_TYPE,
                    f"message {index} is {_type_name(message)}, expected an object",
                )
            )
            continue
        role = message.get("role")
        content = message.get("content")
        if (
            len(message) == 2
            and type(content) is str
            and type(role) is str
            and role in _PLAIN_ROLES
        ):
            if not content:
                findings.append(Finding(Code.MISSING_CONTENT, f"message {index} has empty content"))
            elif not content.isascii() and _invalid_text(content):
                findings.append(_surrogate(index))
            roles.add(role)
            if role == "assistant":
                label = content
            parts.append(role)
            parts.append(content)
            size += len(role) + len(content)
            continue
        _check_message(index, message, role, content, findings, rules)
        text = text_of(content)
        for part in content_images(content):
            image = part.get("image_url")
            images.append(str(image.get("url")) if isinstance(image, dict) else "")
            pictures += image_tokens(part)
        call = message.get("tool_calls") or message.get("function_call")
        if call:
            text += json_text(call)
        played = _role_of(role)
        if played is not None:
            roles.add(played)
            if played == "assistant":
                label = text
        role_text = played or (role if type(role) is str else str(message.get("role", "")))
        parts.append(role_text)
        parts.append(text)
        size += len(role_text) + len(text)
        name = message.get("name")
        if name:
            name = str(name)
            size += len(name)
            if names is None:
                names = []
            names.append(name)
    if len(images) > MAX_IMAGES_PER_EXAMPLE:
        findings.append(
            Finding(
                Code.INVALID_IMAGE,
                f"{len(images)} images, over the limit of {MAX_IMAGES_PER_EXAMPLE} an example",
            )
        )
    return _Walked(parts, names, size, label, roles, images, pictures)


def _surrogate(index: int) -> Finding:
    return Finding(
        Code.INVALID_TEXT,
        f"message {index} content holds a lone surrogate escape (like \\ud800), which is not text",
    )


def _check_message(
    index: int,
    message: dict[str, Any],
    role: Any,
    content: Any,
    findings: list[Finding],
    rules: TrainerRules,
) -> None:
    """The checks of a message off the short path (other keys, roles or content types)."""
    if len(message) != 2 or "role" not in message or "content" not in message:
        _message_problems(index, message, findings)
    if type(content) is str:
        if not content and not (role == "assistant" and any(message.get(k) for k in _TOOL_KEYS)):
            findings.append(Finding(Code.MISSING_CONTENT, f"message {index} has empty content"))
        elif _invalid_text(content):
            findings.append(_surrogate(index))
    elif content is None:
        if not any(message.get(k) for k in _TOOL_KEYS) and "content" in message:
            findings.append(Finding(Code.MISSING_CONTENT, f"message {index} has null content"))
    elif isinstance(content, list) and role != "assistant" and _parts_ok(content):
        _check_parts(index, role, content, findings)
    else:
        findings.append(
            Finding(
                Code.CONTENT_WRONG_TYPE,
                f"message {index} content is {_type_name(content)}, expected a string",
            )
        )
    if not isinstance(role, str) or role not in ROLES:
        findings.append(Finding(Code.UNRECOGNIZED_ROLE, f"message {index} has role {role!r}"))
    elif rules is not OPENAI_RULES:
        why = unsupported(message, rules)
        if why:
            findings.append(Finding(Code.NOT_TRAINABLE, f"message {index}: {why}"))


def _check_parts(index: int, role: Any, content: list[Any], findings: list[Finding]) -> None:
    """The checks of a list content: text parts and, in user messages, images."""
    for part in content:
        kind = part["type"]
        if kind == "text":
            text = part.get("text")
            if type(text) is not str:
                findings.append(
                    Finding(
                        Code.CONTENT_WRONG_TYPE,
                        f"message {index}: a text part's text is {_type_name(text)}",
                    )
                )
            elif _invalid_text(text):
                findings.append(_surrogate(index))
        elif kind == "image_url":
            if role != "user":
                findings.append(
                    Finding(
                        Code.INVALID_IMAGE,
                        f"message {index}: images are allowed in user messages only",
                    )
                )
            problem = image_problem(part)
            if problem is not None:
                findings.append(Finding(problem[0], f"message {index}: {problem[1]}"))
        else:
            findings.append(
                Finding(
                    Code.CONTENT_WRONG_TYPE,
                    f"message {index}: a content part of type {kind!r} is neither text "
                    "nor image_url",
                )
            )


def _count_chat(
    parts: list[str], names: list[str] | None, counter: TokenCounter
) -> tuple[int, int]:
    """(all tokens, assistant tokens) of the role/text pairs, as ``count_messages``."""
    count = counter.count
    role_tokens: dict[str, int] = getattr(counter, "role_tokens", _NO_ROLES)
    tokens = REPLY_PRIMING
    trained = 0
    for position in range(0, len(parts), 2):
        role, text = parts[position], parts[position + 1]
        n = count(text)
        role_n = role_tokens.get(role)
        if role_n is None:
            role_n = count(role)
        tokens += TOKENS_PER_MESSAGE + role_n + n
        if role == "assistant":
            trained += n
    if names:
        for name in names:
            tokens += TOKENS_PER_NAME + count(name)
    return tokens, trained


def count_chat_tokens(
    messages: list[dict[str, Any]], counter: TokenCounter, tools: Any = None
) -> int:
    """Tokens of a chat example as :func:`examine_chat` counts them (tool calls and tool
    definitions included): what the limit is checked against and what is billed."""
    walked = _walk(messages, [], OPENAI_RULES)
    tokens, _ = _count_chat(walked.parts, walked.names, counter)
    tokens += walked.image_tokens
    return tokens + counter.count(json_text(tools)) if tools else tokens


def check_chat_example(obj: Any, counter: TokenCounter, max_tokens: int) -> list[Finding]:
    """Findings for one chat example; an empty list means OpenAI accepts it as is.

    ``obj`` is the parsed JSON line, ``counter`` a :class:`core.tokens.Tokenizer` (or a
    :class:`CachedCounter`) for the model to be trained, ``max_tokens`` the per-example
    limit (``settings.training.max_example_tokens``). Errors make the file rejected;
    warnings (no system/user message) make training worse. Pure: no I/O, no state.
    """
    return examine_chat(obj, counter, max_tokens).findings


def completion_fields(obj: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Which keys of ``obj`` hold the prompt and the completion, and the extra keys.

    Keys are matched without regard to case (``Prompt``/``Completion``, as table headers
    are), so such a file is checked as what it is; the caller reports the case.
    """
    found: dict[str, str] = {}
    extra: list[str] = []
    for key in obj:
        folded = key.lower() if isinstance(key, str) else key
        if folded in COMPLETION_KEYS and (folded not in found or key == folded):
            if folded in found:
                extra.append(found[folded])
            found[folded] = key
        else:
            extra.append(key)
    return found, extra


def examine_completion(
    obj: Any, counter: TokenCounter, max_tokens: int, *, count_all: bool = True
) -> ExampleFacts:
    """Check one prompt/completion example and count its tokens.

    Empty prompts are fine (open-ended generation, e.g. learning a voice); an empty
    completion teaches nothing and is an error, as in OpenAI's legacy tool.
    ``count_all`` as for :func:`examine_chat`.
    """
    if not isinstance(obj, dict):
        message = f"expected a JSON object, got {_type_name(obj)}"
        return ExampleFacts([Finding(Code.DATA_TYPE, message)], -1, 0, None, None)
    findings: list[Finding] = []
    prompt = obj.get("prompt")
    completion = obj.get("completion")
    if len(obj) != 2 or prompt is None or completion is None:
        keys, extra = completion_fields(obj)
        missing = [key for key in COMPLETION_KEYS if key not in keys]
        if missing:
            findings.append(Finding(Code.MISSING_KEY, f"no {' or '.join(missing)}"))
            return ExampleFacts(findings, -1, 0, None, None)
        cased = [keys[key] for key in COMPLETION_KEYS if keys[key] != key]
        if cased:
            findings.append(
                Finding(
                    Code.KEY_CASE,
                    f"keys {', '.join(map(repr, cased))} must be written in lower case",
                )
            )
        if extra:
            findings.append(
                Finding(Code.UNRECOGNIZED_KEY, f"extra keys/columns {', '.join(map(repr, extra))}")
            )
        prompt, completion = obj[keys["prompt"]], obj[keys["completion"]]
    if type(prompt) is not str:
        if prompt is None or isinstance(prompt, int | float):
            findings.append(
                Finding(Code.CONTENT_WRONG_TYPE, f"prompt is {_type_name(prompt)}, not a string")
            )
            prompt = "" if prompt is None else json.dumps(prompt)
        else:
            findings.append(
                Finding(Code.CONTENT_WRONG_TYPE, f"prompt is {_type_name(prompt)}, not a string")
            )
            return ExampleFacts(findings, -1, 0, None, None)
    if type(completion) is not str:
        if completion is None:
            completion = ""
        elif isinstance(completion, int | float):
            findings.append(
                Finding(
                    Code.CONTENT_WRONG_TYPE, f"completion is {_type_name(completion)}, not a string"
                )
            )
            completion = " " + json.dumps(completion)
        else:
            findings.append(
                Finding(
                    Code.CONTENT_WRONG_TYPE, f"completion is {_type_name(completion)}, not a string"
                )
            )
            return ExampleFacts(findings, -1, 0, None, None)
    if _invalid_text(prompt) or _invalid_text(completion):
        findings.append(
            Finding(
                Code.INVALID_TEXT,
                "a lone surrogate escape (like \\ud800) in the prompt or completion is not text",
            )
        )
    if not completion:
        findings.append(Finding(Code.EMPTY_COMPLETION, "the completion is empty"))
    elif completion[0] != " ":
        findings.append(
            Finding(Code.COMPLETION_LEADING_SPACE, "the completion does not start with a space")
        )
    tokens, trained = -1, 0
    if count_all or 4 * (len(prompt) + len(completion)) > max_tokens:
        trained = counter.count(completion)
        tokens = counter.count(prompt) + trained
        if tokens > max_tokens:
            findings.append(
                Finding(
                    Code.TOO_MANY_TOKENS, f"{tokens:,} tokens, over the limit of {max_tokens:,}"
                )
            )
    return ExampleFacts(findings, tokens, trained, hash((prompt, completion)), completion)


def check_completion_example(obj: Any, counter: TokenCounter, max_tokens: int) -> list[Finding]:
    """Findings for one ``{"prompt", "completion"}`` example (babbage-002/davinci-002).

    Same contract as :func:`check_chat_example`.
    """
    return examine_completion(obj, counter, max_tokens).findings


PREFERENCE_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
_OUTPUTS = ("preferred_output", "non_preferred_output")


def _output_text(value: Any, key: str, findings: list[Finding]) -> str | None:
    """The text of one side of a preference pair: exactly one assistant message."""
    if (
        isinstance(value, list)
        and len(value) == 1
        and isinstance(value[0], dict)
        and value[0].get("role") == "assistant"
    ):
        message = value[0]
        content = message.get("content")
        call = message.get("tool_calls") or message.get("function_call")
        if (type(content) is str and content.strip()) or call:
            text = content if type(content) is str else ""
            if _invalid_text(text):
                findings.append(
                    Finding(
                        Code.INVALID_TEXT, f"{key} holds a lone surrogate escape (like \\ud800)"
                    )
                )
            return text + json_text(call) if call else text
    findings.append(
        Finding(
            Code.INVALID_PREFERENCE_OUTPUT,
            f"{key} must be a list of one assistant message with content",
        )
    )
    return None


def examine_preference(
    obj: Any,
    counter: TokenCounter,
    max_tokens: int,
    *,
    count_all: bool = True,
    rules: TrainerRules = OPENAI_RULES,
) -> ExampleFacts:
    """Check one preference (DPO) example and count its tokens.

    The input's messages get the chat checks; each output must be exactly one assistant
    message, and the two must differ. A pair is trained as two sequences, the input
    followed by each output: ``tokens`` (checked against the limit and billed) is the
    input with the longer output, ``trained_tokens`` both outputs. The fingerprint
    covers input and both outputs.
    """
    if not isinstance(obj, dict):
        message = f"expected a JSON object, got {_type_name(obj)}"
        return ExampleFacts([Finding(Code.DATA_TYPE, message)], -1, 0, None, None)
    findings: list[Finding] = []
    extra = [key for key in obj if key not in PREFERENCE_KEYS]
    if extra:
        findings.append(
            Finding(Code.UNRECOGNIZED_KEY, f"unknown keys {', '.join(map(repr, extra))}")
        )
    source = obj.get("input")
    if not isinstance(source, dict):
        source = {}
    messages = source.get("messages")
    if not isinstance(messages, list) or not messages:
        findings.append(Finding(Code.MISSING_MESSAGES_LIST, "input has no messages list"))
        return ExampleFacts(findings, -1, 0, None, None)
    tools = source.get("tools") or source.get("functions")
    tool_defs = json_text(tools) if tools else ""
    parts, names, size, _, roles, images, pictures = _walk(messages, findings, rules)
    outputs = [_output_text(obj.get(key), key, findings) for key in _OUTPUTS]
    chosen, rejected = outputs
    if chosen is not None and chosen == rejected:
        findings.append(
            Finding(
                Code.INVALID_PREFERENCE_OUTPUT,
                "the preferred and non-preferred outputs are the same",
            )
        )
    if "user" not in roles:
        findings.append(Finding(Code.MISSING_USER_MESSAGE, "no user message"))
    if "system" not in roles:
        findings.append(Finding(Code.MISSING_SYSTEM_MESSAGE, "no system message"))
    longest = max((text for text in outputs if text is not None), key=len, default="")
    size += len(tool_defs) + len(longest)
    bound = (
        REPLY_PRIMING
        + (len(parts) + 2) * (TOKENS_PER_MESSAGE + TOKENS_PER_NAME)
        + 4 * size
        + pictures
    )
    tokens, trained = -1, 0
    if count_all or bound > max_tokens:
        tokens, _ = _count_chat(parts, names, counter)
        tokens += pictures
        if tool_defs:
            tokens += counter.count(tool_defs)
        sides = [counter.count(text) for text in outputs if text is not None]
        trained = sum(sides)
        tokens = _pair_tokens(tokens, sides, counter)
        if tokens > max_tokens:
            findings.append(
                Finding(
                    Code.TOO_MANY_TOKENS, f"{tokens:,} tokens, over the limit of {max_tokens:,}"
                )
            )
    fingerprint = hash((tuple(parts), tool_defs, chosen, rejected, tuple(images)))
    return ExampleFacts(findings, tokens, trained, fingerprint, None)


def _pair_tokens(input_tokens: int, sides: list[int], counter: TokenCounter) -> int:
    """A pair's tokens: its input, then the longer output as one more assistant message."""
    return input_tokens + TOKENS_PER_MESSAGE + counter.count("assistant") + max(sides, default=0)


def count_preference_tokens(
    messages: list[dict[str, Any]], chosen: str, rejected: str, counter: TokenCounter
) -> int:
    """Tokens of a preference pair as :func:`examine_preference` counts them (the input
    with the longer output): what the limit is checked against and what is billed."""
    sides = [counter.count(chosen), counter.count(rejected)]
    return _pair_tokens(count_chat_tokens(messages, counter), sides, counter)


def check_preference_example(obj: Any, counter: TokenCounter, max_tokens: int) -> list[Finding]:
    """Findings for one preference (DPO) example; same contract as :func:`check_chat_example`."""
    return examine_preference(obj, counter, max_tokens).findings


def repair_preference_example(
    obj: Any, fixes: Collection[Code], system_prompt: str | None = None
) -> dict[str, Any] | None:
    """Apply the accepted ``fixes`` to a preference example's input (as
    :func:`repair_chat_example` does to a chat) and keep both outputs; None to drop it."""
    if not isinstance(obj, dict) or not isinstance(obj.get("input"), dict):
        return None
    out = dict(obj)
    if Code.UNRECOGNIZED_KEY in fixes:
        out = {key: value for key, value in out.items() if key in PREFERENCE_KEYS}
    source = out["input"]
    input_fixes = frozenset(fixes) - {Code.UNRECOGNIZED_KEY}
    repaired = repair_chat_example({"messages": source.get("messages")}, input_fixes, system_prompt)
    if repaired is None:
        return None
    out["input"] = {**source, "messages": repaired["messages"]}
    return out


def examiner(fmt: Format) -> Any:
    """The ``examine_*`` function of a format."""
    return {
        Format.CHAT: examine_chat,
        Format.PREFERENCE: examine_preference,
        Format.COMPLETION: examine_completion,
    }[fmt]


def detect_format(obj: Any) -> Format:
    """The format a parsed example is written in (chat when it is unclear)."""
    if isinstance(obj, dict) and "messages" not in obj:
        if "input" in obj and any(key in obj for key in _OUTPUTS):
            return Format.PREFERENCE
        keys, _ = completion_fields(obj)
        if keys:
            return Format.COMPLETION
    return Format.CHAT


def _scalar_text(value: Any) -> str | None:
    """Text for a number/boolean content (JSON spelling), None for anything else."""
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None


def _repair_message(message: dict[str, Any], fixes: Collection[Code]) -> dict[str, Any] | None:
    message = dict(message)
    if Code.MESSAGE_UNRECOGNIZED_KEY in fixes:
        for key in [key for key in message if key not in MESSAGE_KEYS]:
            del message[key]
    role = message.get("role")
    if Code.UNRECOGNIZED_ROLE in fixes and (not isinstance(role, str) or role not in ROLES):
        mapped = ROLE_SYNONYMS.get(role.strip().lower()) if isinstance(role, str) else None
        if mapped is None:
            return None
        message["role"] = role = mapped
    if Code.INVALID_WEIGHT in fixes and "weight" in message:
        weight = message["weight"]
        if role != "assistant" or type(weight) is not int or weight not in (0, 1):
            del message["weight"]
    content = message.get("content")
    if Code.CONTENT_WRONG_TYPE in fixes and content is not None and type(content) is not str:
        if isinstance(content, list) and role != "assistant" and _parts_ok(content):
            pass
        elif isinstance(content, list) and all(
            isinstance(part, dict) and part.get("type", "text") == "text" for part in content
        ):
            message["content"] = text_of(content)
        elif (text := _scalar_text(content)) is not None:
            message["content"] = text
        else:
            return None
    return message


def repair_chat_example(
    obj: Any, fixes: Collection[Code], system_prompt: str | None = None
) -> dict[str, Any] | None:
    """Apply the accepted ``fixes`` to a chat example; None when it has to be dropped.

    Drop-type fixes (see :data:`DROP_CODES`) are decided by the caller from the findings;
    this function repairs what can be repaired (unknown keys, role synonyms, numbers as
    content, invalid weights, a missing system prompt) and returns a new dict, leaving
    ``obj`` untouched. A message it cannot repair makes the example dropped.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        return None
    out = dict(obj)
    if Code.UNRECOGNIZED_KEY in fixes:
        out = {key: value for key, value in out.items() if key in CHAT_KEYS}
    messages: list[dict[str, Any]] = []
    for message in out["messages"]:
        if not isinstance(message, dict):
            return None
        repaired = _repair_message(message, fixes)
        if repaired is None:
            return None
        messages.append(repaired)
    if (
        Code.MISSING_SYSTEM_MESSAGE in fixes
        and system_prompt
        and not any(m.get("role") == "system" for m in messages)
    ):
        messages.insert(0, {"role": "system", "content": system_prompt})
    out["messages"] = messages
    return out


def repair_completion_example(obj: Any, fixes: Collection[Code]) -> dict[str, Any] | None:
    """Apply the accepted per-example ``fixes`` to a prompt/completion example.

    Returns ``{"prompt", "completion"}`` with strings (keys in lower case and extra keys
    removed when those fixes are accepted, numbers turned into text, a leading space
    added), or None to drop it.
    """
    if not isinstance(obj, dict):
        return None
    keys, extra = completion_fields(obj)
    if any(key not in keys for key in COMPLETION_KEYS):
        return None
    cased = any(keys[key] != key for key in COMPLETION_KEYS)
    if (cased and Code.KEY_CASE not in fixes) or (extra and Code.UNRECOGNIZED_KEY not in fixes):
        return dict(obj)
    prompt, completion = obj[keys["prompt"]], obj[keys["completion"]]
    if type(prompt) is not str:
        if Code.CONTENT_WRONG_TYPE not in fixes:
            return dict(obj)
        prompt = "" if prompt is None else _scalar_text(prompt)
        if prompt is None:
            return None
    if type(completion) is not str:
        if Code.CONTENT_WRONG_TYPE not in fixes:
            return dict(obj)
        completion = _scalar_text(completion) if completion is not None else None
        if completion is None:
            return None
        completion = " " + completion
    if not completion:
        return None
    if Code.COMPLETION_LEADING_SPACE in fixes and completion[0] != " ":
        completion = " " + completion
    return {"prompt": prompt, "completion": completion}
