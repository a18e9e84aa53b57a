"""One model's serving policy, resolved once: its settings, then its registry metadata, then
the default.

The server's defaults and the `[models.NAME]` overrides come from the settings
(`ModelsSettings`); the registry metadata travels with each version (`models push --meta
KEY=VALUE`). A value that cannot be used, from either, is an InvalidInput that names the key,
the value and what is allowed, and the model does not load; nothing is clamped or ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modelport.config import ModelSettings, ModelsSettings
from modelport.errors import InvalidInput

DEFAULT_MAX_BATCH_SIZE = 64
"""Most rows in one batch when neither the settings nor the registry metadata say."""
DEFAULT_MAX_BATCH_DELAY_MS = 2.0
"""Milliseconds a batch may wait to fill when neither the settings nor the metadata say."""
DEFAULT_LOG_SAMPLE_RATE = 1.0
"""Share of inferences the inference log records when nothing says: every one."""


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """How one model is served, every override applied."""

    compiled: bool
    """Serve a version's compiled artifact when it has one."""
    max_queue: int
    """Most requests waiting for or inside the model at once, all of the server's workers
    together."""
    batching: bool | None = None
    """False: never batch; True: batch whenever the signature has a batch dimension; None:
    only when the runtime is row-independent too."""
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_batch_delay_ms: float = DEFAULT_MAX_BATCH_DELAY_MS
    log_sample_rate: float = DEFAULT_LOG_SAMPLE_RATE
    """Share of the model's inferences written to the inference log, 0-1."""
    log_redact: frozenset[str] = frozenset()
    """Input and output names whose values the inference log replaces with "[redacted]"."""


def model_policy(models: ModelsSettings, name: str, metadata: Mapping[str, Any]) -> ModelPolicy:
    """The policy of model `name`, whose version carries registry `metadata`.

    Each setting comes from `[models.NAME]`, else from the metadata, else from the default;
    names to redact come from both. `--no-batching` turns batching off whatever else says.
    InvalidInput when a metadata value that would be used is not valid (a value the config
    file overrides is not read, so overriding it is a way out).
    """
    overrides = models.overrides.get(name, _NO_OVERRIDES)
    chosen: dict[str, Any] = {}
    for key in ("batching", "max_batch_size", "max_batch_delay_ms", "log_sample_rate"):
        value = getattr(overrides, key)
        if value is None and metadata.get(key) is not None:
            value = _registered(name, key, metadata[key])
        if value is not None:
            chosen[key] = value
    if not models.batching:
        chosen["batching"] = False
    redact = set(overrides.log_redact)
    if metadata.get("log_redact") is not None:
        redact.update(_registered(name, "log_redact", metadata["log_redact"]))
    return ModelPolicy(
        compiled=models.compiled if overrides.compiled is None else overrides.compiled,
        max_queue=overrides.max_queue or models.max_queue,
        log_redact=frozenset(redact),
        **chosen,
    )


_NO_OVERRIDES = ModelSettings()


def _registered(name: str, key: str, raw: Any) -> Any:
    """Metadata value `raw` of `key`, parsed and checked by the config file's own rules."""
    parse, kind = _PARSERS[key]
    try:
        value = parse(raw)
        ModelSettings(**{key: value})
    except (TypeError, ValueError):
        problem = f"{key} must be {kind}, got {raw!r}"
    except InvalidInput as exc:
        problem = exc.message
    else:
        return value
    raise InvalidInput(
        f"registry metadata of model {name!r} is not valid: {problem}; push a version with a "
        f"valid `--meta {key}=...`, or set {key} in [models.{name}] of the config file"
    )


def _boolean(raw: Any) -> bool:
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


def _names(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        return tuple(n.strip() for n in raw.split(",") if n.strip())
    if isinstance(raw, list):
        return tuple(str(n) for n in raw)
    raise TypeError(type(raw).__name__)


_PARSERS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "batching": (_boolean, "true or false"),
    "max_batch_size": (int, "an integer"),
    "max_batch_delay_ms": (float, "a number"),
    "log_sample_rate": (float, "a number"),
    "log_redact": (_names, "a list of names or a comma-separated string"),
}
