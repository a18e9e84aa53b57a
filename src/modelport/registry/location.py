"""Where a registry lives: a directory (embedded SQLite) or a PostgreSQL URL, opened and migrated.

Nothing here repeats a password from a URL: messages and `database.display_location` mask it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from modelport.errors import InvalidInput, NotFound, NotReady, Unsupported
from modelport.registry.blobs import BlobStore
from modelport.registry.database import (
    ARTIFACTS_SETTING,
    DATABASE_FILE,
    HEAD_REVISION,
    POSTGRES_SCHEMES,
    URL_SCHEME,
    WRITE_OPTION,
    display_url,
    postgres_engine,
    postgres_url,
    revisions,
    settings_table,
    sqlite_engine,
    upgrade,
    without_secrets,
)

log = logging.getLogger("modelport.registry")

BLOBS_DIR: Final = "blobs"
_ARTIFACTS_NEEDED: Final = (
    "a new PostgreSQL registry needs a place for its artifacts: add "
    f"?{ARTIFACTS_SETTING}=/PATH to the URL, a directory that every replica reaches (it is "
    "recorded, so later opens may leave it out)"
)


def open_location(text: str, *, create: bool) -> tuple[Engine, BlobStore]:
    """The engine and artifact store of the registry at `text` (a directory or a URL)."""
    scheme = URL_SCHEME.match(text)
    if scheme is None:
        return _open_directory(text, create=create)
    return _open_database(text, scheme.group(1), create=create)


def is_url(text: str) -> bool:
    """Whether a registry location is a URL (a shared database) rather than a directory."""
    return URL_SCHEME.match(text) is not None


@contextmanager
def write_transaction(conn: Connection) -> Iterator[None]:
    """Run the block in a transaction on `conn` that takes the write lock at its start."""
    conn.execution_options(**{WRITE_OPTION: True})
    with conn.begin():
        yield


class Connections:
    """Connections to a registry database, from whichever process asks (before or after fork).

    A database that cannot be reached, or stays locked past the busy timeout, is NotReady:
    the client may retry, and nothing of the driver's reason (which may name the server)
    reaches the message.
    """

    __slots__ = ("_pid", "engine")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pid = os.getpid()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads."""
        with _reachable(), self._connect() as conn:
            yield conn

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A transaction that holds the database's write lock from its first statement."""
        with _reachable(), self._connect() as conn, write_transaction(conn):
            yield conn

    def _connect(self) -> Connection:
        if os.getpid() != self._pid:
            # Connections inherited across fork() belong to the parent: start a fresh pool
            # without closing them under the parent's feet.
            self.engine.dispose(close=False)
            self._pid = os.getpid()
        return self.engine.connect()


@contextmanager
def _reachable() -> Iterator[None]:
    try:
        yield
    except sa.exc.OperationalError:
        log.warning("the registry database cannot be reached", exc_info=True)
        raise NotReady(
            "the registry database cannot be reached right now; loaded models keep serving, "
            "retry later"
        ) from None


def _open_directory(text: str, *, create: bool) -> tuple[Engine, BlobStore]:
    """The embedded registry in directory `text`: its SQLite engine and its artifacts."""
    root = Path(text).expanduser().absolute()
    if not create and not (root / DATABASE_FILE).is_file():
        raise NotFound(_no_registry(text))
    try:
        _make_private_dir(root)
    except FileExistsError:
        raise InvalidInput(
            "the registry location is a file, not a directory; pass a directory path"
        ) from None
    except OSError as exc:
        raise InvalidInput(f"cannot create the registry directory: {exc.strerror}") from None
    engine = sqlite_engine(root / DATABASE_FILE)
    with _disposed_on_error(engine):
        _migrate(engine, _revisions(engine))
    return engine, BlobStore(root / BLOBS_DIR)


