"""Where the inference log of a registry lives, and where records wait while it is away."""

from __future__ import annotations

from pathlib import Path

from modelport.config import InferenceLogSettings
from modelport.registry.database import postgres_url
from modelport.registry.location import is_url

LOG_FILE = "inference-log.sqlite"
"""The embedded inference log, beside a registry directory's own database."""
JOURNAL_DIR = "inference-journal"
SHARED_JOURNAL_DIR = ".modelport-journal"
"""The journal of a server whose registry is a database: local, in its working directory."""


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
