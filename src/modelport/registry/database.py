"""The registry's database: its tables, its engines (SQLite, PostgreSQL) and schema migrations."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from modelport.errors import InvalidInput, Unsupported

HEAD_REVISION: Final = "0006"
"""The newest migration in migrations/versions; a registry already there is not migrated."""

DATABASE_FILE: Final = "registry.db"
_MIGRATIONS: Final = Path(__file__).with_name("migrations")
_BUSY_TIMEOUT_MS: Final = 30_000
WRITE_OPTION: Final = "modelport_write"
"""Execution option that makes a transaction take the write lock at BEGIN."""

POSTGRES_DRIVER: Final = "postgresql+psycopg"
POSTGRES_SCHEMES: Final = frozenset({"postgresql", "postgres", POSTGRES_DRIVER})
"""URL schemes of a shared registry on PostgreSQL; all of them connect through psycopg 3."""
URL_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
"""The scheme at the start of a location that is a URL."""
ARTIFACTS_SETTING: Final = "artifacts"
"""The settings key, and URL query parameter, of a shared registry's artifact root."""
_CONNECT_TIMEOUT_S: Final = 10
_SECRET_PARAMETERS: Final = ("password", "sslpassword")
# The key of the PostgreSQL advisory lock that writers hold ("modelpor" in ASCII). Advisory
# locks are per database, so the constant only has to stay clear of other applications' keys.
_WRITE_LOCK: Final = int.from_bytes(b"modelpor")

# The tables as the registry's queries see them. The migrations own the DDL; a test checks that the
# two agree, so change both together (a new migration plus the table here).
schema = sa.MetaData()

models_table = sa.Table(
    "models",
    schema,
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("name", name="pk_models"),
)

