"""Fixtures shared by the serving tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.registry.store import Registry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A new, empty registry in a temporary directory."""
    with Registry.open(tmp_path / "registry") as store:
        yield store
