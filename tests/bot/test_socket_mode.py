"""The real ``python -m bot`` in Socket Mode: Slack's envelopes over a loopback WebSocket.

With ``SLACK_APP_TOKEN`` set the bot calls ``apps.connections.open`` with that token and
connects out to the URL it gets; the Slack emulator serves both and pushes envelopes the
way Slack does, recording the acknowledgements. Answers go through a real RQ worker
process (or wherever the bot produces them): the tests wait for them in Slack.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot import ids, messages
from core import keys
from core.settings import ROOT
from core.store import Store, Vote, answer_id_for
from tests import payloads
from tests.bot.conftest import ADMIN, write_config
from tests.emulators import poll_until
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator
from tests.processes import Process, bot_env, start

ANSWER_TIMEOUT_S = 30.0


@pytest.fixture
def env(
    tmp_path: Path, slack_api: SlackEmulator, openai_api: OpenAIEmulator, redis_url: str
) -> dict[str, str]:
    """The environment of the bot's processes: Socket Mode against the emulators."""
    config = write_config(tmp_path / "settings.yaml")
    return {
        **bot_env(slack_api, openai_api, redis_url, config),
        "SLACK_APP_TOKEN": slack_api.app_token,
    }


def _start_bot(env: dict[str, str], tmp_path: Path, slack: SlackEmulator) -> Process:
    """``python -m bot``, once its Socket Mode connection is up."""
    bot = start([sys.executable, "-m", "bot"], env, tmp_path / "bot.log")
    try:
        deadline = time.monotonic() + 30
        while not slack.socket_mode.connections():
            assert bot.proc.poll() is None, f"the bot exited:\n{bot.output()[-3000:]}"
            assert time.monotonic() < deadline, f"no connection:\n{bot.output()[-3000:]}"
            time.sleep(0.05)
    except BaseException:
        bot.stop(signal.SIGKILL)
        raise
    return bot


@pytest.fixture
def socket_bot(
    env: dict[str, str], tmp_path: Path, slack_api: SlackEmulator, redis_conn: Redis
) -> Iterator[Process]:
    """The bot in Socket Mode plus an RQ worker on the answers queue, as the Procfile runs them."""
    rq = str(Path(sys.executable).parent / "rq")
    worker = start(
        [rq, "worker", "-w", "rq.worker.SimpleWorker", "--url", env["REDIS_URL"], "answers"],
        env,
        tmp_path / "worker.log",
    )
    try:
        bot = _start_bot(env, tmp_path, slack_api)
        try:
            yield bot
        finally:
            bot.stop()
    finally:
        worker.stop()


def _feedback_elements(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        element
        for block in message.get("blocks") or []
        if block.get("type") == "context_actions"
        for element in block.get("elements", [])
        if element.get("type") == "feedback_buttons"
    ]


def _answers(slack: SlackEmulator, channel: str, thread_ts: str) -> list[dict[str, Any]]:
    """The bot's finished answers in a thread: its messages that carry the feedback row."""
    return [
        m
        for m in slack.messages(channel, thread_ts)
        if m.get("user") == slack.bot_user_id and m["ts"] != thread_ts and _feedback_elements(m)
    ]


def _wait_answer(slack: SlackEmulator, bot: Process, channel: str, thread_ts: str) -> dict:
    found = poll_until(lambda: _answers(slack, channel, thread_ts), ANSWER_TIMEOUT_S, 0.05)
    assert found, (
        f"no answer in {channel}/{thread_ts}; calls: {[c.method for c in slack.calls()]}\n"
        f"{bot.output()[-3000:]}"
    )
    return found[-1]


def _ask(slack: SlackEmulator, text: str, user: str = "U1") -> tuple[dict[str, Any], str]:
    """A person mentions the bot in #C1; returns the Events API body Slack sends, and its ts."""
    ts = slack.add_message("C1", f"<@UBOT> {text}", user)
    return payloads.event_envelope(payloads.mention(text, user=user, ts=ts)), ts


