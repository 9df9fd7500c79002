"""The answer engine's clients under the load it is built for."""

from __future__ import annotations

import asyncio

from bot.engine import REDIS_CONNECTIONS, AsyncServices
from tests.bot.conftest import Bot


def test_more_answers_than_redis_connections_wait_for_one_instead_of_failing(bot: Bot) -> None:
    """Hundreds of answers start together (each reads its thread's model): beyond the
    pool's size they must wait for a connection, not lose their Redis work."""
    many = 3 * REDIS_CONNECTIONS

    async def burst() -> list[str]:
        services = await AsyncServices.open(bot.settings, "UBOT")
        try:
            return await asyncio.gather(
                *(services.store.current_model("base") for _ in range(many))
            )
        finally:
            await services.close()

    assert asyncio.run(burst()) == ["base"] * many
