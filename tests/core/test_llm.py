"""Reading the model's server-sent events."""

from __future__ import annotations

from core.llm import sse_data


def test_events_are_read_across_any_chunking_with_crlf_and_multibyte_text() -> None:
    body = 'data: {"a": "café"}\r\n\r\n: a comment\r\nevent: x\r\ndata: [DONE]\r\n\r\n'.encode()
    for size in (1, 2, 3, 7, len(body)):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        assert list(sse_data(chunks)) == ['{"a": "café"}', "[DONE]"], size


def test_multi_line_data_is_joined_and_a_last_event_without_blank_line_counts() -> None:
    body = [b"data: first\ndata:second\n\n", b"data: tail"]
    assert list(sse_data(body)) == ["first\nsecond", "tail"]
