"""Typed settings, built once at the edge from flags, environment and a TOML file.

This module is the only reader of `os.environ`. `ServeSettings` is made of one small frozen
settings object per concern (where the server listens, request limits, access, TLS, logging,
metrics, tracing, the inference log, the models), so each component is handed only its own.
Each field states its one default; `modelport.config_loader` maps the flat `[serve]` keys and
flags onto the fields and builds the settings.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

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


VERTEX_ENV: Final = {
    "AIP_HEALTH_ROUTE": "vertex_health_route",
    "AIP_PREDICT_ROUTE": "vertex_predict_route",
    "AIP_DEPLOYED_MODEL_ID": "vertex_deployed_model_id",
}
"""The variables Vertex AI sets for a custom container, and the `[serve]` keys they give."""


def environment() -> dict[str, str | int]:
    """The `[serve]` settings the environment gives: `registry` from $MODELPORT_REGISTRY; on
    Vertex AI the HTTP port from $AIP_HTTP_PORT and the routes of VERTEX_ENV."""
    values: dict[str, str | int] = {}
    registry = os.environ.get(REGISTRY_ENV)
    if registry:
        values["registry"] = registry
    port = os.environ.get("AIP_HTTP_PORT")
    if port:
        if not port.isdigit():
            raise InvalidInput(f"AIP_HTTP_PORT must be a port number, got {port!r}")
        values["http_port"] = int(port)
    for name, key in VERTEX_ENV.items():
        value = os.environ.get(name)
        if value:
            values[key] = value
    return values


SAGEMAKER_MODEL_DIR: Final = "/opt/ml/model"
"""Where SageMaker puts the model (model.tar.gz, unpacked) in a serving container."""
SAGEMAKER_MODEL_DIR_ENV: Final = "MODELPORT_SAGEMAKER_MODEL_DIR"
"""Names another directory to take for SageMaker's model directory (for tests and trials)."""
SAGEMAKER_PORT_ENV: Final = "SAGEMAKER_BIND_TO_PORT"
"""The port SageMaker asks a container to listen on, when not its default 8080."""
SAGEMAKER_PORT: Final = 8080
TRUST_PICKLE_ENV: Final = "MODELPORT_TRUST_PICKLE"
"""Set to 1 (or true, yes): what `--trust-pickle` says, for platforms that start the
container with fixed arguments (SageMaker runs it with `serve` alone)."""
_YES: Final = ("1", "true", "yes", "on")
_NO: Final = ("", "0", "false", "no", "off")


@dataclass(frozen=True, slots=True)
class SageMakerContainer:
    """What SageMaker's contract for a serving container gives: the model directory, the port."""

    model_dir: str
    port: int = SAGEMAKER_PORT


def sagemaker_container() -> SageMakerContainer | None:
    """SageMaker's contract when its model directory exists, else None.

    The directory is $MODELPORT_SAGEMAKER_MODEL_DIR, else /opt/ml/model; the port is
    $SAGEMAKER_BIND_TO_PORT, else 8080. InvalidInput when that variable is not a port number.
    """
    model_dir = os.environ.get(SAGEMAKER_MODEL_DIR_ENV) or SAGEMAKER_MODEL_DIR
    if not os.path.isdir(model_dir):
        return None
    port_text = os.environ.get(SAGEMAKER_PORT_ENV, "").strip()
    if not port_text:
        return SageMakerContainer(model_dir)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidInput(
            f"{SAGEMAKER_PORT_ENV} must be a port number (1-65535), got {port_text!r}"
        )
    return SageMakerContainer(model_dir, int(port_text))


def trust_pickle_from_environment() -> bool:
    """Whether $MODELPORT_TRUST_PICKLE says pickle-family artifacts are trusted."""
    value = os.environ.get(TRUST_PICKLE_ENV, "").strip().lower()
    if value in _YES:
        return True
    if value in _NO:
        return False
    raise InvalidInput(f"{TRUST_PICKLE_ENV} must be 1 or 0 (true/false, yes/no), got {value!r}")


LOG_LEVELS = ("debug", "info", "warning", "error")
"""The values `log_level` takes."""
LOG_FORMATS = ("auto", "json", "text")
"""The values `log_format` takes: auto = JSON lines unless the output is a terminal."""
OVERFLOW_POLICIES = ("shed", "drop")
"""What happens to inferences once the inference-log backlog is full."""
TRACE_EXPORTERS = ("none", "console", "otlp")
METRICS_TLS_MODES = ("mtls", "tls", "plain")
"""How a separate metrics port may serve: client certificates required, server certificate
only, or plain HTTP."""
DEFAULT_MAX_QUEUE: Final = 1024
"""Most requests in flight for one model in a server process when nothing else says."""


