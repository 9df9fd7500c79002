"""The Slack emulator, exercised through the real slack_sdk.WebClient."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
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


# --- as strict as Slack -------------------------------------------------------------
def test_unknown_arguments_are_refused_and_named(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C1", text="hi", colour="red")
    assert _error(exc) == "invalid_arguments"
    assert exc.value.response["response_metadata"]["messages"] == [
        "[ERROR] unknown argument: colour"
    ]
    with pytest.raises(SlackApiError) as exc:
        client.assistant_threads_setStatus(channel_id="D1", thread_ts="1.2", status="x", emoji="y")
    assert _error(exc) == "invalid_arguments"
    # team_id is what slack_sdk adds for a client that knows its workspace: accepted.
    team_client = WebClient(token=client.token, base_url=client.base_url, team_id="T1")
    assert team_client.chat_postMessage(channel="C1", text="hi")["ok"]


@pytest.mark.parametrize(
    "blocks",
    [
        [{"type": "sektion", "text": {"type": "mrkdwn", "text": "x"}}],
        [{"type": "section"}],
        [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}],
        [{"type": "header", "text": {"type": "mrkdwn", "text": "not plain"}}],
        [{"type": "markdown", "text": "x" * 6001}, {"type": "markdown", "text": "y" * 6000}],
        [{"type": "divider", "block_id": "a"}, {"type": "divider", "block_id": "a"}],
        [{"type": "context_actions", "elements": [{"type": "button"}]}],
        [{"type": "divider"}] * 51,
        "not a list",
    ],
)
def test_malformed_blocks_are_refused(client: WebClient, blocks: object) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C1", text="fallback", blocks=blocks)
    assert _error(exc) == "invalid_blocks"
    assert exc.value.response["errors"]


def test_valid_blocks_pass_everywhere(slack_api: SlackEmulator, client: WebClient) -> None:
    blocks = [
        {"type": "markdown", "text": "**bold** and `code`"},
        *FEEDBACK_BLOCKS,
    ]
    ts = client.chat_postMessage(channel="C1", text="answer", blocks=blocks)["ts"]
    client.chat_update(channel="C1", ts=ts, text="answer", blocks=blocks)
    client.views_publish(user_id="U1", view={"type": "home", "blocks": [{"type": "divider"}] * 60})
    assert all(c.error is None for c in slack_api.calls())


def test_markdown_text_is_limited_and_not_mixed_with_text(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C1", markdown_text="x" * 12_001)
    assert _error(exc) == "msg_too_long"
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C1", markdown_text="**a**", text="a")
    assert _error(exc) == "invalid_arguments"
    assert client.chat_postMessage(channel="C1", markdown_text="x" * 12_000)["ok"]
    parent = client.chat_postMessage(channel="D1", text="q")["ts"]
    stream = client.chat_startStream(channel="D1", thread_ts=parent)
    with pytest.raises(SlackApiError) as exc:
        client.chat_appendStream(channel="D1", ts=stream["ts"], markdown_text="y" * 12_001)
    assert _error(exc) == "msg_too_long"


def test_streams_in_channels_need_a_recipient_dms_do_not(client: WebClient) -> None:
    parent = client.chat_postMessage(channel="C1", text="q")["ts"]
    with pytest.raises(SlackApiError) as exc:
        client.chat_startStream(channel="C1", thread_ts=parent, recipient_user_id="U1")
    assert _error(exc) == "invalid_arguments"
    assert "recipient_team_id" in str(exc.value.response["response_metadata"])
    assert client.chat_startStream(
        channel="C1", thread_ts=parent, recipient_user_id="U1", recipient_team_id="T1"
    )["ok"]
    dm_parent = client.chat_postMessage(channel="D1", text="q")["ts"]
    assert client.chat_startStream(channel="D1", thread_ts=dm_parent)["ok"]


def test_shared_files_are_found_by_files_info_and_downloaded_with_the_bot_token(
    slack_api: SlackEmulator, client: WebClient
) -> None:
    shared = slack_api.add_file("notes.md", b"# Notes\n", mimetype="text/markdown")
    info = client.files_info(file=shared["id"])["file"]
    assert info["name"] == "notes.md" and info["size"] == 8
    assert info["mimetype"] == "text/markdown" and info["filetype"] == "md"
    url = info["url_private_download"]
    with urllib.request.urlopen(
        urllib.request.Request(url, headers={"Authorization": f"Bearer {slack_api.bot_token}"})
    ) as resp:
        assert resp.read() == b"# Notes\n"
        assert resp.headers["Content-Type"] == "text/markdown"
    # Without the token Slack answers its login page, not the file.
    with urllib.request.urlopen(url) as resp:
        assert resp.headers["Content-Type"].startswith("text/html")
        assert b"# Notes" not in resp.read()
    path = urllib.parse.urlparse(url).path
    assert slack_api.downloads() == [(path, True), (path, False)]
    with pytest.raises(SlackApiError) as exc:
        client.files_info(file="F0NOPE")
    assert _error(exc) == "file_not_found"


def test_uploaded_files_are_found_by_files_info(client: WebClient) -> None:
    uploaded = client.files_upload_v2(content=b"a,b\n", filename="set.csv", channel="C1")
    info = client.files_info(file=uploaded["file"]["id"])["file"]
    assert info["name"] == "set.csv" and info["size"] == 4 and info["channels"] == ["C1"]


def test_suggested_prompts_follow_the_experience(
    slack_api: SlackEmulator, client: WebClient
) -> None:
    prompts = [{"title": "Hi", "message": "Say hi"}]
    client.assistant_threads_setSuggestedPrompts(channel_id="D1", prompts=prompts, title="Try")
    assert slack_api.suggested_prompts("D1") == {"title": "Try", "prompts": prompts}
    # Agent apps: a thread_ts makes the call silently do nothing.
    client.assistant_threads_setSuggestedPrompts(channel_id="D1", thread_ts="1.1", prompts=prompts)
    assert slack_api.suggested_prompts("D1", "1.1") is None
    slack_api.experience = "assistant"
    client.assistant_threads_setSuggestedPrompts(channel_id="D1", thread_ts="1.1", prompts=prompts)
    assert slack_api.suggested_prompts("D1", "1.1") == {"title": None, "prompts": prompts}
    with pytest.raises(SlackApiError) as exc:
        client.assistant_threads_setSuggestedPrompts(channel_id="D1", prompts=prompts * 5)
    assert _error(exc) == "invalid_arguments"
    client.assistant_threads_setTitle(channel_id="D1", thread_ts="1.1", title="Keys")
    assert slack_api.thread_title("D1", "1.1") == "Keys"


def test_ai_app_events_have_slacks_shape(slack_api: SlackEmulator) -> None:
    opened = slack_api.messages_tab_opened("U7")
    assert opened["type"] == "app_home_opened" and opened["tab"] == "messages"
    assert opened["channel"] == "D7" and opened["user"] == "U7"
    changed = slack_api.app_context_changed(
        "U7", [{"type": "slack#/types/channel_id", "value": "C9", "team_id": "T1"}]
    )
    assert changed["context"]["entities"][0]["value"] == "C9"
    assert slack_api.app_context_changed("U7", [])["context"] == {}
    started = slack_api.assistant_thread_started("U7", context_channel="C9")
    thread = started["assistant_thread"]
    assert thread["context"] == {"channel_id": "C9", "team_id": "T1"}
    root = slack_api.message(thread["channel_id"], thread["thread_ts"])
    assert root is not None and root["subtype"] == "assistant_app_thread"
    switched = slack_api.assistant_thread_context_changed("U7", thread["thread_ts"], "C8")
    assert switched["assistant_thread"]["context"]["channel_id"] == "C8"


def test_malformed_stream_chunks_are_refused(client: WebClient) -> None:
    parent = client.chat_postMessage(channel="D1", text="q")["ts"]
    with pytest.raises(SlackApiError) as exc:
        client.chat_startStream(channel="D1", thread_ts=parent, chunks=[{"type": "sparkles"}])
    assert _error(exc) == "invalid_chunks"
    ts = client.chat_startStream(
        channel="D1", thread_ts=parent, chunks=[{"type": "markdown_text", "text": "ok"}]
    )["ts"]
    with pytest.raises(SlackApiError) as exc:
        client.chat_appendStream(
            channel="D1", ts=ts, chunks=[{"type": "markdown_text", "text": "x" * 12_001}]
        )
    assert _error(exc) == "invalid_chunks"
