"""Answering through the real HTTP endpoint, a real RQ worker and the emulators."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from rq import Queue

from bot import messages
from core import keys
from core.store import AnswerState, answer_id_for
from tests import payloads
from tests.bot.conftest import SIGNING_SECRET, Bot


def _bot_posted_nothing(bot: Bot) -> bool:
    return not any(c.method in ("chat.postMessage", "chat.startStream") for c in bot.slack.calls())


def test_mention_gets_a_streamed_answer_in_its_thread_with_feedback_buttons(bot: Bot) -> None:
    event = payloads.mention("What is the capital of France?")
    # The model takes a moment before its first token: the thread shows "is thinking…".
    bot.openai.script_answer("Paris is the capital of France. " * 20, first_token_delay_s=0.6)

    response = bot.event(event)
    assert response.status == 200
    bot.run_worker()

    start = bot.slack.calls("chat.startStream")[0]
    assert start.args["channel"] == "C1"
    assert start.args["thread_ts"] == event["ts"]
    assert start.args["recipient_user_id"] == "U1"
    assert start.args["recipient_team_id"] == "T1"
    assert bot.slack.calls("chat.appendStream"), "long answers are appended progressively"
    stop = bot.slack.calls("chat.stopStream")[0]
    feedback = stop.args["blocks"][0]
    assert feedback["type"] == "context_actions"
    assert feedback["elements"][0]["type"] == "feedback_buttons"
    assert {
        feedback["elements"][0]["positive_button"]["value"],
        feedback["elements"][0]["negative_button"]["value"],
    } == {"up", "down"}
    posted = bot.slack.message("C1", stop.args["ts"])
    assert posted["text"] == "Paris is the capital of France. " * 20
    assert posted["thread_ts"] == event["ts"]
    status = bot.slack.calls("assistant.threads.setStatus")[0]
    assert status.args["thread_ts"] == event["ts"]
    assert status.at < start.at, "the status shows before the answer starts"

    # The model saw the system prompt and the question without the bot's mention.
    sent = bot.openai.completions()[0]
    assert sent["model"] == bot.settings.model.base_model
    assert sent["messages"][0] == {"role": "system", "content": bot.settings.model.system_prompt}
    assert sent["messages"][-1] == {"role": "user", "content": "What is the capital of France?"}


def test_the_transcript_is_stored_with_everything_needed_to_train(bot: Bot) -> None:
    event = payloads.mention("hello there")
    answer_ts = bot.ask(event)

    answer_id = answer_id_for("C1", event["ts"])
    stored = bot.services.store.get_answer(answer_id)
    assert stored is not None
    assert stored.team_id == "T1"
    assert stored.channel_id == "C1"
    assert stored.thread_ts == event["ts"]
    assert stored.user_id == "U1"
    assert stored.answer == "Echo: hello there"
    assert stored.model == bot.settings.model.base_model
    assert stored.messages[-1] == {"role": "user", "content": "hello there"}
    assert stored.prompt_tokens > 0 and stored.completion_tokens > 0
    assert stored.latency_ms >= 0
    assert stored.message_ts == (answer_ts,)
    # Unrated answers expire after the retention period.
    ttl = bot.redis.ttl(keys.answer(answer_id))
    assert 0 < ttl <= bot.settings.retention.unrated_days * 86400


def test_follow_up_in_a_thread_is_answered_without_a_mention_with_the_history(bot: Bot) -> None:
    first = bot.says("My name is Ada.", mention=True)
    bot.openai.script_answer("Nice to meet you, Ada.")
    first_answer_ts = bot.ask(first)

    follow = bot.says("What is my name?", thread_ts=first["ts"])
    bot.openai.script_answer("Your name is Ada.")
    bot.ask(follow)

    sent = bot.openai.completions()[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "My name is Ada."
    assert sent[2]["content"] == "Nice to meet you, Ada."
    assert sent[3]["content"] == "What is my name?"
    second_answer_ts = bot.last_answer_ts("C1", first["ts"])
    assert first_answer_ts != second_answer_ts


def test_a_follow_up_sent_while_the_first_answer_streams_is_answered(bot: Bot) -> None:
    first = bot.says("Tell me a long story.", mention=True)
    bot.openai.script_answer("Once upon a time. " * 20, chunk_delay_s=0.05)
    bot.post_event(first)
    bot.slack.wait_for("chat.startStream")  # the first answer is visibly under way

    follow = bot.says("And then?", thread_ts=first["ts"])  # no mention
    bot.openai.script_answer("They lived happily.")
    bot.event(follow)
    bot.run_worker()

    texts = [m["text"] for m in bot.slack.messages("C1", first["ts"]) if m["user"] == "UBOT"]
    assert texts == ["Once upon a time. " * 20, "They lived happily."]


def test_model_output_cannot_ping_people_or_hide_links(bot: Bot) -> None:
    bot.openai.script_answer(
        "<!channel> <!here> <!everyone> <@U2> <!subteam^S1> see <https://evil.example|docs>"
        " or [the docs](https://evil.example/x)"
    )
    ts = bot.ask(bot.says("say something", mention=True))
    shown = bot.slack.message("C1", ts)["text"]
    assert "<" not in shown and ">" not in shown, shown
    assert "&lt;!channel&gt; &lt;!here&gt; &lt;!everyone&gt; &lt;@U2&gt;" in shown
    assert "](" not in shown and "[the docs] (https://evil.example/x)" in shown
    # The transcript keeps what the model wrote.
    stored = bot.services.store.get_answer(
        answer_id_for("C1", bot.slack.message("C1", ts)["thread_ts"])
    )
    assert stored is not None and stored.answer.startswith("<!channel>")


def test_a_thread_message_where_the_bot_never_spoke_is_ignored(bot: Bot) -> None:
    parent = bot.slack.add_message("C1", "people talking", "U2")
    bot.event(payloads.message("just chatting", thread_ts=parent))
    bot.run_worker()
    assert _bot_posted_nothing(bot)
    assert bot.openai.completions() == []


def test_direct_message_is_answered(bot: Bot) -> None:
    event = bot.says("hi in private", channel="D1", channel_type="im")
    answer_ts = bot.ask(event)
    assert bot.slack.message("D1", answer_ts)["text"] == "Echo: hi in private"
    assert bot.slack.message("D1", answer_ts)["thread_ts"] == event["ts"]


def test_a_short_answer_that_arrives_at_once_is_one_message_with_feedback(bot: Bot) -> None:
    event = bot.says("quick one", mention=True)
    bot.ask(event)
    assert bot.slack.calls("chat.startStream") == []
    assert bot.slack.calls("assistant.threads.setStatus") == [], "no status for instant answers"
    post = bot.slack.calls("chat.postMessage")[0]
    assert post.args["thread_ts"] == event["ts"]
    assert post.args["text"] == "Echo: quick one"
    assert post.args["blocks"][-1]["elements"][0]["type"] == "feedback_buttons"


@pytest.mark.parametrize(
    "extra",
    [
        {"bot_id": "B999"},
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"user": "UBOT"},
    ],
    ids=["other-bot", "edit", "deletion", "own-message"],
)
def test_bots_edits_deletions_and_own_messages_are_ignored(bot: Bot, extra: dict) -> None:
    event = payloads.message("hello", channel="D1", channel_type="im", **extra)
    assert bot.event(event).status == 200
    bot.run_worker()
    assert _bot_posted_nothing(bot)
    assert bot.openai.completions() == []


def test_slack_retries_of_an_event_produce_one_answer(bot: Bot) -> None:
    event = payloads.mention("only once please")
    for attempt in range(4):
        headers = {"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": "http_timeout"}
        response = bot.event(event, event_id="EvSAME", headers=headers if attempt else None)
        assert response.status == 200
    # Slack also sends a message event (another event id) for the same mention.
    bot.event(payloads.message(event["text"], ts=event["ts"]))
    bot.run_worker()
    answers = [m for m in bot.slack.messages("C1", event["ts"]) if m.get("user") == "UBOT"]
    assert len(answers) == 1
    assert len(bot.openai.completions()) == 1


def test_bad_or_stale_signature_gets_401_and_nothing_runs(bot: Bot) -> None:
    body = payloads.json_body(payloads.event_envelope(payloads.mention("sneaky")))
    wrong = payloads.post(bot.url, body, "application/json", secret="not-the-secret")
    stale = payloads.post(
        bot.url,
        body,
        "application/json",
        secret=SIGNING_SECRET,
        timestamp=str(int(time.time()) - 600),
    )
    unsigned = payloads.post(bot.url, body, "application/json", secret=None)
    assert (wrong.status, stale.status, unsigned.status) == (401, 401, 401)
    bot.run_worker()
    assert bot.slack.calls("chat.startStream") == []
    assert bot.redis.keys("tl:claimed:*") == []


@pytest.mark.parametrize("bot_settings", [{"model": {"context_token_budget": 120}}])
def test_history_is_trimmed_oldest_first_to_the_token_budget(bot: Bot) -> None:
    parent = bot.slack.add_message("C1", "<@UBOT> first question " + "alpha " * 30, "U1")
    bot.slack.add_message(
        "C1", "first answer " + "beta " * 30, "UBOT", thread_ts=parent, bot_id="BBOT"
    )
    bot.slack.add_message("C1", "second question", "U1", thread_ts=parent)
    bot.slack.add_message("C1", "second answer", "UBOT", thread_ts=parent, bot_id="BBOT")
    bot.redis.set(keys.bot_thread("C1", parent), "1")
    follow = bot.says("third question", thread_ts=parent)
    bot.ask(follow)

    sent = bot.openai.completions()[-1]["messages"]
    contents = [m["content"] for m in sent]
    assert contents == [
        bot.settings.model.system_prompt,
        "second question",
        "second answer",
        "third question",
    ]


@pytest.mark.parametrize("bot_settings", [{"model": {"context_token_budget": 80}}])
def test_a_question_longer_than_the_budget_gets_a_polite_refusal(bot: Bot) -> None:
    event = payloads.mention("word " * 500)
    bot.event(event)
    bot.run_worker()
    posted = bot.slack.calls("chat.postMessage")
    assert len(posted) == 1
    assert "too long" in posted[0].args["text"]
    assert posted[0].args["thread_ts"] == event["ts"]
    assert bot.openai.completions() == []


def test_openai_429_is_retried_then_answered(bot: Bot) -> None:
    bot.openai.fail_next(status=429, times=1, retry_after="0")
    bot.openai.script_answer("worked after a retry")
    ts = bot.ask(payloads.mention("retry me"))
    assert len(bot.openai.requests("/v1/chat/completions")) == 2
    assert bot.slack.message("C1", ts)["text"] == "worked after a retry"


@pytest.mark.parametrize(
    "bot_settings",
    [
        {"model": {"max_retries": 1}},
        {"model": {"max_retries": 1}, "slack": {"inline_answers": 0}},
    ],
    ids=["in-process", "queued"],
)
def test_openai_failure_ends_in_a_friendly_message_in_the_thread(bot: Bot) -> None:
    bot.openai.fail_next(status=500, times=5, retry_after="0")
    event = payloads.mention("will fail")
    bot.event(event)
    bot.run_worker()
    posted = bot.slack.calls("chat.postMessage")
    assert len(posted) == 1, "one friendly message, even if the job is retried"
    assert posted[0].args["thread_ts"] == event["ts"]
    assert "unavailable" in posted[0].args["text"]
    assert "Traceback" not in posted[0].args["text"]
    failed = Queue(keys.QUEUE_ANSWERS, connection=bot.redis).failed_job_registry
    if bot.settings.slack.inline_answers:
        assert len(failed) == 0
        assert bot.services.store.answer_state("C1", event["ts"]) is AnswerState.FAILED
    else:
        assert len(failed) == 1, "the failure is visible in RQ's failed registry"
    metrics = urllib.request.urlopen(bot.url.replace("/slack/events", "/metrics")).read()
    assert 'tuneloop_errors_total{kind="unavailable"} 1.0' in metrics.decode()


@pytest.mark.parametrize("break_with", ["disconnect", "error"])
def test_an_answer_cut_off_mid_stream_keeps_its_text_and_says_so(bot: Bot, break_with: str) -> None:
    bot.openai.script_answer(
        "one two three four five six seven eight nine", break_after=2, break_with=break_with
    )
    event = bot.says("tell me", mention=True)
    bot.event(event)
    bot.run_worker()
    answers = [m for m in bot.slack.messages("C1", event["ts"]) if m["user"] == "UBOT"]
    assert len(answers) == 1
    assert answers[0]["text"].startswith("one two three four five six")
    assert messages.MODEL_ERRORS["interrupted"] in answers[0]["text"]
    assert "seven" not in answers[0]["text"]
    assert bot.services.store.answer_state("C1", event["ts"]) is AnswerState.FAILED


def test_context_too_long_from_the_model_is_explained(bot: Bot) -> None:
    bot.openai.fail_next(status=400, error_code="context_length_exceeded")
    bot.event(payloads.mention("long story"))
    bot.run_worker()
    text = bot.slack.calls("chat.postMessage")[0].args["text"]
    assert "too long" in text and "new thread" in text


@pytest.mark.parametrize("bot_settings", [{"slack": {"max_message_chars": 500}}])
def test_a_long_answer_is_split_over_messages_not_truncated(bot: Bot) -> None:
    words = [f"word{i}" for i in range(400)]
    bot.openai.script_answer(" ".join(words))
    event = bot.says("write a lot", mention=True)
    bot.ask(event)
    parts = [m for m in bot.slack.messages("C1", event["ts"]) if m.get("user") == "UBOT"]
    assert len(parts) >= 6
    assert all(len(p["text"]) <= 500 for p in parts)
    assert "".join(p["text"] for p in parts) == " ".join(words)
    with_buttons = [
        any(b["type"] == "context_actions" for b in p.get("blocks") or []) for p in parts
    ]
    assert with_buttons == [False] * (len(parts) - 1) + [True], "feedback ends the last part"
    answer_id = answer_id_for("C1", event["ts"])
    assert {bot.services.store.answer_for_message("C1", p["ts"]) for p in parts} == {answer_id}


def test_when_streaming_is_refused_the_answer_is_posted_then_updated(bot: Bot) -> None:
    bot.slack.refuse_streaming = True
    bot.openai.script_answer("A fallback answer. " * 30)
    event = payloads.mention("no streaming here")
    bot.event(event)
    bot.run_worker()
    post = bot.slack.calls("chat.postMessage")[0]
    assert post.args["thread_ts"] == event["ts"]
    updates = bot.slack.calls("chat.update")
    assert updates, "the posted message is updated as the answer grows"
    final = bot.slack.message("C1", post.args.get("ts") or updates[-1].args["ts"])
    assert final["text"] == "A fallback answer. " * 30
    assert any(b["type"] == "context_actions" for b in final["blocks"])
    # Votes still work on the fallback message.
    assert bot.services.store.answer_for_message("C1", updates[-1].args["ts"]) is not None


def test_slack_429_is_retried_after_retry_after(bot: Bot) -> None:
    bot.slack.fail_next("chat.startStream", status=429, retry_after=1)
    bot.openai.script_answer("A long answer that is streamed. " * 10)
    ts = bot.ask(bot.says("rate limited slack", mention=True))
    starts = bot.slack.calls("chat.startStream")
    assert len(starts) == 2 and starts[0].error == "ratelimited"
    assert starts[1].at - starts[0].at >= 0.9
    assert bot.slack.message("C1", ts)["text"] == "A long answer that is streamed. " * 10


def test_a_promoted_model_is_used_for_the_next_answer(bot: Bot) -> None:
    bot.openai.add_model("ft:gpt-4o-mini-2024-07-18:org:tuneloop:abc")
    bot.redis.set(keys.CURRENT_MODEL, "ft:gpt-4o-mini-2024-07-18:org:tuneloop:abc")
    bot.ask(payloads.mention("which model?"))
    assert bot.openai.completions()[-1]["model"] == "ft:gpt-4o-mini-2024-07-18:org:tuneloop:abc"
    question_ts = bot.slack.calls("chat.postMessage")[-1].args["thread_ts"]
    stored = json.loads(bot.redis.hget(keys.answer(answer_id_for("C1", question_ts)), "messages"))
    assert stored[-1]["content"] == "which model?"


@pytest.mark.parametrize("bot_settings", [{"model": {"request_timeout_s": 0.5, "max_retries": 2}}])
def test_an_openai_timeout_is_retried_then_answered(bot: Bot) -> None:
    bot.openai.fail_next(hang_s=1.5, times=1)
    bot.openai.script_answer("answered on the second try")
    ts = bot.ask(bot.says("slow model", mention=True))
    assert len(bot.openai.requests("/v1/chat/completions")) == 2
    assert bot.slack.message("C1", ts)["text"] == "answered on the second try"


@pytest.mark.parametrize("bot_settings", [{"model": {"request_timeout_s": 0.3, "max_retries": 1}}])
def test_an_openai_that_keeps_timing_out_ends_in_a_clear_message(bot: Bot) -> None:
    bot.openai.fail_next(hang_s=1.0, times=3)
    event = bot.says("never answers", mention=True)
    bot.event(event)
    bot.run_worker()
    posted = bot.slack.calls("chat.postMessage")
    assert [p.args["text"] for p in posted] == [messages.MODEL_ERRORS["timeout"]]
    assert posted[0].args["thread_ts"] == event["ts"]
