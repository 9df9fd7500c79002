"""Pytest fixtures for the loopback emulators.

Enable with ``pytest_plugins = ["tests.emulators.plugin"]`` in a conftest.py (or
``-p tests.emulators.plugin`` on the command line).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator


@pytest.fixture
def slack_api() -> Iterator[SlackEmulator]:
    """A started :class:`SlackEmulator` (token "xoxb-test", bot "UBOT", team "T1")."""
    emu = SlackEmulator().start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def openai_api() -> Iterator[OpenAIEmulator]:
    """A started :class:`OpenAIEmulator` (api key "sk-test")."""
    emu = OpenAIEmulator().start()
    try:
        yield emu
    finally:
        emu.stop()