def test_a_mention_is_acknowledged_and_answered_in_its_thread_with_feedback_buttons(
    socket_bot: Process, slack_api: SlackEmulator
) -> None:
    body, ts = _ask(slack_api, "what is socket mode?")
    envelope_id = slack_api.socket_mode.push_event(body)

    ack = slack_api.socket_mode.wait_for_ack(envelope_id)
    assert ack.raw == {"envelope_id": envelope_id}, "an event's ack carries no payload"
    answer = _wait_answer(slack_api, socket_bot, "C1", ts)
    assert answer["thread_ts"] == ts
    assert answer["text"] == "Echo: what is socket mode?"
    buttons = _feedback_elements(answer)[0]
    assert buttons["action_id"] == ids.FEEDBACK
    assert {buttons["positive_button"]["value"], buttons["negative_button"]["value"]} == {
        "up",
        "down",
    }
    assert slack_api.socket_mode.unacknowledged() == []


def test_a_redelivered_envelope_is_acknowledged_and_gives_one_answer(
    socket_bot: Process, slack_api: SlackEmulator, openai_api: OpenAIEmulator
) -> None:
    body, ts = _ask(slack_api, "asked once, delivered twice")
    first = slack_api.socket_mode.push_event(body)
    slack_api.socket_mode.wait_for_ack(first)
    again = slack_api.socket_mode.push_event(body, retry_attempt=1, retry_reason="timeout")
    assert slack_api.socket_mode.wait_for_ack(again).raw == {"envelope_id": again}
    _wait_answer(slack_api, socket_bot, "C1", ts)
    # A later question is handled after the redelivery: once it is answered, a second
    # answer to the first question would have been started too.
    later, later_ts = _ask(slack_api, "a later question", user="U2")
    slack_api.socket_mode.wait_for_ack(slack_api.socket_mode.push_event(later))
    _wait_answer(slack_api, socket_bot, "C1", later_ts)

    bot_posts = [m for m in slack_api.messages("C1", ts) if m.get("user") == "UBOT"]
    assert [m["text"] for m in bot_posts] == ["Echo: asked once, delivered twice"]
    assert len(openai_api.requests("/v1/chat/completions")) == 2, "the model was asked twice"


def test_a_feedback_click_is_acknowledged_and_stores_the_vote(
    socket_bot: Process, slack_api: SlackEmulator, redis_conn: Redis
) -> None:
    body, ts = _ask(slack_api, "rate me")
    slack_api.socket_mode.push_event(body)
    answer = _wait_answer(slack_api, socket_bot, "C1", ts)
    # The transcript is stored just after the answer is posted; a person cannot click
    # that fast, a test can.
    recorded = keys.message_answer("C1", answer["ts"])
    assert poll_until(lambda: redis_conn.exists(recorded), ANSWER_TIMEOUT_S, 0.05)

    click = payloads.feedback_click(
        "up", user="U2", channel="C1", message_ts=answer["ts"], thread_ts=ts
    )
    envelope_id = slack_api.socket_mode.push_interactive(click)

    assert slack_api.socket_mode.wait_for_ack(envelope_id).payload is None
    ephemeral = slack_api.wait_for("chat.postEphemeral", timeout=ANSWER_TIMEOUT_S)[0]
    assert ephemeral.args["user"] == "U2"
    assert ephemeral.args["text"] == messages.VOTE_THANKS["up"]
    store = Store(redis_conn, retention_s=86400)
    assert store.votes(answer_id_for("C1", ts)) == {"U2": Vote.UP}


def test_finetune_from_a_non_admin_is_refused_and_starts_nothing(
    socket_bot: Process, slack_api: SlackEmulator, redis_conn: Redis
) -> None:
    response_url = slack_api.new_response_url()
    fields = payloads.command_form("retrain", user="U1", response_url=response_url)
    assert fields["user_id"] != ADMIN
    envelope_id = slack_api.socket_mode.push_slash_command(fields)

    assert slack_api.socket_mode.wait_for_ack(envelope_id).payload is None
    replies = poll_until(lambda: slack_api.responses(response_url), ANSWER_TIMEOUT_S, 0.05)
    assert replies, f"no reply at the response_url\n{socket_bot.output()[-3000:]}"
    assert replies[0]["text"] == messages.NOT_ADMIN
    assert replies[0]["response_type"] == "ephemeral"
    assert redis_conn.zcard(keys.RUNS) == 0, "no training run"


