"""Fixtures every test directory may use."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from modelport.registry import database

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