def _open_database(text: str, scheme: str, *, create: bool) -> tuple[Engine, BlobStore]:
    """The shared registry at database URL `text`: its engine and its artifacts."""
    if scheme.lower() not in POSTGRES_SCHEMES:
        raise Unsupported(_unsupported_scheme(scheme))
    url, artifacts = postgres_url(text)
    override = None if artifacts is None else _artifact_root(artifacts)
    engine = postgres_engine(url)
    with _disposed_on_error(engine):
        try:
            found = _revisions(engine)
            if not found:
                if not create:
                    raise NotFound(_no_registry(display_url(url)))
                if override is None:
                    raise InvalidInput(_ARTIFACTS_NEEDED)
            _migrate(engine, found)
            root = _recorded_artifact_root(engine, override)
        except sa.exc.DBAPIError as exc:
            # Unreachable server, missing database or rights, bad URL parameters, lock
            # timeouts: the driver's reason says which. Only the first is worth a retry.
            error = NotReady if isinstance(exc, sa.exc.OperationalError) else InvalidInput
            reason = without_secrets(" ".join(str(exc.orig).split()), url)
            raise error(
                f"cannot use the registry database {display_url(url)}: {reason}; check the "
                "URL, that PostgreSQL runs there, that the database exists and that the user "
                "may use it"
            ) from None
    return engine, BlobStore(root)


def _artifact_root(value: str) -> Path:
    """The `artifacts` parameter of a registry URL as a directory path."""
    scheme = URL_SCHEME.match(value)
    if scheme is not None:
        # Name only the scheme: an object-store URL may carry credentials.
        raise Unsupported(
            f"artifacts on an object store ({scheme.group(1)}://) are not supported yet; give "
            f"{ARTIFACTS_SETTING}=/PATH, a directory that every replica reaches (a shared mount)"
        )
    root = Path(value).expanduser()
    if not root.is_absolute():
        raise InvalidInput(
            f"the registry URL's {ARTIFACTS_SETTING} parameter must be an absolute path, the "
            "same for every process that opens the registry"
        )
    return root


def _recorded_artifact_root(engine: Engine, override: Path | None) -> Path:
    """`override`, else the artifact root recorded at creation; records `override` if none is."""
    # Imported here, where the engine has loaded it already: it costs every other start.
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    with engine.connect() as conn:
        recorded = conn.execute(
            sa.select(settings_table.c.value).where(settings_table.c.key == ARTIFACTS_SETTING)
        ).scalar()
        if recorded is None and override is not None:
            # Concurrent creators: the first one's root is recorded, each uses its own.
            conn.execute(
                pg_insert(settings_table)
                .values(key=ARTIFACTS_SETTING, value=str(override))
                .on_conflict_do_nothing()
            )
            conn.commit()
    if override is not None:
        return override
    if recorded is None:
        raise InvalidInput(_ARTIFACTS_NEEDED)
    return Path(recorded)


@contextmanager
def _disposed_on_error(engine: Engine) -> Iterator[None]:
    try:
        yield
    except BaseException:
        engine.dispose()
        raise


def _revisions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return revisions(conn)


def _migrate(engine: Engine, found: list[str]) -> None:
    """Upgrade the schema from the `found` revisions to HEAD_REVISION, if it is behind."""
    if found == [HEAD_REVISION]:
        return  # the common case, which never imports Alembic
    with engine.connect() as conn, write_transaction(conn):
        # Under the write lock: a concurrent opener that got here first has already
        # upgraded, and Alembic, reading the revision again, then does nothing.
        upgrade(conn)


def _no_registry(location: str) -> str:
    return (
        f"no registry at {location!r}; register a model with `modelport models push` "
        "or build the demo with `modelport demo`"
    )


def _make_private_dir(path: Path) -> None:
    """Create `path` (and parents) if missing; what is created here is private to the owner."""
    if path.is_dir():
        return
    if not path.parent.is_dir():
        _make_private_dir(path.parent)
    path.mkdir(mode=0o700, exist_ok=True)


def _unsupported_scheme(scheme: str) -> str:
    # Name only the scheme: the rest of a database URL may hold a password.
    if scheme.lower().startswith("postgres"):
        return f"the {scheme!r} driver is not supported; use postgresql:// (psycopg 3)"
    return (
        f"registry locations with the {scheme!r} scheme are not supported; pass a directory "
        "path or a postgresql:// URL"
    )
