"""The Slack emulator, exercised through the real slack_sdk.WebClient."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from tests.emulators.slack import Call, SlackEmulator

TS_RE = re.compile(r"^\d{10}\.\d{6}$")

FEEDBACK_BLOCKS = [
    {
        "type": "context_actions",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": "feedback",
                "positive_button": {
                    "text": {"type": "plain_text", "text": "Good"},
                    "accessibility_label": "Good answer",
                    "value": "up",
                },
                "negative_button": {
                    "text": {"type": "plain_text", "text": "Bad"},
                    "accessibility_label": "Bad answer",
                    "value": "down",
                },
            }
        ],
    }
]


@pytest.fixture
def client(slack_api: SlackEmulator) -> WebClient:
    return WebClient(token=slack_api.bot_token, base_url=slack_api.url, timeout=5)


def _error(exc: pytest.ExceptionInfo[SlackApiError]) -> str:
    return exc.value.response["error"]


def test_url_and_auth_test(slack_api: SlackEmulator, client: WebClient) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/", slack_api.url)
    resp = client.auth_test()
    assert resp["ok"] is True
    assert resp["user_id"] == "UBOT"
    assert resp["bot_id"] == "BBOT"
    assert resp["team_id"] == "T1"
    assert resp["url"].startswith("https://")
    assert slack_api.calls("auth.test")[0].args == {}


def test_wrong_or_missing_token_is_refused(slack_api: SlackEmulator) -> None:
    bad = WebClient(token="xoxb-wrong", base_url=slack_api.url)
    with pytest.raises(SlackApiError) as exc:
        bad.chat_postMessage(channel="C1", text="hi")
    assert _error(exc) == "invalid_auth"
    with pytest.raises(SlackApiError) as exc:
        WebClient(base_url=slack_api.url).auth_test()
    assert _error(exc) == "not_authed"
    assert slack_api.messages("C1") == []
    assert [c.error for c in slack_api.calls()] == ["invalid_auth", "not_authed"]


def test_post_message_stores_bot_message_with_increasing_ts(
    slack_api: SlackEmulator, client: WebClient
) -> None:
    first = client.chat_postMessage(channel="C1", text="hello")
    second = client.chat_postMessage(channel="C1", text="again", blocks=FEEDBACK_BLOCKS)
    assert first["channel"] == "C1"
    assert TS_RE.match(first["ts"]) and TS_RE.match(second["ts"])
    assert float(second["ts"]) > float(first["ts"])
    assert first["message"]["text"] == "hello"
    stored = slack_api.messages("C1")
    assert [m["text"] for m in stored] == ["hello", "again"]
    assert all(m["user"] == "UBOT" and m["bot_id"] == "BBOT" for m in stored)
    assert stored[1]["blocks"] == FEEDBACK_BLOCKS
    call = slack_api.calls("chat.postMessage")[1]
    assert isinstance(call, Call) and call.args["blocks"] == FEEDBACK_BLOCKS and call.error is None

    history = client.conversations_history(channel="C1")
    assert [m["text"] for m in history["messages"]] == ["again", "hello"]  # newest first


def test_form_encoded_and_multipart_args_are_decoded(
    slack_api: SlackEmulator, client: WebClient
) -> None:
    # params= is sent form-urlencoded, data= as multipart; blocks arrive as JSON strings.
    client.api_call(
        "chat.postMessage",
        params={"channel": "C1", "text": "form", "blocks": json.dumps(FEEDBACK_BLOCKS)},
    )
    client.api_call("chat.postMessage", data={"channel": "C1", "text": "multipart"})
    stored = slack_api.messages("C1")
    assert [m["text"] for m in stored] == ["form", "multipart"]
    assert stored[0]["blocks"] == FEEDBACK_BLOCKS
    with pytest.raises(SlackApiError) as exc, pytest.warns(UserWarning):
        client.chat_postMessage(channel="C1")
    assert _error(exc) == "no_text"


def test_thread_replies_and_paging(slack_api: SlackEmulator, client: WebClient) -> None:
    parent = slack_api.add_message("C1", "question", "U1")
    replies = [slack_api.add_message("C1", f"r{i}", "U2", thread_ts=parent) for i in range(4)]
    bot = client.chat_postMessage(channel="C1", text="answer", thread_ts=parent)["ts"]
    lone = slack_api.add_message("C1", "lonely", "U3")

    pages, cursor = [], None
    while True:
        resp = client.conversations_replies(channel="C1", ts=parent, limit=2, cursor=cursor)
        pages.append([m["ts"] for m in resp["messages"]])
        cursor = resp["response_metadata"]["next_cursor"]
        assert resp["has_more"] is bool(cursor)
        if not cursor:
            break
    assert pages == [[parent, replies[0]], [replies[1], replies[2]], [replies[3], bot]]

    # slack_sdk's own cursor iteration works too
    seen = [
        m["text"]
        for page in client.conversations_replies(channel="C1", ts=parent, limit=4)
        for m in page["messages"]
    ]
    assert seen == ["question", "r0", "r1", "r2", "r3", "answer"]

    thread = slack_api.messages("C1", thread_ts=parent)
    assert thread[0]["reply_count"] == 5 and thread[0]["latest_reply"] == bot
    assert thread[-1]["parent_user_id"] == "U1"
    assert [m["text"] for m in slack_api.messages("C1")] == ["question", "lonely"]

    # a reply's ts gives the whole thread; a top-level message without replies gives itself
    assert len(client.conversations_replies(channel="C1", ts=replies[2])["messages"]) == 6
    assert [m["ts"] for m in client.conversations_replies(channel="C1", ts=lone)["messages"]] == [
        lone
    ]
    with pytest.raises(SlackApiError) as exc:
        client.conversations_replies(channel="C1", ts="1600000000.000001")
    assert _error(exc) == "thread_not_found"


def test_chat_stream_append_and_stop_with_blocks(
    slack_api: SlackEmulator, client: WebClient
) -> None:
    parent = slack_api.add_message("D1", "tell me", "U1")
    stream = client.chat_stream(channel="D1", thread_ts=parent, buffer_size=8)
    for piece in ["Hello", " there,", " this is", " streamed."]:
        stream.append(markdown_text=piece)
    stop = stream.stop(
        blocks=FEEDBACK_BLOCKS, metadata={"event_type": "answer", "event_payload": {"id": 1}}
    )
    assert stop["ok"] is True
    ts = stream.ts
    assert ts is not None

    msg = slack_api.message("D1", ts)
    assert msg is not None
    assert msg["text"] == "Hello there, this is streamed."
    assert msg["thread_ts"] == parent and msg["user"] == "UBOT"
    assert msg["blocks"] == FEEDBACK_BLOCKS
    assert msg["metadata"]["event_type"] == "answer"
    assert slack_api.stream_state("D1", ts) == "stopped"
    assert "".join(c["text"] for c in slack_api.stream_chunks("D1", ts)) == msg["text"]
    methods = [c.method for c in slack_api.calls()]
    assert methods[0] == "chat.startStream" and methods[-1] == "chat.stopStream"
    assert "chat.appendStream" in methods
    assert slack_api.calls("chat.startStream")[0].args["chunks"][0]["type"] == "markdown_text"

    with pytest.raises(SlackApiError) as exc:
        client.chat_appendStream(channel="D1", ts=ts, markdown_text="late")
    assert _error(exc) == "message_not_in_streaming_state"


def test_stream_ended_by_slack_and_refused_streaming(
    slack_api: SlackEmulator, client: WebClient
) -> None:
    parent = slack_api.add_message("D1", "q", "U1")
    start = client.chat_startStream(channel="D1", thread_ts=parent, markdown_text="Partial")
    slack_api.end_stream("D1", start["ts"])
    with pytest.raises(SlackApiError) as exc:
        client.chat_appendStream(channel="D1", ts=start["ts"], markdown_text=" more")
    assert _error(exc) == "message_not_in_streaming_state"
    # the fallback path: chat.update of the same message
    client.chat_update(channel="D1", ts=start["ts"], text="Partial answer, finished")
    assert slack_api.message("D1", start["ts"])["text"] == "Partial answer, finished"

    slack_api.refuse_streaming = True
    with pytest.raises(SlackApiError) as exc:
        client.chat_startStream(channel="D1", thread_ts=parent)
    assert _error(exc) == "feature_not_enabled"
    with pytest.raises(SlackApiError) as exc:
        client.chat_appendStream(channel="D1", ts="1700000009.000100", markdown_text="x")
    assert _error(exc) == "message_not_in_streaming_state"


def test_rate_limit_retry_after_is_honoured_by_retry_handler(slack_api: SlackEmulator) -> None:
    slack_api.fail_next("chat.postMessage", retry_after=0)
    plain = WebClient(token="xoxb-test", base_url=slack_api.url)
    with pytest.raises(SlackApiError) as exc:
        plain.chat_postMessage(channel="C1", text="x")
    assert exc.value.response.status_code == 429
    assert exc.value.response.headers["Retry-After"] == "0"
    assert _error(exc) == "ratelimited"

    slack_api.fail_next("chat.postMessage", retry_after=0)
    retrying = WebClient(
        token="xoxb-test",
        base_url=slack_api.url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)],
    )
    resp = retrying.chat_postMessage(channel="C1", text="after retry")
    assert resp["ok"] is True
    calls = slack_api.calls("chat.postMessage")
    assert [c.error for c in calls] == ["ratelimited", "ratelimited", None]
    assert [m["text"] for m in slack_api.messages("C1")] == ["after retry"]


def test_fail_next_with_status_200_and_times(slack_api: SlackEmulator, client: WebClient) -> None:
    slack_api.fail_next("chat.update", error="msg_too_long", status=200, times=2)
    ts = client.chat_postMessage(channel="C1", text="a")["ts"]
    for _ in range(2):
        with pytest.raises(SlackApiError) as exc:
            client.chat_update(channel="C1", ts=ts, text="b")
        assert _error(exc) == "msg_too_long" and exc.value.response.status_code == 200
    assert client.chat_update(channel="C1", ts=ts, text="b")["message"]["text"] == "b"


def test_files_upload_v2(slack_api: SlackEmulator, client: WebClient) -> None:
    parent = slack_api.add_message("C1", "export please", "U1")
    resp = client.files_upload_v2(
        content=b"step,loss\n1,0.5\n",
        filename="metrics.csv",
        title="Metrics",
        channel="C1",
        thread_ts=parent,
        initial_comment="here you go",
    )
    assert resp["file"]["title"] == "Metrics"
    [uploaded] = slack_api.uploaded_files()
    assert uploaded["content"] == b"step,loss\n1,0.5\n"
    assert uploaded["title"] == "Metrics" and uploaded["filename"] == "metrics.csv"
    assert uploaded["channel_id"] == "C1" and uploaded["thread_ts"] == parent
    thread = slack_api.messages("C1", thread_ts=parent)
    assert thread[-1]["files"][0]["id"] == uploaded["id"]
    assert thread[-1]["text"] == "here you go"
    assert [c.method for c in slack_api.calls()] == [
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]


def test_response_url_records_posts(slack_api: SlackEmulator) -> None:
    url = slack_api.new_response_url()
    assert url.startswith(f"http://127.0.0.1:{slack_api.port}/")

    def post(body: dict) -> int:
        req = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    assert post({"text": "working on it", "response_type": "ephemeral"}) == 200
    assert post({"text": "done", "replace_original": True}) == 200
    assert slack_api.responses() == [
        {"text": "working on it", "response_type": "ephemeral"},
        {"text": "done", "replace_original": True},
    ]
    assert [post({"n": i}) for i in range(4)] == [200, 200, 200, 404]  # 5 uses, like Slack


def test_misc_methods(slack_api: SlackEmulator, client: WebClient) -> None:
    slack_api.set_user("UADMIN", is_admin=True, real_name="Ada Admin")
    assert client.users_info(user="UADMIN")["user"]["is_admin"] is True
    assert client.users_info(user="U2")["user"]["is_admin"] is False

    assert client.conversations_info(channel="D9")["channel"]["is_im"] is True
    assert client.conversations_info(channel="C9")["channel"]["is_channel"] is True

    ts = slack_api.add_message("C1", "nice", "U1")
    client.reactions_add(channel="C1", timestamp=ts, name="eyes")
    assert slack_api.message("C1", ts)["reactions"] == [
        {"name": "eyes", "users": ["UBOT"], "count": 1}
    ]
    with pytest.raises(SlackApiError) as exc:
        client.reactions_add(channel="C1", timestamp=ts, name="eyes")
    assert _error(exc) == "already_reacted"

    eph = client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert TS_RE.match(eph["message_ts"])
    assert slack_api.ephemerals()[0]["text"] == "only you"
    assert all(m["text"] != "only you" for m in slack_api.messages("C1"))

    client.assistant_threads_setStatus(channel_id="D1", thread_ts=ts, status="is thinking...")
    client.assistant_threads_setSuggestedPrompts(
        channel_id="D1", thread_ts=ts, prompts=[{"title": "a", "message": "b"}]
    )
    client.assistant_threads_setTitle(channel_id="D1", thread_ts=ts, title="Chat")
    assert slack_api.calls("assistant.threads.setStatus")[0].args["status"] == "is thinking..."
    assert (
        slack_api.calls("assistant.threads.setSuggestedPrompts")[0].args["prompts"][0]["title"]
        == "a"
    )

    modal = {"type": "modal", "title": {"type": "plain_text", "text": "Hi"}, "blocks": []}
    opened = client.views_open(trigger_id="123.456", view=modal)["view"]
    assert opened["id"].startswith("V")
    updated = client.views_update(view_id=opened["id"], view={**modal, "private_metadata": "x"})[
        "view"
    ]
    assert updated["id"] == opened["id"] and updated["private_metadata"] == "x"
    home = client.views_publish(user_id="U1", view={"type": "home", "blocks": []})["view"]
    assert home["type"] == "home"
    assert len(slack_api.views()) == 2

    own = client.chat_postMessage(channel="C1", text="oops")["ts"]
    client.chat_delete(channel="C1", ts=own)
    assert slack_api.message("C1", own) is None
    with pytest.raises(SlackApiError) as exc:
        client.chat_delete(channel="C1", ts=ts)  # a user's message
    assert _error(exc) == "cant_delete_message"

    with pytest.raises(SlackApiError) as exc:
        client.api_call("no.suchMethod")
    assert _error(exc) == "unknown_method"


def test_wait_for_latency_and_reset(slack_api: SlackEmulator, client: WebClient) -> None:
    slack_api.latency_s = 0.2
    t = threading.Thread(target=client.chat_postMessage, kwargs={"channel": "C1", "text": "bg"})
    started = time.monotonic()
    t.start()
    calls = slack_api.wait_for("chat.postMessage", timeout=2)
    assert calls[0].args["text"] == "bg"
    t.join()
    assert time.monotonic() - started >= 0.2
    slack_api.latency_s = 0.0

    with pytest.raises(AssertionError, match="chat.postMessage"):
        slack_api.wait_for("chat.update", timeout=0.05)

    slack_api.fail_next("auth.test")
    slack_api.refuse_streaming = True
    slack_api.reset()
    assert slack_api.calls() == [] and slack_api.messages("C1") == []
    assert client.auth_test()["ok"] is True  # the fault is gone
    assert slack_api.refuse_streaming is False


def test_emulators_are_independent_and_stop_cleanly() -> None:
    with SlackEmulator(bot_token="xoxb-a") as a, SlackEmulator(bot_token="xoxb-b") as b:
        assert a.port != b.port
        WebClient(token="xoxb-a", base_url=a.url).chat_postMessage(channel="C1", text="to a")
        assert b.messages("C1") == [] and len(a.messages("C1")) == 1
    started = time.monotonic()
    a.stop()  # idempotent
    assert time.monotonic() - started < 1
    assert a.server_errors() == [] and b.server_errors() == []
