"""Typed settings, built once at the edge from flags, environment and a TOML file.

This module is the only reader of `os.environ`.
"""

from __future__ import annotations

import getpass
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from modelport.errors import InvalidInput

DEFAULT_REGISTRY = ".modelport"
REGISTRY_ENV = "MODELPORT_REGISTRY"
T = TypeVar("T")


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
LOG_FORMATS = ("auto", "json", "text")
"""The values `log_format` takes: auto = JSON lines unless the output is a terminal."""
OVERFLOW_POLICIES = ("shed", "drop")
"""What happens to inferences once the inference-log backlog is full."""
TRACE_EXPORTERS = ("none", "console", "otlp")


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Per-model overrides from a `[models.NAME]` table; None leaves the model's own choice."""

    batching: bool | None = None
    """Combine concurrent requests (default: on when the model has a batch dimension)."""
    max_batch_size: int | None = None
    """Most rows in one batch (default 64)."""
    max_batch_delay_ms: float | None = None
    """Milliseconds a batch may wait to fill under load (default 0: never wait)."""
    compiled: bool | None = None
    """Serve the compiled artifact when the version has one (default: yes)."""
    max_queue: int | None = None
    """Most requests waiting for or inside this model at once (default: the server's)."""
    log_sample_rate: float | None = None
    """Share of inferences written to the inference log, 0-1 (default 1: every one)."""
    log_redact: tuple[str, ...] = ()
    """Input and output names whose values the inference log replaces with "[redacted]"."""

    def __post_init__(self) -> None:
        if self.log_sample_rate is not None and not 0 <= self.log_sample_rate <= 1:
            raise InvalidInput(
                f"log_sample_rate must be between 0 and 1, got {self.log_sample_rate}"
            )
        if self.max_queue is not None and self.max_queue < 1:
            raise InvalidInput(f"max_queue must be at least 1, got {self.max_queue}")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise InvalidInput(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.max_batch_delay_ms is not None and not 0 <= self.max_batch_delay_ms <= 1000:
            raise InvalidInput(
                f"max_batch_delay_ms must be between 0 and 1000, got {self.max_batch_delay_ms}"
            )


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything `modelport serve` needs; fields match the `[serve]` table of the config file."""

    registry: str = DEFAULT_REGISTRY
    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 8081
    """gRPC port; 0 turns gRPC off."""
    workers: int = 1
    """Server processes sharing the port; models load once, before they fork."""
    log_level: str = "info"
    max_body_bytes: int = 64 * 1024 * 1024
    """Largest request body accepted, in bytes (413 past it)."""
    models: tuple[str, ...] = ()
    """Models to load at start (NAME or NAME:VERSION); empty = newest version of every model."""
    batching: bool = True
    """Adaptive batching for models that support it; False turns it off everywhere."""
    compiled: bool = True
    """Serve compiled artifacts where versions have them; False serves the originals."""
    log_format: str = "auto"
    """Log lines as "json", "text", or "auto" (JSON unless the output is a terminal)."""
    access_log: bool = True
    """One log record per request."""
    metrics: bool = True
    """Prometheus metrics at /metrics."""
    metrics_port: int = 0
    """Serve /metrics on this port instead of the REST port (0: on the REST port)."""
    inference_log: str = ""
    """Where every inference is recorded: a SQLite file path, a PostgreSQL URL, or "off".
    Default: inference-log.sqlite in a registry directory, or the registry's database."""
    inference_log_journal: str = ""
    """Local directory that holds records while the inference-log store is unreachable.
    Default: inference-journal in a registry directory, else ./.modelport-journal."""
    inference_log_capacity: int = 1_000_000
    """Most inference-log records held back (memory and journal) while the store is down."""
    inference_log_overflow: str = "shed"
    """Past the capacity: "shed" answers inferences 503 (nothing answered goes unlogged),
    "drop" answers them and drops their records (counted)."""
    trace_exporter: str = "none"
    """OpenTelemetry spans: "none", "console" (stdout) or "otlp" (to trace_endpoint)."""
    trace_endpoint: str = ""
    """OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces."""
    require_auth: bool = False
    """Every request but health checks needs an API key or token with the right scope."""
    allow_insecure: bool = False
    """Listen beyond loopback without --require-auth (only behind something that authenticates)."""
    tls_cert: str = ""
    """PEM certificate (chain) for REST and gRPC; with tls_key, the server speaks TLS only."""
    tls_key: str = ""
    """PEM private key of tls_cert."""
    tls_client_ca: str = ""
    """PEM CA bundle: clients must present a certificate it signed (mutual TLS)."""
    jwt_public_key: str = ""
    """PEM public key that verifies JWT bearer tokens (RS256, ES256, EdDSA)."""
    jwks_file: str = ""
    """Local JWKS file whose keys verify JWT bearer tokens (picked by `kid`)."""
    jwt_audience: str = ""
    """Required `aud` of JWT bearer tokens (empty: not checked)."""
    jwt_issuer: str = ""
    """Required `iss` of JWT bearer tokens (empty: not checked)."""
    jwt_scope_claim: str = "scope"
    """The JWT claim holding the token's scopes (space-separated or a list)."""
    max_elements: int = 16 * 1024 * 1024
    """Most tensor elements (all inputs together) in one inference request (413 past it)."""
    max_batch: int = 65536
    """Most rows (first dimension) of any input in one inference request (413 past it)."""
    max_queue: int = 1024
    """Most requests waiting for or inside one model at once in a server process; past it,
    requests are shed with 503 + Retry-After (gRPC RESOURCE_EXHAUSTED) instead of queueing."""
    request_timeout: float = 60.0
    """Seconds an inference may take before it is answered 504 / DEADLINE_EXCEEDED (0: no
    limit); a client's shorter `timeout` parameter or gRPC deadline wins."""
    rate_limit: float = 0.0
    """Requests a second each caller (API key, token subject, else address) may send on
    average, per server process; 0 turns rate limits off."""
    rate_burst: float = 0.0
    """Requests a caller may send at once before the rate applies (0: the rate, at least 1)."""
    model_settings: Mapping[str, ModelSettings] = field(default_factory=dict)
    """Per-model overrides, from `[models.NAME]` tables."""

    def __post_init__(self) -> None:
        if not 0 <= self.http_port <= 65535:
            raise InvalidInput(f"http_port must be 0-65535, got {self.http_port}")
        if not 0 <= self.grpc_port <= 65535:
            raise InvalidInput(
                f"grpc_port must be 0-65535 (0 turns gRPC off), got {self.grpc_port}"
            )
        if not 1 <= self.workers <= 256:
            raise InvalidInput(f"workers must be between 1 and 256, got {self.workers}")
        if self.max_body_bytes < 1024:
            raise InvalidInput("max_body_bytes must be at least 1024")
        for key, allowed in (
            ("log_level", LOG_LEVELS),
            ("log_format", LOG_FORMATS),
            ("inference_log_overflow", OVERFLOW_POLICIES),
            ("trace_exporter", TRACE_EXPORTERS),
        ):
            value = getattr(self, key)
            if value not in allowed:
                raise InvalidInput(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
        if not 0 <= self.metrics_port <= 65535:
            raise InvalidInput(f"metrics_port must be 0-65535, got {self.metrics_port}")
        if self.inference_log_capacity < 1:
            raise InvalidInput("inference_log_capacity must be at least 1")
        for key in ("max_queue", "max_elements", "max_batch"):
            if getattr(self, key) < 1:
                raise InvalidInput(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.request_timeout < 0:
            raise InvalidInput("request_timeout must not be negative (0 turns it off)")
        if self.rate_limit < 0 or self.rate_burst < 0:
            raise InvalidInput("rate_limit and rate_burst must not be negative")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InvalidInput("TLS needs both tls_cert and tls_key (--tls-cert and --tls-key)")
        if self.tls_client_ca and not self.tls_cert:
            raise InvalidInput("tls_client_ca (mutual TLS) needs TLS: add --tls-cert and --tls-key")
        if self.trace_exporter == "otlp" and not self.trace_endpoint:
            raise InvalidInput("trace_exporter = otlp needs trace_endpoint (an OTLP/HTTP URL)")

    def for_model(self, name: str) -> ModelSettings:
        """The overrides for `name` (all None when the config file has none)."""
        return self.model_settings.get(name, _NO_OVERRIDES)


_NO_OVERRIDES = ModelSettings()


def available_cores() -> int:
    """Cores this process may run on (respects taskset and cgroup CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # platforms without affinity
        return os.cpu_count() or 1


def parse_workers(value: str | int) -> int:
    """`auto` (one per available core) or a positive integer."""
    if value == "auto":
        return available_cores()
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"workers must be a number or 'auto', got {value!r}") from None


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
    flags: Mapping[str, Any], config_file: Path | None = None
) -> ServeSettings:
    """Merge defaults < config file < environment < flags (flags that are None are unset)."""
    values: dict[str, Any] = {}
    model_settings: dict[str, ModelSettings] = {}
    if config_file is not None:
        data = load_config_file(config_file)
        values.update(data.get("serve", {}))
        for name, table in data.get("models", {}).items():
            if not isinstance(table, dict):
                raise InvalidInput(f"[models.{name}] must be a table of settings")
            model_settings[name] = _typed(ModelSettings, table, f"[models.{name}]")
    if "workers" in values and isinstance(values["workers"], str):
        values["workers"] = parse_workers(values["workers"])
    env_registry = os.environ.get(REGISTRY_ENV)
    if env_registry:
        values["registry"] = env_registry
    values.update({k: v for k, v in flags.items() if v is not None})
    settings = _typed(ServeSettings, values, "[serve]")
    return replace(settings, model_settings=model_settings)


def _typed(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """`cls(**values)` after checking every key is a field and every value has its type."""
    hints = get_type_hints(cls)
    hints.pop("model_settings", None)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise InvalidInput(
            f"unknown setting(s) in {where}: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(hints))}"
        )
    checked: dict[str, Any] = {}
    for key, value in values.items():
        hint = hints[key]
        allowed = get_args(hint) if isinstance(hint, UnionType) else (hint,)
        if get_origin(hint) is tuple:
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise InvalidInput(f"setting {key!r} in {where} must be a list of strings")
            checked[key] = tuple(value)
            continue
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            wanted = " or ".join(_TYPE_NAMES[t] for t in allowed if t in _TYPE_NAMES)
            raise InvalidInput(f"setting {key!r} in {where} must be {wanted}, got {value!r}")
        checked[key] = value
    return cls(**checked)


_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
}
