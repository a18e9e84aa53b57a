"""The command line run in-process through click's CliRunner, and what its tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from modelport.cli import main
from modelport.demo import build_iris


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run `modelport ARGS...` in-process, with no registry from the environment."""
    # Wide enough that rich never wraps or truncates a cell.
    environment = {"COLUMNS": "250", "MODELPORT_REGISTRY": ""} | (env or {})
    return CliRunner().invoke(main, list(args), env=environment)


def ok(result: Result) -> str:
    """Assert that the command succeeded and return its stdout."""
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def fails(result: Result, *words: str) -> str:
    """Assert a one-line `error: ...` exit 1 without a traceback, naming `words`; return it."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    message = result.stderr
    assert message.startswith("error: "), message
    for word in words:
        assert word in message, message
    assert "Traceback" not in result.output
    return message


@pytest.fixture(scope="module")
def iris_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's iris model, saved once per test module."""
    path, _, _ = build_iris(tmp_path_factory.mktemp("iris"))
    return path