def test_a_refused_app_token_stops_the_bot_with_one_clear_line(
    env: dict[str, str], slack_api: SlackEmulator, redis_conn: Redis
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=ROOT,
        env={**env, "SLACK_APP_TOKEN": "xapp-1-revoked"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tuneloop: SLACK_APP_TOKEN: Slack refused it for Socket Mode")
    assert "(invalid_auth)" in last and "connections:write" in last
    assert "xapp-1-revoked" not in result.stderr
    assert [c.error for c in slack_api.calls("apps.connections.open")] == ["invalid_auth"]
    assert slack_api.socket_mode.connection_count() == 0


def test_sigterm_closes_the_connection_and_lets_an_acknowledged_answer_finish(
    env: dict[str, str], tmp_path: Path, slack_api: SlackEmulator, openai_api: OpenAIEmulator
) -> None:
    # With Redis unreachable the answer is produced in the bot process, after the ack.
    env = {**env, "REDIS_URL": f"redis://127.0.0.1:{payloads.free_port()}/0"}
    openai_api.script_answer("finished despite the shutdown", first_token_delay_s=1.5)
    bot = _start_bot(env, tmp_path, slack_api)
    try:
        body, ts = _ask(slack_api, "slow one")
        slack_api.socket_mode.wait_for_ack(slack_api.socket_mode.push_event(body))
        openai_api.wait_for_request("/v1/chat/completions", timeout=ANSWER_TIMEOUT_S)
        status = bot.stop(signal.SIGTERM)
    finally:
        if bot.proc.poll() is None:
            bot.stop(signal.SIGKILL)

    output = bot.output()
    assert status == 0, output[-3000:]
    answers = _answers(slack_api, "C1", ts)
    assert [a["text"] for a in answers] == ["finished despite the shutdown"], output[-3000:]
    slack_api.socket_mode.wait_disconnected(timeout=5)
    assert slack_api.socket_mode.connection_count() == 1, "the connection was not replaced"
    assert '"msg": "stopped"' in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), "only JSON log lines, no bare traceback"


# -- the emulator itself, through slack_sdk's own Socket Mode client ----------------------


def test_the_emulator_checks_tokens_and_speaks_socket_mode_like_slack(
    slack_api: SlackEmulator,
) -> None:
    web = WebClient(token=slack_api.bot_token, base_url=slack_api.url, timeout=5)
    for token, error in [
        (slack_api.bot_token, "not_allowed_token_type"),
        ("xapp-x", "invalid_auth"),
    ]:
        with pytest.raises(SlackApiError) as refused:
            web.apps_connections_open(app_token=token)
        assert refused.value.response["error"] == error
    with pytest.raises(SlackApiError) as wrong_kind:
        WebClient(token=slack_api.app_token, base_url=slack_api.url).auth_test()
    assert wrong_kind.value.response["error"] == "not_allowed_token_type"

    received: list[SocketModeRequest] = []

    def on_request(client: SocketModeClient, request: SocketModeRequest) -> None:
        received.append(request)
        reply = {"text": "ok"} if request.accepts_response_payload else None
        client.send_socket_mode_response(SocketModeResponse(request.envelope_id, reply))

    client = SocketModeClient(app_token=slack_api.app_token, web_client=web)
    client.socket_mode_request_listeners.append(on_request)
    try:
        client.connect()
        connection = slack_api.socket_mode.wait_connected()
        event_id = slack_api.socket_mode.push_event({"type": "event_callback"}, retry_attempt=2)
        command_id = slack_api.socket_mode.push_slash_command(
            {"command": "/x", "text": "y" * 70_000}
        )
        assert slack_api.socket_mode.wait_for_ack(event_id).raw == {"envelope_id": event_id}
        assert slack_api.socket_mode.wait_for_ack(command_id).payload == {"text": "ok"}
        by_type = {r.type: r for r in received}
        assert (by_type["events_api"].retry_attempt, by_type["events_api"].retry_reason) == (2, "")
        assert by_type["slash_commands"].retry_attempt is None
        assert len(by_type["slash_commands"].payload["text"]) == 70_000
        pong = poll_until(lambda: client.current_session.last_ping_pong_time, 5.0)
        assert pong is not None and slack_api.socket_mode.pings() >= 1, "ping answered with pong"
        assert connection.ticket is not None
        with socket.create_connection(("127.0.0.1", slack_api.socket_mode.port), timeout=5) as raw:
            raw.sendall(
                f"GET /link/?ticket={connection.ticket} HTTP/1.1\r\nHost: x\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            reply = b""
            for _ in range(20):
                if b"\r\n" in reply:
                    break
                reply += raw.recv(100)
            assert reply.startswith(b"HTTP/1.1 401 "), "a ticket is good for one connection"
    finally:
        client.close()
    slack_api.socket_mode.wait_disconnected()
