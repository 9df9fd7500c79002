"""Chaos, the long run: many trials of tests/chaos.py (SIGKILLed web processes and answer
workers while questions are in flight, Redis restarted, Slack 429 storms), reporting what
was acknowledged and anything lost or doubled (bench/README.md).

    python -m bench.chaos --trials 20 --questions 80
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from tests import chaos
from tests.bot.conftest import write_config
from tests.bot.test_faults import RedisServer
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator
from tests.processes import bot_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--questions", type=int, default=80, help="sent at once per trial")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        redis = RedisServer(directory)
        redis.start()
        slack = SlackEmulator(bot_token="xoxb-chaos").start()
        llm = OpenAIEmulator(api_key="sk-chaos").start()
        llm.chunk_delay_s = 0.02
        llm.answer_fn = lambda body: chaos.ANSWER
        config = write_config(directory / "settings.yaml", chaos.CHAOS_SETTINGS)
        env = bot_env(slack, llm, f"redis://127.0.0.1:{redis.port}/0", config)
        cluster = chaos.Cluster(env, directory)
        try:
            result = chaos.run(
                cluster,
                slack,
                redis,
                trials=args.trials,
                questions=args.questions,
                seed=args.seed,
                answered_within_s=180,
            )
        finally:
            cluster.stop()
            slack.stop()
            llm.stop()
            redis.stop()
    print(
        f"trials: {result.trials}; processes SIGKILLed: {result.kills}; Redis restarts: "
        f"{(result.trials + 1) // 2}; 429 storms: {(result.trials + 2) // 3}"
    )
    print(
        f"questions acknowledged: {result.questions}; unanswered: {len(result.unanswered)}; "
        f"answered twice: {len(result.doubled)}"
    )
    print(f"votes acknowledged: {result.votes}; not stored: {len(result.votes_lost)}")
    for detail in result.details:
        print(f"  {detail}")


if __name__ == "__main__":
    main()
