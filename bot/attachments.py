"""Files and images people attach to their questions, read into the prompt.

Documents (text, Markdown, CSV, JSON, code, and PDF through pypdf) become text inside
the question's own message, cut to ``files.max_prompt_tokens`` with a note when long, so
the stored transcript, forget-me and PII scrubbing see them like any text. Images go to
vision models as ``image_url`` parts holding ``data:`` URLs (base64), the form OpenAI's
chat and vision fine-tuning accept: Slack's private URLs never leave for the provider.
Whatever is not read (too big, unsupported, no vision, download failed) yields a notice
for the asker; the question is answered anyway.

Downloads use the bot token (scope ``files:read``): ``files.info`` gives
``url_private_download``, fetched with ``Authorization: Bearer``. The token is only ever
sent to the Slack API's own host or its subdomains (files.slack.com).
"""

from __future__ import annotations

import base64
import io
import logging
import mimetypes
import urllib.request
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import urlparse

from pypdf import PdfReader
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import messages
from core.conversation import Turn
from core.errors import TuneloopError
from core.settings import FileSettings, Settings
from core.tokens import Tokenizer

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 20.0

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
TEXT_MIMETYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/x-yaml",
        "application/yaml",
        "application/javascript",
        "application/x-sh",
        "application/sql",
        "application/toml",
    }
)
# Slack's ``filetype`` values (and file extensions) of code and text snippets.
TEXT_FILETYPES = frozenset(
    [
        "text",
        "markdown",
        "md",
        "csv",
        "tsv",
        "json",
        "yaml",
        "yml",
        "xml",
        "html",
        "css",
        "log",
        "ini",
        "toml",
        "sql",
        "diff",
        "patch",
        "python",
        "py",
        "javascript",
        "js",
        "typescript",
        "ts",
        "jsx",
        "tsx",
        "java",
        "kotlin",
        "kt",
        "scala",
        "go",
        "rust",
        "rs",
        "c",
        "cpp",
        "h",
        "hpp",
        "csharp",
        "cs",
        "ruby",
        "rb",
        "php",
        "perl",
        "pl",
        "shell",
        "sh",
        "bash",
        "zsh",
        "powershell",
        "ps1",
        "swift",
        "r",
        "lua",
        "dart",
        "haskell",
        "hs",
        "elixir",
        "ex",
        "erlang",
        "clojure",
        "groovy",
        "dockerfile",
        "makefile",
        "tex",
        "rst",
    ]
)


class FileKind(str, Enum):
    """How an attached file is given to the model."""

    TEXT = "text"
    PDF = "pdf"
    IMAGE = "image"
    UNSUPPORTED = "unsupported"


class DownloadError(TuneloopError):
    """A file could not be fetched from Slack (refused, too big, or not Slack's host)."""


@dataclass(frozen=True)
class Document:
    """An attached document's text, as read."""

    name: str
    text: str


@dataclass
class Attachments:
    """What the attached files added to one question."""

    documents: list[Document] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (name, data URL)
    notices: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        """Whether anything was read for the model."""
        return bool(self.documents or self.images)


def file_kind(info: dict[str, Any]) -> FileKind:
    """Text, PDF, image or unsupported, from Slack's mimetype / filetype / file name."""
    mimetype = str(info.get("mimetype") or "").split(";")[0].strip().lower()
    name = str(info.get("name") or "")
    if not mimetype:
        mimetype = (mimetypes.guess_type(name)[0] or "").lower()
    filetype = str(info.get("filetype") or "").lower()
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if mimetype in IMAGE_TYPES:
        return FileKind.IMAGE
    if mimetype == "application/pdf" or filetype == "pdf":
        return FileKind.PDF
    if mimetype.startswith("text/") or mimetype in TEXT_MIMETYPES:
        return FileKind.TEXT
    if filetype in TEXT_FILETYPES or extension in TEXT_FILETYPES:
        return FileKind.TEXT
    return FileKind.UNSUPPORTED


def reads_images(model: str, vision_models: tuple[str, ...]) -> bool:
    """Whether ``model`` (or the base of a ``ft:`` fine-tune) is a vision model."""
    base = model.split(":", 2)[1] if model.startswith("ft:") and model.count(":") else model
    return any(base.startswith(prefix) for prefix in vision_models)