def _setting(default: T, *, key: str = "", shown: str = "") -> T:
    """A settings field whose flat name (`[serve]` key, flag) is `key` when it is not the
    field's own name; `shown` is how help states the default when the value alone cannot."""
    return field(default=default, metadata={"key": key, "shown": shown})


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInput(f"{key} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Per-model overrides from a `[models.NAME]` table; None leaves the model's own choice."""

    batching: bool | None = None
    """Combine concurrent requests (default: on when the model has a batch dimension)."""
    max_batch_size: int | None = None
    """Most rows in one batch (default: model_policy.DEFAULT_MAX_BATCH_SIZE)."""
    max_batch_delay_ms: float | None = None
    """Milliseconds a batch may wait to fill under load; 0: never wait (default:
    model_policy.DEFAULT_MAX_BATCH_DELAY_MS)."""
    compiled: bool | None = None
    """Serve the compiled artifact when the version has one (default: yes)."""
    max_queue: int | None = None
    """Most requests waiting for or inside this model at once (default: the server's)."""
    log_sample_rate: float | None = None
    """Share of inferences written to the inference log, 0-1 (default: every one)."""
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
class ListenSettings:
    """Where the server listens, and how many processes share its ports."""

    host: str = _setting("127.0.0.1", shown="127.0.0.1 (loopback only)")
    http_port: int = 8080
    grpc_port: int = 8081
    """gRPC port; 0 turns gRPC off."""
    workers: int = 1
    """Server processes sharing the port; models load once, before they fork."""

    def __post_init__(self) -> None:
        if not 0 <= self.http_port <= 65535:
            raise InvalidInput(f"http_port must be 0-65535, got {self.http_port}")
        if not 0 <= self.grpc_port <= 65535:
            raise InvalidInput(
                f"grpc_port must be 0-65535 (0 turns gRPC off), got {self.grpc_port}"
            )
        if not 1 <= self.workers <= 256:
            raise InvalidInput(f"workers must be between 1 and 256, got {self.workers}")


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """How much one request may ask for: its body, its tensors, its time."""

    max_body_bytes: int = 64 * 1024 * 1024
    """Largest request body accepted, in bytes (413 past it)."""
    max_elements: int = 16 * 1024 * 1024
    """Most tensor elements (all inputs together) in one inference request (413 past it)."""
    max_batch: int = 65536
    """Most rows (first dimension) of any input in one inference request (413 past it)."""
    request_timeout: float = 60.0
    """Seconds an inference may take before it is answered 504 / DEADLINE_EXCEEDED (0: no
    limit); a client's shorter `timeout` parameter or gRPC deadline wins."""

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise InvalidInput("max_body_bytes must be at least 1024")
        for key in ("max_elements", "max_batch"):
            if getattr(self, key) < 1:
                raise InvalidInput(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.request_timeout < 0:
            raise InvalidInput("request_timeout must not be negative (0 turns it off)")


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Who may call, and how often: credentials, exposure beyond loopback, rate limits."""

    require_auth: bool = False
    """Every request but health checks needs an API key or token with the right scope."""
    allow_insecure: bool = False
    """Listen beyond loopback without --require-auth (only behind something that authenticates)."""
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
    rate_limit: float = _setting(0.0, shown="0 (no limit)")
    """Requests a second each caller (API key, token subject, else address) may send on
    average, per server process; 0 turns rate limits off."""
    rate_burst: float = _setting(0.0, shown="the rate")
    """Requests a caller may send at once before the rate applies (0: the rate, at least 1)."""

    def __post_init__(self) -> None:
        if self.rate_limit < 0 or self.rate_burst < 0:
            raise InvalidInput("rate_limit and rate_burst must not be negative")


_ORIGIN = re.compile(r"https?://(\[[0-9a-fA-F:.]+\]|[^\s/:?#\[\]@]+)(:\d{1,5})?")
"""An origin as browsers send it: scheme, host and optional port, nothing after."""
_HOST = re.compile(r"\[[0-9a-fA-F:.]+\]|[0-9a-fA-F]*:[0-9a-fA-F]*:[0-9a-fA-F:.]*|[^\s/:?#\[\]@]+")
"""A host name or address (IPv6 with or without brackets), without a port."""


@dataclass(frozen=True, slots=True)
class BrowserSettings:
    """Which Host names the REST API answers to and which web pages (Origins) may call it."""

    allowed_hosts: tuple[str, ...] = _setting((), shown="loopback names and the bound address")
    """Further names the server answers to (a Host header elsewhere gets 403); "*": any, for
    a proxy that checks names itself."""
    cors_origins: tuple[str, ...] = _setting((), shown="none (only the server's own pages)")
    """Origins (https://app.example:8443) whose web pages may call the API (CORS); "*": any."""

    def __post_init__(self) -> None:
        for host in self.allowed_hosts:
            if host != "*" and not _HOST.fullmatch(host):
                raise InvalidInput(
                    f"allowed_hosts takes host names or addresses without a port (the port is "
                    f"not checked) or *, got {host!r}"
                )
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin.rstrip("/")):
                raise InvalidInput(
                    "cors_origins takes origins like https://app.example:8443 (scheme, host and "
                    f"port, no path) or *, got {origin!r}"
                )


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The TLS material REST, gRPC and the metrics port serve with; empty: plain text."""

    cert: str = _setting("", key="tls_cert")
    """PEM certificate (chain) for REST and gRPC; with `key`, the server speaks TLS only."""
    key: str = _setting("", key="tls_key")
    """PEM private key of `cert`."""
    client_ca: str = _setting("", key="tls_client_ca")
    """PEM CA bundle: clients must present a certificate it signed (mutual TLS)."""

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise InvalidInput("TLS needs both tls_cert and tls_key (--tls-cert and --tls-key)")
        if self.client_ca and not self.cert:
            raise InvalidInput("tls_client_ca (mutual TLS) needs TLS: add --tls-cert and --tls-key")


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """The server's own log lines, the access log among them."""

    level: str = _setting("info", key="log_level")
    format: str = _setting("auto", key="log_format")
    """Log lines as "json", "text", or "auto" (JSON unless the output is a terminal)."""
    access_log: bool = True
    """One log record per request."""

    def __post_init__(self) -> None:
        _one_of("log_level", self.level, LOG_LEVELS)
        _one_of("log_format", self.format, LOG_FORMATS)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Prometheus metrics at /metrics, and the port that serves them with the health checks."""

    enabled: bool = _setting(True, key="metrics")
    port: int = _setting(0, key="metrics_port", shown="0 (on the REST port)")
    """Serve /metrics (and the health checks) on this port instead of the REST port."""
    tls: str = _setting(
        "",
        key="metrics_tls",
        shown="as the REST port (mtls with --tls-client-ca, tls with --tls-cert, else plain)",
    )
    """How `port` serves: "mtls" (client certificates, as the REST port under
    --tls-client-ca), "tls" (server certificate only) or "plain"; empty: as the REST port."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidInput(f"metrics_port must be 0-65535, got {self.port}")
        if self.tls:
            _one_of("metrics_tls", self.tls, METRICS_TLS_MODES)
            if not self.port:
                raise InvalidInput(
                    "metrics_tls (--metrics-tls) applies to a metrics port of its own: add "
                    "--metrics-port (on the REST port, /metrics is served as the API is)"
                )


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """OpenTelemetry spans for request, queue, batch and predict."""

    exporter: str = _setting("none", key="trace_exporter")
    """"none", "console" (stdout) or "otlp" (to `endpoint`)."""
    endpoint: str = _setting("", key="trace_endpoint")
    """OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces."""

    def __post_init__(self) -> None:
        _one_of("trace_exporter", self.exporter, TRACE_EXPORTERS)
        if self.exporter == "otlp" and not self.endpoint:
            raise InvalidInput("trace_exporter = otlp needs trace_endpoint (an OTLP/HTTP URL)")


@dataclass(frozen=True, slots=True)
class InferenceLogSettings:
    """Where every inference is recorded, and what happens while that store is away."""

    location: str = _setting(
        "",
        key="inference_log",
        shown="inference-log.sqlite in the registry directory (a PostgreSQL registry: its "
        "database)",
    )
    """A SQLite file path, a PostgreSQL URL, or "off"."""
    journal: str = _setting(
        "",
        key="inference_log_journal",
        shown="inference-journal in the registry directory, else ./.modelport-journal",
    )
    """Local directory that holds records while the inference-log store is unreachable."""
    capacity: int = _setting(1_000_000, key="inference_log_capacity")
    """Most inference-log records held back (memory and journal) while the store is down."""
    overflow: str = _setting("shed", key="inference_log_overflow")
    """Past the capacity: "shed" answers inferences 503 (nothing answered goes unlogged),
    "drop" answers them and drops their records (counted)."""

    def __post_init__(self) -> None:
        _one_of("inference_log_overflow", self.overflow, OVERFLOW_POLICIES)
        if self.capacity < 1:
            raise InvalidInput("inference_log_capacity must be at least 1")


@dataclass(frozen=True, slots=True)
class ModelsSettings:
    """Which models are served, and the server's defaults for how each one is.

    `modelport.model_policy` resolves one model's policy from these, its `[models.NAME]`
    overrides and its registry metadata.
    """

    selection: tuple[str, ...] = _setting(
        (),
        key="models",
        shown="every model, its newest version and every version an alias names",
    )
    """Models to load at start (NAME or NAME:VERSION); empty = newest version of every model."""
    batching: bool = _setting(True, shown="on (tune per model in the config file)")
    """Adaptive batching for models that support it; False turns it off everywhere."""
    compiled: bool = True
    """Serve compiled artifacts where versions have them; False serves the originals."""
    max_queue: int = _setting(
        DEFAULT_MAX_QUEUE, shown=f"{DEFAULT_MAX_QUEUE} (per model: max_queue in [models.NAME])"
    )
    """Most requests waiting for or inside one model at once in the server, all its workers
    together; past it, requests are shed with 503 + Retry-After (gRPC RESOURCE_EXHAUSTED)
    instead of queueing."""
    overrides: Mapping[str, ModelSettings] = field(
        default_factory=dict, metadata={"table": "[models.NAME]"}
    )
    """Per-model overrides, from `[models.NAME]` tables (not keys of `[serve]`)."""

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise InvalidInput(f"max_queue must be at least 1, got {self.max_queue}")


_ROUTE: Final = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


@dataclass(frozen=True, slots=True)
class ProtocolSettings:
    """Where the cloud platforms' protocols (Vertex AI, Azure ML) are answered, and for which
    model when their paths name none ("": the only model served)."""

    vertex_health_route: str = "/vertex/health"
    """Vertex AI's health check ($AIP_HEALTH_ROUTE on Vertex)."""
    vertex_predict_route: str = "/vertex/predict"
    """Vertex AI's predict route ($AIP_PREDICT_ROUTE on Vertex)."""
    vertex_model: str = ""
    """The model the Vertex predict route answers with."""
    vertex_deployed_model_id: str = ""
    """The `deployedModelId` of Vertex answers ($AIP_DEPLOYED_MODEL_ID on Vertex)."""
    azure_scoring_route: str = "/score"
    """Azure ML's scoring route (the deployment's scoring_route)."""
    azure_liveness_route: str = "/"
    """Azure ML's liveness probe (the deployment's liveness_route)."""
    azure_readiness_route: str = "/ready"
    """Azure ML's readiness probe (the deployment's readiness_route)."""
    azure_model: str = ""
    """The model the Azure scoring route answers with."""

    def __post_init__(self) -> None:
        for key in (
            "vertex_health_route",
            "vertex_predict_route",
            "azure_scoring_route",
            "azure_liveness_route",
            "azure_readiness_route",
        ):
            route = getattr(self, key)
            if not _ROUTE.fullmatch(route) or "//" in route:
                raise InvalidInput(
                    f"{key} must be a URL path starting with / (no braces, query or "
                    f"fragment), got {route!r}"
                )


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything `modelport serve` needs, one group per concern."""

    registry: str = _setting(DEFAULT_REGISTRY, shown=f"${REGISTRY_ENV}, else ./{DEFAULT_REGISTRY}")
    listen: ListenSettings = field(default_factory=ListenSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    browser: BrowserSettings = field(default_factory=BrowserSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    inference_log: InferenceLogSettings = field(default_factory=InferenceLogSettings)
    models: ModelsSettings = field(default_factory=ModelsSettings)
    protocols: ProtocolSettings = field(default_factory=ProtocolSettings)

    def __post_init__(self) -> None:
        # The one check across groups: the metrics port's TLS comes from the TLS settings.
        mode = self.metrics.tls
        if mode in ("mtls", "tls") and not self.tls.cert:
            raise InvalidInput(
                f"metrics_tls = {mode} needs TLS: add --tls-cert and --tls-key "
                "(or --metrics-tls plain)"
            )
        if mode == "mtls" and not self.tls.client_ca:
            raise InvalidInput(
                "metrics_tls = mtls needs client certificates: add --tls-client-ca "
                "(or --metrics-tls tls for server-only TLS)"
            )


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
