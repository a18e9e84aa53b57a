"""Where an inference log lives: the store for a location, and a registry's default locations.

This is the one module that knows every store: the stores build on `inference_log.store`, and
this picks one of them for a SQLite path or a PostgreSQL URL.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from modelport.config import InferenceLogSettings
from modelport.errors import InvalidInput
from modelport.inference_log.store import DEFAULT_BUSY_TIMEOUT, LogStore
from modelport.registry.database import POSTGRES_SCHEMES, display_location, postgres_url
from modelport.registry.location import is_url

LOG_FILE = "inference-log.sqlite"
"""The embedded inference log, beside a registry directory's own database."""
JOURNAL_DIR = "inference-journal"
SHARED_JOURNAL_DIR = ".modelport-journal"
"""The journal of a server whose registry is a database: local, in its working directory."""
_DSN: Final = re.compile(r"\s*(host|dbname|user|port|password|service)\s*=")


def open_store(
    target: str, *, lazy: bool = False, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
) -> LogStore:
    """The store at `target`: a postgresql:// URL, else the path of a SQLite file (created).

    The tables are created when missing. Raises NotReady when the store cannot be opened,
    unless `lazy`, which defers connecting (and any error) to the first call.
    """
    # Imported here: psycopg loads only when a PostgreSQL store is used.
    from modelport.inference_log.postgres import PostgresStore
    from modelport.inference_log.sqlite import SQLiteStore

    scheme = urlsplit(target).scheme.lower() if "://" in target else ""
    if scheme in POSTGRES_SCHEMES:
        pg = PostgresStore(target)
        return pg if lazy else pg.connect()
    if scheme:
        raise InvalidInput(
            f"the inference log location {display_location(target)!r} has an unknown scheme; "
            "give a SQLite file path or a postgresql:// URL"
        )
    if _DSN.match(target):
        # A libpq "key=value" string would otherwise become a SQLite file of that name.
        raise InvalidInput(
            "the inference log location looks like a PostgreSQL key=value string; give it as a "
            "postgresql://USER@HOST:PORT/DATABASE URL, or a SQLite file path"
        )
    lite = SQLiteStore(Path(target).expanduser().absolute(), busy_timeout=busy_timeout)
    return lite if lazy else lite.connect()


def inference_log_targets(registry: str, settings: InferenceLogSettings) -> tuple[str, Path]:
    """Where the inference log of `registry` is stored ("" when off) and its local journal."""
    shared = is_url(registry)
    if settings.location == "off":
        target = ""
    elif settings.location:
        target = settings.location
    elif shared:
        url = postgres_url(registry)[0].set(drivername="postgresql")
        target = url.render_as_string(hide_password=False)
    else:
        target = str(Path(registry).expanduser() / LOG_FILE)
    if settings.journal:
        journal = Path(settings.journal).expanduser()
    elif shared:
        journal = Path(SHARED_JOURNAL_DIR)
    else:
        journal = Path(registry).expanduser() / JOURNAL_DIR
    return target, journal