def _human_size(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{max(1, size // 1000)} kB"


def _may_receive_token(url: str, api_url: str) -> bool:
    """Only Slack's own hosts get the bot token (the API host or its subdomains)."""
    host = (urlparse(url).hostname or "").lower()
    api_host = (urlparse(api_url).hostname or "").lower()
    return bool(host) and (host == api_host or host.endswith("." + api_host))


def download(client: WebClient, url: str, max_bytes: int) -> bytes:
    """Fetch a private Slack file with the bot token; at most ``max_bytes``."""
    if not _may_receive_token(url, client.base_url):
        raise DownloadError(f"{url} is not a Slack file URL")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {client.token}"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
            data = response.read(max_bytes + 1)
            if "text/html" in (response.headers.get("Content-Type") or ""):
                # Slack answers a login page, not the file, when the token lacks files:read.
                raise DownloadError("Slack answered a web page instead of the file")
    except OSError as exc:  # URLError, timeouts, connection resets
        raise DownloadError(str(exc)) from exc
    if len(data) > max_bytes:
        raise DownloadError(f"more than {max_bytes} bytes")
    return data


class UnreadableFile(TuneloopError):
    """A downloaded file whose content could not be read (a damaged PDF)."""


def pdf_text(data: bytes) -> str:
    """The text of a PDF's pages, separated by blank lines."""
    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds on damaged files
        raise UnreadableFile(f"not a readable PDF: {exc}") from exc
    return "\n\n".join(pages).strip()


def read(
    client: WebClient, file_ids: tuple[str, ...] | list[str], settings: FileSettings, model: str
) -> Attachments:
    """Read the files attached to a question: documents as text, images as data URLs
    (vision models only), a notice for each file left out."""
    out = Attachments()
    if not file_ids:
        return out
    if not settings.enabled:
        out.notices.append(messages.FILE_NOTICE_OFF)
        return out
    vision = reads_images(model, settings.vision_models)
    for file_id in file_ids[: settings.max_files]:
        _read_one(client, file_id, settings, vision, out)
    skipped = len(file_ids) - settings.max_files
    if skipped > 0:
        out.notices.append(
            messages.FILE_NOTICE_TOO_MANY.format(limit=settings.max_files, skipped=skipped)
        )
    return out


def _read_one(
    client: WebClient, file_id: str, settings: FileSettings, vision: bool, out: Attachments
) -> None:
    try:
        info = client.files_info(file=file_id)["file"]
    except SlackApiError as exc:
        logger.warning("files.info %s refused: %s", file_id, exc.response.get("error"))
        out.notices.append(messages.FILE_NOTICE_UNREADABLE.format(name=file_id))
        return
    except (SlackClientError, OSError):
        logger.exception("files.info %s failed", file_id)
        out.notices.append(messages.FILE_NOTICE_UNREADABLE.format(name=file_id))
        return
    name = str(info.get("name") or info.get("title") or file_id)
    kind = file_kind(info)
    size = int(info.get("size") or 0)
    if kind is FileKind.UNSUPPORTED:
        label = info.get("pretty_type") or info.get("filetype") or info.get("mimetype") or "?"
        out.notices.append(messages.FILE_NOTICE_UNSUPPORTED.format(name=name, kind=label))
        return
    if kind is FileKind.IMAGE and not vision:
        out.notices.append(messages.FILE_NOTICE_NO_VISION.format(name=name))
        return
    limit = settings.max_image_bytes if kind is FileKind.IMAGE else settings.max_file_bytes
    if size > limit:
        out.notices.append(
            messages.FILE_NOTICE_TOO_BIG.format(
                name=name, size=_human_size(size), limit=_human_size(limit)
            )
        )
        return
    url = info.get("url_private_download") or info.get("url_private")
    try:
        data = download(client, str(url or ""), limit)
        if kind is FileKind.IMAGE:
            mimetype = str(info.get("mimetype") or "image/png")
            encoded = base64.b64encode(data).decode("ascii")
            out.images.append((name, f"data:{mimetype};base64,{encoded}"))
        elif kind is FileKind.PDF:
            out.documents.append(Document(name, pdf_text(data)))
        else:
            out.documents.append(Document(name, data.decode("utf-8", errors="replace")))
    except (DownloadError, UnreadableFile) as exc:
        logger.warning("reading file %s failed: %s", file_id, exc)
        out.notices.append(messages.FILE_NOTICE_UNREADABLE.format(name=name))


def budget(settings: Settings) -> int:
    """Tokens the documents of one question may take: ``files.max_prompt_tokens``, and
    never more than half the context budget, so the question and history keep room."""
    return min(settings.files.max_prompt_tokens, settings.model.context_token_budget // 2)


def _cut_to_tokens(text: str, tokens: int, counter: Tokenizer) -> str:
    """The longest prefix of ``text`` with at most ``tokens`` tokens (cut at a line
    break when one is near)."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if counter.count(text[:mid]) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    line = text.rfind("\n", int(lo * 0.9), lo)
    return text[: line if line > 0 else lo]


def question_with_documents(
    turns: list[Turn], found: Attachments, budget_tokens: int, counter: Tokenizer
) -> list[Turn]:
    """The conversation with the documents appended to its last turn (the question),
    within ``budget_tokens``; each cut is noted in the prompt and told to the asker."""
    if not found.any or not turns:
        return turns
    question = turns[-1].content.strip() or messages.FILES_ONLY_QUESTION
    parts = [question]
    left = budget_tokens
    for doc in found.documents:
        header = messages.FILE_HEADER.format(name=doc.name)
        room = left - counter.count(header) - 8
        tokens = counter.count(doc.text)
        if room <= 0:
            found.notices.append(messages.FILE_NOTICE_NO_ROOM.format(name=doc.name))
            continue
        text = doc.text
        if tokens > room:
            kept_budget = room - counter.count(
                messages.FILE_CUT.format(name=doc.name, kept=0, tokens=tokens)
            )
            text = _cut_to_tokens(doc.text, max(kept_budget, 0), counter)
            kept = counter.count(text)
            text += "\n" + messages.FILE_CUT.format(name=doc.name, kept=kept, tokens=tokens)
            found.notices.append(
                messages.FILE_NOTICE_CUT.format(name=doc.name, kept=kept, tokens=tokens)
            )
        parts.append(f"{header}\n{text}")
        left -= counter.count(parts[-1]) + 2
    return [*turns[:-1], Turn(turns[-1].role, "\n\n".join(parts))]


def with_images(prompt: list[dict[str, Any]], found: Attachments) -> list[dict[str, Any]]:
    """The prompt with the images added to its last user message as content parts."""
    if not found.images or not prompt or prompt[-1].get("role") != "user":
        return prompt
    last = prompt[-1]
    parts: list[dict[str, Any]] = [{"type": "text", "text": str(last.get("content") or "")}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for _, url in found.images]
    return [*prompt[:-1], {**last, "content": parts}]
