"""Typed settings, built once at the edge from flags, environment and a TOML file.

This module is the only reader of `os.environ`.
"""

from __future__ import annotations

import getpass
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from modelport.errors import InvalidInput

DEFAULT_REGISTRY = ".modelport"
REGISTRY_ENV = "MODELPORT_REGISTRY"


def registry_location(flag: str | None) -> str:
    """The registry to use: the flag, else $MODELPORT_REGISTRY, else ./.modelport."""
    return flag or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY


def current_user() -> str:
    """Who is acting, as `user@host`, for provenance records."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


LOG_LEVELS = ("debug", "info", "warning", "error")
"""The values `log_level` takes."""


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything `modelport serve` needs; fields match the `[serve]` table of the config file."""

    registry: str = DEFAULT_REGISTRY
    host: str = "127.0.0.1"
    http_port: int = 8080
    log_level: str = "info"
    max_body_bytes: int = 64 * 1024 * 1024
    """Largest request body accepted, in bytes (413 past it)."""
    models: tuple[str, ...] = field(default_factory=tuple)
    """Models to load at start (NAME or NAME:VERSION); empty = newest version of every model."""

    def __post_init__(self) -> None:
        if not 0 <= self.http_port <= 65535:
            raise InvalidInput(f"http_port must be 0-65535, got {self.http_port}")
        if self.max_body_bytes < 1024:
            raise InvalidInput("max_body_bytes must be at least 1024")
        if self.log_level not in LOG_LEVELS:
            raise InvalidInput(
                f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )


def load_config_file(path: Path) -> dict[str, Any]:
    """The `[serve]` table of a TOML config file; InvalidInput when it cannot be read."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise InvalidInput(f"cannot read config file {path.name!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"config file {path.name!r} is not valid TOML: {exc}") from None
    serve = data.get("serve", {})
    if not isinstance(serve, dict):
        raise InvalidInput("the config file's [serve] entry must be a table")
    return serve


def build_serve_settings(
    flags: Mapping[str, Any], config_file: Path | None = None
) -> ServeSettings:
    """Merge defaults < config file < environment < flags (flags that are None are unset)."""
    known = {f.name for f in fields(ServeSettings)}
    values: dict[str, Any] = {}
    if config_file is not None:
        file_values = load_config_file(config_file)
        unknown = sorted(set(file_values) - known)
        if unknown:
            raise InvalidInput(
                f"unknown setting(s) in [serve]: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        values.update(file_values)
    env_registry = os.environ.get(REGISTRY_ENV)
    if env_registry:
        values["registry"] = env_registry
    values.update({k: v for k, v in flags.items() if v is not None and k in known})
    defaults = ServeSettings()
    for key, value in values.items():
        expected = type(getattr(defaults, key))
        if expected is tuple and isinstance(value, list | tuple):
            values[key] = tuple(str(v) for v in value)
        elif not isinstance(value, expected) or isinstance(value, bool) is not (expected is bool):
            raise InvalidInput(f"setting {key!r} must be {_TYPE_NAMES[expected]}, got {value!r}")
    return replace(defaults, **values)


_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    tuple: "a list of strings",
}
