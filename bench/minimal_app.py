"""Baseline for bench_bot.py: the least a Bolt app can do to answer a mention.

Calls the model without streaming and posts the answer: no Redis, no queue, no history,
no feedback buttons, no logging. Served by waitress like the real bot.
"""

from __future__ import annotations

import logging
import os

import waitress
from openai import OpenAI
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

logging.disable(logging.CRITICAL)


def main() -> None:
    client = WebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"])
    llm = OpenAI(api_key=os.environ["OPENAI_API_KEY"], base_url=os.environ["OPENAI_BASE_URL"])
    app = App(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"])

    @app.event("app_mention")
    def on_mention(event: dict, say) -> None:  # noqa: ANN001
        reply = llm.chat.completions.create(
            model=os.environ["MODEL"], messages=[{"role": "user", "content": event["text"]}]
        )
        client.chat_postMessage(
            channel=event["channel"],
            thread_ts=event["ts"],
            text=reply.choices[0].message.content or "",
        )

    waitress.serve(
        SlackRequestHandler(app),
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        threads=16,
        _quiet=True,
    )


if __name__ == "__main__":
    main()
