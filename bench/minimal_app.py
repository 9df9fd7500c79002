"""Baseline for the bot benchmarks: the least a Bolt app can do to answer a mention the
way the bot does.

The same work as the bot's answer: read the thread's history, stream the same chat
completion from the model, and stream the text into the thread through Slack's
streaming messages (same buffer size). Nothing else: no Redis, no claim, no journal, no
queue, no feedback buttons, no stored transcript, no logging. Bolt's AsyncApp on its own
aiohttp server, so it too holds any number of answers in flight.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from openai import AsyncOpenAI
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

logging.disable(logging.CRITICAL)

BUFFER_CHARS = 200  # the bot's slack.stream_buffer_chars


def main() -> None:
    client = AsyncWebClient(
        token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"]
    )
    llm = AsyncOpenAI(api_key=os.environ["OPENAI_API_KEY"], base_url=os.environ["OPENAI_BASE_URL"])
    app = AsyncApp(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"])

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], context: Any) -> None:
        thread_ts = event.get("thread_ts") or event["ts"]
        messages: list[dict[str, str]] = []
        if event.get("thread_ts"):
            replies = await client.conversations_replies(channel=event["channel"], ts=thread_ts)
            for message in replies["messages"]:
                if message["ts"] != event["ts"]:
                    role = "assistant" if message.get("user") == context.bot_user_id else "user"
                    messages.append({"role": role, "content": message.get("text", "")})
        messages.append({"role": "user", "content": event["text"]})
        completion = await llm.chat.completions.create(
            model=os.environ["MODEL"], messages=messages, stream=True
        )
        stream = await client.chat_stream(
            channel=event["channel"],
            thread_ts=thread_ts,
            recipient_team_id=event.get("team"),
            recipient_user_id=event.get("user"),
            buffer_size=BUFFER_CHARS,
        )
        async for chunk in completion:
            if chunk.choices and chunk.choices[0].delta.content:
                await stream.append(markdown_text=chunk.choices[0].delta.content)
        await stream.stop()

    app.start(port=int(os.environ["PORT"]), host="127.0.0.1")


if __name__ == "__main__":
    main()
