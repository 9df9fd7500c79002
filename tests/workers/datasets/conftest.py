"""The CLI runner fixture of the dataset-tool tests.

Every test writes real files under ``tmp_path`` and runs the real command line; no
part of the tool is replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result

from workers.datasets.cli import cli


@pytest.fixture
def run() -> Callable[..., Result]:
    """Run ``python -m workers.datasets`` in-process; never a traceback in the output."""
    runner = CliRunner()

    def invoke(*args: Any, input: str | None = None) -> Result:
        result = runner.invoke(cli, [str(arg) for arg in args], input=input)
        assert "Traceback" not in result.output
        assert "Traceback" not in (result.stderr or "")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return invoke
