"""Fixtures every test directory may use."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from modelport.demo import build_demo
from modelport.registry import database

CREATED_BY = "tests@integration"
"""Who the tests' pushes name as their author."""
POSTGRES_ENV = "MODELPORT_TEST_POSTGRES"
POSTGRES_SERVER = os.environ.get(POSTGRES_ENV, "")
POSTGRES_SKIP_REASON = (
    f"{POSTGRES_ENV} is unset: set it to a PostgreSQL URL whose role may create databases "
    "(.ci/run sets postgresql://postgres@127.0.0.1:5432/test)"
)


@pytest.fixture
def database_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database; dropped afterwards (skips without one)."""
    if not POSTGRES_SERVER:
        pytest.skip(POSTGRES_SKIP_REASON)
    server = sa.make_url(POSTGRES_SERVER).set(drivername=database.POSTGRES_DRIVER)
    name = f"modelport_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(drivername="postgresql", database=name).render_as_string(
                hide_password=False
            )
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def write_iris_c001(out: Path) -> Path:
    """A second, different iris model (strong regularisation), saved with skops."""
    import skops.io
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(C=0.01, max_iter=1000).fit(x.astype(np.float32), y)
    path = out / "iris-c001.skops"
    skops.io.dump(model, path)
    return path


@pytest.fixture(scope="session")
def demo_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding the demo models, built once per session; treat it as read-only."""
    location = tmp_path_factory.mktemp("demo") / "registry"
    lines = list(build_demo(str(location), created_by=CREATED_BY))
    assert len(lines) == 5, lines
    return location