versions_table = sa.Table(
    "versions",
    schema,
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("format", sa.String(64), nullable=False),
    sa.Column("signature", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("pickle", sa.Boolean, nullable=False),
    sa.Column("trusted_pickle", sa.Boolean, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    # Revision 0002: the compiled form of the artifact (all or none of the first three set)
    # and the report of the check that decided whether it was kept.
    sa.Column("compiled_format", sa.String(64), nullable=True),
    sa.Column("compiled_digest", sa.String(64), nullable=True),
    sa.Column("compiled_size", sa.BigInteger, nullable=True),
    sa.Column("compile_report", sa.JSON, nullable=True),
    # Revision 0003: the host the version was pushed from (null for older versions).
    sa.Column("created_host", sa.Text, nullable=True),
    # Revision 0005: the reference profile drift is measured against (null without one).
    sa.Column("reference_profile", sa.JSON, nullable=True),
    sa.PrimaryKeyConstraint("name", "version", name="pk_versions"),
    sa.ForeignKeyConstraint(["name"], ["models.name"], name="fk_versions_name_models"),
    sa.UniqueConstraint("name", "digest", name="uq_versions_name_digest"),
    sa.Index("ix_versions_digest", "digest"),
    sa.Index("ix_versions_compiled_digest", "compiled_digest"),
)

# Revision 0003: named pointers to versions ("production", "staging"), moved by `models alias`.
aliases_table = sa.Table(
    "aliases",
    schema,
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("name", "alias", name="pk_aliases"),
    sa.ForeignKeyConstraint(
        ["name", "version"],
        ["versions.name", "versions.version"],
        name="fk_aliases_name_version_versions",
    ),
)

# Revision 0003: the model's history, append-only: pushes, alias moves, loads and unloads.
# Its largest id doubles as the registry's change counter, which servers poll.
events_table = sa.Table(
    "events",
    schema,
    sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("alias", sa.String(64), nullable=True),
    sa.Column("from_version", sa.Integer, nullable=True),
    sa.Column("to_version", sa.Integer, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("detail", sa.JSON, nullable=True),
    sa.PrimaryKeyConstraint("id", name="pk_events"),
    sa.Index("ix_events_name_id", "name", "id"),
)

# Revision 0004: registry-wide settings; a shared registry records its artifact root here.
settings_table = sa.Table(
    "settings",
    schema,
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("key", name="pk_settings"),
)

# Revision 0006: API keys for `serve --require-auth`. Only the sha256 of a secret is stored; `id`
# is its public prefix, shown by `keys list`. Revoked keys keep their row, for the record.
api_keys_table = sa.Table(
    "api_keys",
    schema,
    sa.Column("id", sa.String(16), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_by", sa.Text, nullable=True),
    sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    sa.UniqueConstraint("secret_sha256", name="uq_api_keys_secret_sha256"),
)


def sqlite_engine(path: Path) -> Engine:
    """An engine for the embedded database: WAL, durable commits, writers that queue."""
    engine = sa.create_engine(
        sa.URL.create("sqlite", database=str(path)),
        connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000},
    )

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (see on_begin) instead of the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # FULL syncs the WAL on every commit: an acknowledged push survives power loss.
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    def on_begin(conn: Connection) -> None:
        # Writers take the lock up front (IMMEDIATE) so concurrent pushers wait their turn on
        # busy_timeout; a deferred transaction that later writes fails at once instead.
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    sa.event.listen(engine, "connect", on_connect)
    sa.event.listen(engine, "begin", on_begin)
    return engine


def postgres_url(text: str) -> tuple[sa.URL, str | None]:
    """Split a registry URL into the database URL (for psycopg 3) and its `artifacts` value.

    InvalidInput for a URL that does not parse, names no database or repeats `artifacts`;
    the messages never repeat the URL, which may hold a password.
    """
    try:
        url = sa.make_url(text)
    except (sa.exc.ArgumentError, ValueError):
        raise InvalidInput(
            "the registry URL does not parse; use postgresql://USER@HOST:PORT/DATABASE, with "
            "special characters in the user name or password percent-encoded"
        ) from None
    if not url.database:
        raise InvalidInput("the registry URL names no database; end it with /DATABASE")
    artifacts = url.query.get(ARTIFACTS_SETTING)
    if isinstance(artifacts, tuple):
        raise InvalidInput(f"give the registry URL's {ARTIFACTS_SETTING} parameter only once")
    database_url = url.difference_update_query([ARTIFACTS_SETTING]).set(drivername=POSTGRES_DRIVER)
    return database_url, artifacts


def display_url(url: sa.URL) -> str:
    """`url` as it is safe to print: the password masked, no query (it may hold secrets)."""
    return url.set(drivername="postgresql", query={}).render_as_string(hide_password=True)


def display_location(text: str) -> str:
    """A database location as it is safe to print: a PostgreSQL URL with its password masked and
    no query, a URL of another scheme as its scheme alone, anything else (a path) as given."""
    scheme = URL_SCHEME.match(text)
    if scheme is None:
        return text
    if scheme.group(1).lower() in POSTGRES_SCHEMES:
        try:
            return display_url(postgres_url(text)[0])
        except InvalidInput:
            pass
    return f"{scheme.group(1)}://***"


def without_secrets(message: str, url: sa.URL) -> str:
    """`message` with every secret of `url` (password, password parameters) masked."""
    secrets = [url.password, *(url.query.get(key) for key in _SECRET_PARAMETERS)]
    for secret in secrets:
        for value in secret if isinstance(secret, tuple) else (secret,):
            if value:
                message = message.replace(value, "***")
    return message


def postgres_engine(url: sa.URL) -> Engine:
    """An engine for a shared registry on PostgreSQL: psycopg 3, writers that queue.

    A write transaction (WRITE_OPTION) first takes a transaction-scoped advisory lock, so
    writes run one at a time as in the embedded database: versions are numbered without gaps
    or duplicates, concurrent openers migrate one after the other, and events commit in the
    order of their ids (the largest id is the change counter that servers poll).
    """
    defaults = {"connect_timeout": _CONNECT_TIMEOUT_S}
    engine = sa.create_engine(
        url,
        # A server holds connections for hours: one the database dropped (a restart, a
        # failover) is replaced when it is checked out rather than failing a request.
        pool_pre_ping=True,
        connect_args={key: value for key, value in defaults.items() if key not in url.query},
    )

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            # Like SQLite's busy_timeout: a writer waits this long for the lock, then fails.
            cursor.execute(f"SET lock_timeout = {_BUSY_TIMEOUT_MS}")
        dbapi_connection.commit()

    def on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(WRITE_OPTION, False):
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})")

    sa.event.listen(engine, "connect", on_connect)
    sa.event.listen(engine, "begin", on_begin)
    return engine


def upgrade(conn: Connection) -> None:
    """Run the Alembic migrations up to head on `conn`, inside its open transaction."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    # The option goes through configparser interpolation, where '%' is special.
    config.set_main_option("script_location", str(_MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = conn
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    if any(revision not in known for revision in revisions(conn)):
        raise Unsupported(
            "this registry was written by a newer modelport (its database schema is unknown "
            "here); upgrade modelport to use it"
        )
    command.upgrade(config, "head")


def revisions(conn: Connection) -> list[str]:
    """The schema revisions Alembic recorded in the database (none for a new database)."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return []
    return list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
