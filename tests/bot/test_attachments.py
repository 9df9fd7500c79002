"""Files and images attached to questions, through the real bot and on their own."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image
from slack_sdk import WebClient

from bot import attachments, messages
from bot.attachments import Attachments, Document, FileKind
from core.conversation import Turn
from core.store import answer_id_for
from core.tokens import counter_for_model
from tests import payloads
from tests.bot.conftest import Bot
from tests.emulators.slack import SlackEmulator

CODE = "def add(a, b):\n    return a + b  # the sum\n"


def _pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` (Helvetica), written by hand."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
        % (
            len(objects) + 1,
            xref,
        )
    )
    return out.getvalue()


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (2, 2), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def _ask_with_files(bot: Bot, text: str, files: list[dict], channel: str = "D1") -> dict:
    """A person posts ``text`` with ``files`` in a DM; the bot answers; returns the event."""
    ts = bot.slack.add_message(channel, text, "U1", files=files, subtype="file_share")
    event = payloads.message(
        text, channel=channel, channel_type="im", ts=ts, files=files, subtype="file_share"
    )
    bot.event(event)
    bot.run_worker()
    return event


def _thread_texts(bot: Bot, event: dict) -> list[str]:
    msgs = bot.slack.messages(event["channel"], event["ts"])
    return [m["text"] for m in msgs if m.get("user") == "UBOT"]


def _last_user_content(bot: Bot) -> object:
    return bot.openai.completions()[-1]["messages"][-1]["content"]


# --- through the bot -----------------------------------------------------------------
def test_a_code_file_and_a_pdf_are_read_into_the_question_and_the_transcript(bot: Bot) -> None:
    code = bot.slack.add_file("calc.py", CODE.encode(), mimetype="text/x-python")
    pdf = bot.slack.add_file("policy.pdf", _pdf("Refunds within 30 days"))
    event = _ask_with_files(bot, "Is this code right, and what does the policy say?", [code, pdf])

    content = _last_user_content(bot)
    assert isinstance(content, str)
    assert content.startswith("Is this code right, and what does the policy say?")
    assert "[Attached file: calc.py]\n" + CODE.strip() in content
    assert "[Attached file: policy.pdf]" in content and "Refunds within 30 days" in content
    # Downloaded with the bot token, after files.info.
    assert [authorized for _, authorized in bot.slack.downloads()] == [True, True]
    assert len(bot.slack.calls("files.info")) == 2
    # The stored transcript holds the file text, so forget-me, PII scrubbing and training
    # sets see it like any other text.
    stored = bot.services.store.get_answer(answer_id_for("D1", event["ts"]))
    assert stored is not None and "Refunds within 30 days" in stored.messages[-1]["content"]
    assert _thread_texts(bot, event) == [stored.answer], "no notice: everything was read"


def test_an_image_goes_to_a_vision_model_as_a_data_url_never_as_a_slack_url(bot: Bot) -> None:
    png = _png()
    image = bot.slack.add_file("chart.png", png)
    event = _ask_with_files(bot, "What does this chart show?", [image])

    sent = bot.openai.completions()[-1]
    content = sent["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "What does this chart show?"}
    expected = "data:image/png;base64," + base64.b64encode(png).decode()
    assert content[1] == {"type": "image_url", "image_url": {"url": expected}}
    assert "files-pri" not in json.dumps(sent), "Slack's private URLs never reach the provider"
    stored = bot.services.store.get_answer(answer_id_for("D1", event["ts"]))
    assert stored is not None and stored.messages[-1]["content"][1]["image_url"]["url"] == expected


@pytest.fixture
def bot_settings() -> dict:
    return {"files": {"max_file_bytes": 2000, "max_prompt_tokens": 300}}


def test_files_that_cannot_be_read_get_a_clear_reply_and_the_question_is_answered(
    bot: Bot,
) -> None:
    big = bot.slack.add_file("dump.csv", b"a,b\n" * 1000)
    archive = bot.slack.add_file("logs.zip", b"PK\x03\x04", mimetype="application/zip")
    event = _ask_with_files(bot, "Anything odd here?", [big, archive])

    texts = _thread_texts(bot, event)
    assert len(texts) == 2
    notice, answer = texts
    assert notice.splitlines() == [
        messages.FILE_NOTICE_TOO_BIG.format(name="dump.csv", size="4 kB", limit="2 kB"),
        messages.FILE_NOTICE_UNSUPPORTED.format(name="logs.zip", kind="APPLICATION/ZIP"),
    ]
    assert answer == "Echo: Anything odd here?"
    assert bot.slack.downloads() == [], "nothing over the limit or unsupported is downloaded"


def test_a_long_document_is_cut_to_the_budget_with_a_note(bot: Bot) -> None:
    text = "\n".join(f"line {i}: the quick brown fox jumps over the lazy dog" for i in range(400))
    doc = bot.slack.add_file("notes.md", text.encode()[:1900], mimetype="text/markdown")
    event = _ask_with_files(bot, "Summarise", [doc])

    content = _last_user_content(bot)
    counter = counter_for_model(bot.settings.model.base_model)
    assert isinstance(content, str) and "[notes.md was cut:" in content
    assert counter.count(content) <= 300 + counter.count("Summarise") + 20
    notice = _thread_texts(bot, event)[0]
    assert notice.startswith("_notes.md is long: I read its first")


@pytest.mark.parametrize("bot_settings", [{"files": {"vision_models": []}}])
def test_an_image_for_a_model_without_vision_gets_a_note(bot: Bot) -> None:
    image = bot.slack.add_file("photo.jpg", _png(), mimetype="image/jpeg")
    event = _ask_with_files(bot, "Who is this?", [image])
    notice, answer = _thread_texts(bot, event)
    assert notice == messages.FILE_NOTICE_NO_VISION.format(name="photo.jpg")
    assert answer == "Echo: Who is this?"


def test_a_message_with_only_an_unreadable_file_gets_a_reply_and_no_model_call(bot: Bot) -> None:
    archive = bot.slack.add_file("x.zip", b"PK", mimetype="application/zip")
    event = _ask_with_files(bot, "", [archive])
    assert _thread_texts(bot, event) == [
        messages.FILE_NOTICE_UNSUPPORTED.format(name="x.zip", kind="APPLICATION/ZIP")
    ]
    assert bot.openai.completions() == []


def test_a_message_with_only_a_readable_file_is_answered_about_the_file(bot: Bot) -> None:
    doc = bot.slack.add_file("todo.txt", b"buy milk")
    _ask_with_files(bot, "", [doc])
    content = _last_user_content(bot)
    assert isinstance(content, str)
    assert content.startswith(messages.FILES_ONLY_QUESTION) and "buy milk" in content


def test_a_file_slack_no_longer_has_is_reported_and_the_question_answered(bot: Bot) -> None:
    event = _ask_with_files(bot, "see attached", [{"id": "F0GONE", "name": "gone.txt"}])
    notice, answer = _thread_texts(bot, event)
    assert notice == messages.FILE_NOTICE_UNREADABLE.format(name="F0GONE")
    assert answer == "Echo: see attached"


# --- on their own ------------------------------------------------------------------------
def test_the_bot_token_is_only_sent_to_slack_hosts(slack_api: SlackEmulator) -> None:
    client = WebClient(token="xoxb-test", base_url=slack_api.url)
    doc = slack_api.add_file("a.txt", b"hello")
    assert attachments.download(client, doc["url_private_download"], 100) == b"hello"
    elsewhere = doc["url_private_download"].replace("127.0.0.1", "localhost")
    with pytest.raises(attachments.DownloadError):
        attachments.download(client, elsewhere, 100)
    assert len(slack_api.downloads()) == 1, "the other host was never contacted"
    with pytest.raises(attachments.DownloadError):
        attachments.download(client, doc["url_private_download"], 3)  # over the limit
    anonymous = WebClient(token="xoxb-wrong", base_url=slack_api.url)
    with pytest.raises(attachments.DownloadError, match="web page"):
        attachments.download(anonymous, doc["url_private_download"], 100)


def test_file_kinds() -> None:
    kind = attachments.file_kind
    assert kind({"name": "a.py", "mimetype": "text/x-python"}) is FileKind.TEXT
    assert kind({"name": "data.json", "mimetype": "application/json"}) is FileKind.TEXT
    assert kind({"name": "main.go", "mimetype": "application/octet-stream"}) is FileKind.TEXT
    assert kind({"name": "x", "filetype": "markdown"}) is FileKind.TEXT
    assert kind({"name": "r.pdf", "mimetype": "application/pdf"}) is FileKind.PDF
    assert kind({"name": "p.webp", "mimetype": "image/webp"}) is FileKind.IMAGE
    assert kind({"name": "v.mp4", "mimetype": "video/mp4"}) is FileKind.UNSUPPORTED
    assert kind({"name": "s.heic", "mimetype": "image/heic"}) is FileKind.UNSUPPORTED


def test_vision_models_include_their_fine_tunes() -> None:
    prefixes = ("gpt-4o", "gpt-4.1")
    assert attachments.reads_images("gpt-4o-mini-2024-07-18", prefixes)
    assert attachments.reads_images("ft:gpt-4.1-mini-2025-04-14:org:tuneloop:abc", prefixes)
    assert not attachments.reads_images("gpt-3.5-turbo", prefixes)
    assert not attachments.reads_images("ft:gpt-3.5-turbo:org::x", prefixes)


def test_documents_share_one_budget_and_images_become_content_parts() -> None:
    counter = counter_for_model("gpt-4o-mini")
    found = Attachments(
        documents=[Document("a.txt", "alpha " * 50), Document("b.txt", "beta " * 500)],
        images=[("i.png", "data:image/png;base64,AAAA")],
    )
    turns = attachments.question_with_documents(
        [Turn("assistant", "earlier"), Turn("user", "q?")], found, 120, counter
    )
    assert turns[0] == Turn("assistant", "earlier")
    assert turns[-1].content.startswith("q?\n\n[Attached file: a.txt]\nalpha")
    assert "[b.txt was cut:" in turns[-1].content
    assert counter.count(turns[-1].content) <= 120 + counter.count("q?") + 10
    assert [n for n in found.notices if "b.txt" in n]
    prompt = attachments.with_images(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "q?"}], found
    )
    assert prompt[-1]["content"] == [
        {"type": "text", "text": "q?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]


@pytest.mark.parametrize("bot_settings", [{"slack": {"inline_answers": 0}}])
def test_a_queued_answer_reads_the_files_too(bot: Bot) -> None:
    doc = bot.slack.add_file("runbook.md", b"restart the api pod")
    _ask_with_files(bot, "what do I do?", [doc])
    content = _last_user_content(bot)
    assert isinstance(content, str) and "restart the api pod" in content


def test_a_damaged_pdf_is_reported_and_the_question_answered(bot: Bot) -> None:
    broken = bot.slack.add_file("scan.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    event = _ask_with_files(bot, "what is in the scan?", [broken])
    notice, answer = _thread_texts(bot, event)
    assert notice == messages.FILE_NOTICE_UNREADABLE.format(name="scan.pdf")
    assert answer == "Echo: what is in the scan?"
