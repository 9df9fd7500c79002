"""Per-example checks of fine-tuning examples, shared by the dataset CLI and the loop.

These are pure functions of one parsed example, a token counter and a token limit: no
I/O, no global state. The dataset tool runs them on every line of a file; the learning
loop's training-set builder runs the same ones on approved examples before it uploads a
file, so both agree on what OpenAI will reject.

Entry points:

* :func:`check_chat_example` / :func:`check_completion_example` return the findings
  (a list of :class:`Finding`, empty when the example is fine);
* :func:`examine_chat` / :func:`examine_completion` return the same findings plus the
  facts a validator needs anyway (tokens, assistant tokens, a duplicate fingerprint, the
  label), so a file is walked once;
* :func:`repair_chat_example` / :func:`repair_completion_example` apply the repairs a
  user accepted, or tell that the example has to be dropped.

Codes of chat findings use the names of the OpenAI cookbook's data-preparation notebook
(``data_type``, ``missing_messages_list``, ...), so a user can look them up there.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple, Protocol

from core.tokens import REPLY_PRIMING, TOKENS_PER_MESSAGE, TOKENS_PER_NAME, Tokenizer


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
    MISSING_SYSTEM_MESSAGE = "missing_system_message"
    MISSING_USER_MESSAGE = "missing_user_message"
    # Both formats.
    UNRECOGNIZED_KEY = "unrecognized_key"
    TOO_MANY_TOKENS = "too_many_tokens"
    # Prompt/completion examples: the legacy prepare_data tool's checks.
    MISSING_KEY = "missing_key"
    EMPTY_COMPLETION = "empty_completion"
    COMPLETION_LEADING_SPACE = "completion_missing_leading_space"
    # Whole-file findings (computed by the validator, listed here so codes stay unique).
    EMPTY_FILE = "empty_file"
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


def _text_of(content: Any) -> str:
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


def examine_chat(
    obj: Any, counter: TokenCounter, max_tokens: int, *, count_all: bool = True
) -> ExampleFacts:
    """Check one chat example (``{"messages": [...]}``) and count its tokens.

    Tokens are counted as :meth:`core.tokens.Tokenizer.count_messages` does (framing
    included) so the limit check matches what the training run is billed for. With
    ``count_all=False`` they are only counted when the example could be over the limit:
    a token covers at least one UTF-8 byte and a character at most four, so an example
    of fewer than ``max_tokens / 4`` characters cannot be; ``tokens`` is then -1. The
    fingerprint is the hash of the (role, text) pairs: two lines with the same
    conversation are duplicates whatever their key order or weights.
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
    if len(obj) > 1:
        extra = [key for key in obj if key not in CHAT_KEYS]
        if extra:
            findings.append(
                Finding(Code.UNRECOGNIZED_KEY, f"unknown keys {', '.join(map(repr, extra))}")
            )
    has_system = has_user = has_assistant = False
    label = None
    parts: list[str] = []  # role, text, role, text, ...
    names: list[str] | None = None
    size = 0
    for index, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            findings.append(
                Finding(
                    Code.MESSAGE_DATA_TYPE,
                    f"message {index} is {_type_name(message)}, expected an object",
                )
            )
            continue
        if len(message) != 2 or "role" not in message or "content" not in message:
            _message_problems(index, message, findings)
        role = message.get("role")
        content = message.get("content")
        if type(content) is str:
            text = content
            if not text and not (role == "assistant" and any(message.get(k) for k in _TOOL_KEYS)):
                findings.append(Finding(Code.MISSING_CONTENT, f"message {index} has empty content"))
        elif content is None:
            text = ""
            if not any(message.get(k) for k in _TOOL_KEYS) and "content" in message:
                findings.append(Finding(Code.MISSING_CONTENT, f"message {index} has null content"))
        elif isinstance(content, list) and role != "assistant" and _parts_ok(content):
            text = _text_of(content)
        else:
            text = _text_of(content)
            findings.append(
                Finding(
                    Code.CONTENT_WRONG_TYPE,
                    f"message {index} content is {_type_name(content)}, expected a string",
                )
            )
        if role == "assistant":
            has_assistant = True
            label = text
        elif role == "user":
            has_user = True
        elif role == "system":
            has_system = True
        elif not isinstance(role, str) or role not in ROLES:
            findings.append(Finding(Code.UNRECOGNIZED_ROLE, f"message {index} has role {role!r}"))
        role_text = role if type(role) is str else str(message.get("role", ""))
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
    if not has_assistant:
        findings.append(
            Finding(Code.EXAMPLE_MISSING_ASSISTANT_MESSAGE, "no assistant message to learn from")
        )
    else:
        if not has_system:
            findings.append(Finding(Code.MISSING_SYSTEM_MESSAGE, "no system message"))
        if not has_user:
            findings.append(Finding(Code.MISSING_USER_MESSAGE, "no user message"))
    bound = REPLY_PRIMING + len(parts) * (TOKENS_PER_MESSAGE + TOKENS_PER_NAME) + 4 * size
    tokens, trained = -1, 0
    if count_all or bound > max_tokens:
        tokens, trained = _count_chat(parts, names, counter)
        if tokens > max_tokens:
            findings.append(
                Finding(
                    Code.TOO_MANY_TOKENS, f"{tokens:,} tokens, over the limit of {max_tokens:,}"
                )
            )
    return ExampleFacts(findings, tokens, trained, hash(tuple(parts)), label)


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


def check_chat_example(obj: Any, counter: TokenCounter, max_tokens: int) -> list[Finding]:
    """Findings for one chat example; an empty list means OpenAI accepts it as is.

    ``obj`` is the parsed JSON line, ``counter`` a :class:`core.tokens.Tokenizer` (or a
    :class:`CachedCounter`) for the model to be trained, ``max_tokens`` the per-example
    limit (``settings.training.max_example_tokens``). Errors make the file rejected;
    warnings (no system/user message) make training worse. Pure: no I/O, no state.
    """
    return examine_chat(obj, counter, max_tokens).findings


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
        missing = [key for key in COMPLETION_KEYS if key not in obj]
        if missing:
            findings.append(Finding(Code.MISSING_KEY, f"no {' or '.join(missing)}"))
            return ExampleFacts(findings, -1, 0, None, None)
        extra = [key for key in obj if key not in COMPLETION_KEYS]
        if extra:
            findings.append(
                Finding(Code.UNRECOGNIZED_KEY, f"extra keys/columns {', '.join(map(repr, extra))}")
            )
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
            message["content"] = _text_of(content)
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

    Returns ``{"prompt", "completion"}`` with strings (extra keys removed when that fix
    is accepted, numbers turned into text, a leading space added), or None to drop it.
    """
    if not isinstance(obj, dict) or any(key not in obj for key in COMPLETION_KEYS):
        return None
    if Code.UNRECOGNIZED_KEY not in fixes and any(key not in COMPLETION_KEYS for key in obj):
        return dict(obj)
    prompt, completion = obj["prompt"], obj["completion"]
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
