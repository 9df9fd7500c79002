"""Long answers with code, tables and Slack formatting render well when split."""

from __future__ import annotations

import pytest

from bot.mrkdwn import to_model_text
from bot.streaming import CLOSE_RESERVE, open_fence, split_point
from tests import payloads
from tests.bot.conftest import Bot


def _code(lines: int, lang: str = "python") -> str:
    return f"```{lang}\n" + "\n".join(f"value_{i} = compute({i})" for i in range(lines)) + "\n```"


def _messages_from(text: str, limit: int) -> list[str]:
    """Cut ``text`` the way the writer does: each part closed, the next one reopened."""
    parts: list[str] = []
    while text:
        split = split_point(text, limit)
        parts.append(text[: split.cut] + split.close)
        text = split.reopen + text[split.cut :] if split.cut < len(text) else ""
    return parts


def test_a_short_text_is_not_cut() -> None:
    assert split_point("hello", 100).cut == 5


def test_prose_is_cut_at_a_paragraph_then_a_line_then_a_space() -> None:
    text = "word " * 170 + "\n\n" + "word " * 100
    split = split_point(text, 1000)
    assert text[: split.cut].endswith("\n\n") and not split.close
    no_breaks = "word " * 400
    cut = split_point(no_breaks, 1000).cut
    assert no_breaks[:cut].endswith(" ") and cut <= 1000


def test_a_code_block_that_fits_one_message_moves_whole_to_the_next() -> None:
    text = "intro " * 150 + "\n\n" + _code(30) + "\n\nafter"
    split = split_point(text, 1000)
    assert text[split.cut :].startswith("```python"), "the block is not split"
    assert not split.close and not split.reopen


def test_a_long_code_block_is_closed_and_reopened_with_its_language() -> None:
    text = "Here is the script:\n\n" + _code(400) + "\n\nThat is all."
    parts = _messages_from(text, 2000)
    assert len(parts) > 2
    for part in parts:
        assert len(part) <= 2000
        assert open_fence(part) is None, "every message closes the code blocks it opens"
    for part in parts[1:-1]:
        assert part.startswith("```python\n") and part.endswith("```")
    # Cut only between lines: every code line arrives whole.
    code_lines = [ln for p in parts for ln in p.splitlines() if ln.startswith("value_")]
    assert code_lines == [f"value_{i} = compute({i})" for i in range(400)]
    assert parts[-1].endswith("That is all.")


def test_tilde_fences_and_longer_markers_are_respected() -> None:
    assert open_fence("~~~\ncode") == "~~~"
    assert open_fence("````md\n```\nstill inside") == "````md"
    assert open_fence("````md\n```\n````") is None
    assert open_fence("text with ``` inline") is None


@pytest.fixture
def bot_settings() -> dict:
    return {"slack": {"max_message_chars": 1000, "stream_buffer_chars": 100}}


def test_a_long_streamed_answer_with_a_code_block_renders_in_every_message(bot: Bot) -> None:
    answer = (
        "| name | value |\n|---|---|\n| a | 1 |\n\n*Steps:*\n• one\n• two\n\n"
        + _code(120, "sql")
        + "\n\nDone."
    )
    bot.openai.script_answer(answer)
    event = payloads.mention("give me a big query")
    bot.event(event)
    bot.run_worker()

    mine = [m for m in bot.slack.messages("C1", event["ts"]) if m.get("user") == "UBOT"]
    assert len(mine) > 2
    for message in mine:
        assert len(message["text"]) <= 1000
        assert open_fence(message["text"]) is None, message["text"][-80:]
    assert mine[0]["text"].startswith("| name | value |")
    assert all(m["text"].startswith("```sql\n") for m in mine[1:-1])
    joined = "\n".join(m["text"] for m in mine)
    for i in range(120):
        assert f"value_{i} = compute({i})" in joined
    assert CLOSE_RESERVE < 1000


def test_slack_escapes_and_links_reach_the_model_as_plain_text() -> None:
    assert to_model_text("if a &lt; b &amp;&amp; c &gt; 0:") == "if a < b && c > 0:"
    assert to_model_text("see <https://x.io/a?b=1&amp;c=2|the docs>") == (
        "see the docs (https://x.io/a?b=1&c=2)"
    )
    assert to_model_text("<https://x.io> and <mailto:a@b.io>") == "https://x.io and a@b.io"
    assert to_model_text("raw <b>html</b> stays") == "raw <b>html</b> stays"
    assert to_model_text("in <#C123|deploys> cc <!here> <@U9>") == "in #deploys cc @here <@U9>"
    assert to_model_text("<!subteam^S1|@oncall> at <!date^1700000000^{date}|Nov 14>") == (
        "@oncall at Nov 14"
    )


def test_pasted_code_in_a_question_reaches_the_model_unescaped(bot: Bot) -> None:
    pasted = "Why does this fail?\n```\nif (a &lt; b &amp;&amp; c &gt; 0) { run(); }\n```"
    bot.ask(bot.says(pasted, mention=True))
    question = bot.openai.completions()[-1]["messages"][-1]["content"]
    assert question == "Why does this fail?\n```\nif (a < b && c > 0) { run(); }\n```"
