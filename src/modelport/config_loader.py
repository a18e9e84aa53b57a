"""The flat sources of the serve settings, merged and typed: defaults < config file <
environment < flags.

The config file's `[serve]` table and the flags are flat (`http_port`, `tls_cert`, ...); each
flat key names one field of one group of `ServeSettings`, and that field states the key's
one default, which help texts show (`shown_default`). `[models.NAME]` tables become
`ModelSettings`.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import UnionType
from typing import Any, get_args, get_origin, get_type_hints

from modelport.config import ModelSettings, ServeSettings, environment, parse_workers
from modelport.errors import InvalidInput

SettingsField = tuple[str, "dataclasses.Field[Any]", Any]
"""Where a flat key lives: the group's name in ServeSettings ("" for a top-level field), the
field, and the field's type."""


@cache
def serve_keys() -> dict[str, SettingsField]:
    """Every flat `[serve]` key (and flag name) -> the group field it sets."""
    keys: dict[str, SettingsField] = {}
    top_hints = get_type_hints(ServeSettings)
    for top in dataclasses.fields(ServeSettings):
        group = top_hints[top.name]
        if not dataclasses.is_dataclass(group):
            keys[top.name] = ("", top, group)
            continue
        hints = get_type_hints(group)
        for item in dataclasses.fields(group):
            if "table" not in item.metadata:
                keys[item.metadata.get("key") or item.name] = (top.name, item, hints[item.name])
    return keys


def serve_default(key: str) -> Any:
    """The default of the flat `[serve]` key `key`."""
    item = serve_keys()[key][1]
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return item.default


def shown_default(key: str) -> str:
    """The default of `key` as help states it ("on", "8080", ...); "" when there is none to
    state (an empty path or URL)."""
    shown: str = serve_keys()[key][1].metadata.get("shown", "")
    value = serve_default(key)
    if shown:
        return shown
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value in ("", ()) else str(value)


def load_config_file(path: Path) -> dict[str, Any]:
    """The parsed TOML config file; InvalidInput when it cannot be read or has unknown tables."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise InvalidInput(f"cannot read config file {path.name!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"config file {path.name!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"serve", "models"})
    if unknown:
        raise InvalidInput(
            f"unknown table(s) {', '.join(unknown)} in the config file; "
            "use [serve] and [models.NAME]"
        )
    for key in ("serve", "models"):
        if not isinstance(data.get(key, {}), dict):
            raise InvalidInput(f"the config file's [{key}] entry must be a table")
    return data


def build_serve_settings(
    flags: Mapping[str, Any],
    config_file: Path | None = None,
    *,
    platform: Mapping[str, Any] | None = None,
) -> ServeSettings:
    """Merge defaults < config file < platform < environment < flags (flags that are None
    are unset).

    `flags`, `platform` (what a hosting platform's contract asks for, such as SageMaker's
    port) and the config file's `[serve]` table are flat (`http_port`, `tls_cert`, ...);
    each key lands in its group.
    """
    values: dict[str, Any] = {}
    overrides: dict[str, ModelSettings] = {}
    if config_file is not None:
        data = load_config_file(config_file)
        values.update(data.get("serve", {}))
        for name, table in data.get("models", {}).items():
            if not isinstance(table, dict):
                raise InvalidInput(f"[models.{name}] must be a table of settings")
            overrides[name] = model_settings(table, f"[models.{name}]")
    if "workers" in values and isinstance(values["workers"], str):
        values["workers"] = parse_workers(values["workers"])
    values.update(platform or {})
    values.update(environment())
    values.update({k: v for k, v in flags.items() if v is not None})
    return _serve_settings(values, overrides)


def registry_given(flags: Mapping[str, Any], config_file: Path | None = None) -> bool:
    """Whether the flags, the environment or the config file's `[serve]` table name a registry."""
    if flags.get("registry") is not None or "registry" in environment():
        return True
    return config_file is not None and "registry" in load_config_file(config_file).get("serve", {})


def model_settings(values: Mapping[str, Any], where: str) -> ModelSettings:
    """A `[models.NAME]` table (or what stands for one) as ModelSettings; InvalidInput names
    `where` for an unknown key or a value of the wrong type."""
    hints = get_type_hints(ModelSettings)
    _known(values, hints, where)
    return ModelSettings(**{k: _checked(k, v, hints[k], where) for k, v in values.items()})


def _serve_settings(
    values: Mapping[str, Any], overrides: dict[str, ModelSettings]
) -> ServeSettings:
    keys = serve_keys()
    _known(values, keys, "[serve]")
    top: dict[str, Any] = {}
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        group, item, hint = keys[key]
        checked = _checked(key, value, hint, "[serve]")
        if group:
            grouped.setdefault(group, {})[item.name] = checked
        else:
            top[item.name] = checked
    grouped.setdefault("models", {})["overrides"] = overrides
    types = get_type_hints(ServeSettings)
    # Built in ServeSettings' field order, so the first invalid group reports first.
    for group in (f.name for f in dataclasses.fields(ServeSettings)):
        if group in grouped:
            top[group] = types[group](**grouped[group])
    return ServeSettings(**top)


def _known(values: Mapping[str, Any], known: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InvalidInput(
            f"unknown setting(s) in {where}: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )


def _checked(key: str, value: Any, hint: Any, where: str) -> Any:
    """`value` when it has type `hint` (ints are numbers, lists of strings tuples)."""
    allowed = get_args(hint) if isinstance(hint, UnionType) else (hint,)
    if get_origin(hint) is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise InvalidInput(f"setting {key!r} in {where} must be a list of strings")
        return tuple(value)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        wanted = " or ".join(_TYPE_NAMES[t] for t in allowed if t in _TYPE_NAMES)
        raise InvalidInput(f"setting {key!r} in {where} must be {wanted}, got {value!r}")
    return value


_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
}
