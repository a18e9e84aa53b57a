"""`modelport serve` and `modelport demo`."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click

from modelport.cli.options import (
    file_option,
    option_group,
    registry_option,
    reported,
    setting_option,
)
from modelport.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    METRICS_TLS_MODES,
    OVERFLOW_POLICIES,
    TRACE_EXPORTERS,
    TRUST_PICKLE_ENV,
    current_user,
    parse_workers,
    registry_location,
    sagemaker_container,
    trust_pickle_from_environment,
)
from modelport.config_loader import build_serve_settings, registry_given
from modelport.errors import InvalidInput

model_options = option_group(
    [
        setting_option(
            "batching",
            "--batching/--no-batching",
            help="Combine concurrent requests into one model call where the model allows.",
        ),
        setting_option(
            "compiled",
            "--compiled/--no-compiled",
            help="Serve a version's compiled (ONNX) artifact when it has one.",
        ),
        file_option(
            "--config",
            "config_file",
            help="TOML file with a [serve] table of these settings and [models.NAME] tables; "
            "flags override it.",
        ),
    ]
)
"""How the served models run: batching, compiled artifacts, the config file (serve, stream)."""

observability_options = option_group(
    [
        setting_option(
            "log_level", "--log-level", type=click.Choice(LOG_LEVELS), help="Log level."
        ),
        setting_option(
            "log_format",
            "--log-format",
            type=click.Choice(LOG_FORMATS),
            help="Log lines as JSON or text; auto = JSON unless the output is a terminal.",
        ),
        setting_option(
            "access_log",
            "--access-log/--no-access-log",
            help="One log record per request (id, model, version, status, latency).",
        ),
        setting_option(
            "metrics",
            "--metrics/--no-metrics",
            help="Prometheus metrics at /metrics, added up over all workers.",
        ),
        setting_option(
            "metrics_port",
            "--metrics-port",
            type=int,
            help="Serve /metrics and the health checks on this port instead of the REST port.",
        ),
        setting_option(
            "inference_log",
            "--inference-log",
            metavar="PATH|URL|off",
            help="Where every inference is recorded: a SQLite file, a postgresql:// URL, or off.",
        ),
        setting_option(
            "inference_log_journal",
            "--inference-log-journal",
            metavar="DIR",
            help="Local directory holding records while the inference-log store is unreachable.",
        ),
        setting_option(
            "inference_log_capacity",
            "--inference-log-capacity",
            type=int,
            help="Most records held back while the store is unreachable.",
        ),
        setting_option(
            "inference_log_overflow",
            "--inference-log-overflow",
            type=click.Choice(OVERFLOW_POLICIES),
            help="Past the capacity: shed (answer 503, so nothing answered goes unrecorded) or "
            "drop (answer, drop the record and count it).",
        ),
        setting_option(
            "trace_exporter",
            "--trace-exporter",
            type=click.Choice(TRACE_EXPORTERS),
            help="OpenTelemetry spans for request, queue, batch and predict (needs the otel "
            "extra): console prints them, otlp sends them to --trace-endpoint.",
        ),
        setting_option(
            "trace_endpoint",
            "--trace-endpoint",
            metavar="URL",
            help="OTLP/HTTP traces endpoint, e.g. http://localhost:4318/v1/traces.",
        ),
    ]
)
"""Logs, metrics, the inference log and traces (serve, stream)."""


@click.command()
@click.argument(
    "paths", metavar="[PATH]...", nargs=-1, type=click.Path(exists=True, path_type=Path)
)
@click.option(
    "--model-name",
    metavar="NAME",
    default=None,
    help="With a PATH that holds one model: serve it under NAME. Default: the file's stem "
    "(iris for iris.skops; an MLflow model directory: its name).",
)
@click.option(
    "--format",
    "fmt",
    metavar="F",
    default=None,
    help="With a PATH that holds one model file: its format, as `models push --format` takes "
    "it. Default: told from the file's name and content.",
)
@click.option(
    "--trust-pickle",
    is_flag=True,
    help="With PATH: allow pickle, joblib and cloudpickle files, as `models push --trust-pickle`"
    f" does (or set {TRUST_PICKLE_ENV}=1). Loading one runs code: only for files you trust.",
)
@registry_option
@setting_option("host", "--host", help="Address to bind.")
@setting_option("http_port", "--http-port", type=int, help="REST port (0 picks a free one).")
@setting_option("grpc_port", "--grpc-port", type=int, help="gRPC port; 0 turns gRPC off.")
@setting_option(
    "models",
    "--model",
    multiple=True,
    metavar="NAME[:VERSION]",
    help="Serve only these models (repeatable); NAME:VERSION pins one version.",
)
@setting_option(
    "workers",
    "--workers",
    metavar="N|auto",
    help="Server processes sharing the port; auto = one per available core. Models load once, "
    "before the workers start, and are shared.",
)
@model_options
@observability_options
@setting_option(
    "metrics_tls",
    "--metrics-tls",
    type=click.Choice(METRICS_TLS_MODES),
    help="How --metrics-port serves, so probes and scrapers without a client certificate can "
    "reach it beside a mutual-TLS API: mtls (client certificates), tls (server certificate "
    "only) or plain (beyond loopback only with --require-auth or --allow-insecure).",
)
@setting_option(
    "require_auth",
    "--require-auth",
    is_flag=True,
    help="Every request but health checks needs an API key (`modelport keys create`) or a JWT "
    "with the right scope, as `Authorization: Bearer ...` or `x-api-key` (gRPC: "
    "metadata).",
)
@setting_option(
    "allow_insecure",
    "--allow-insecure",
    is_flag=True,
    help="Listen beyond loopback without --require-auth: only when something in front of the "
    "server authenticates every request.",
)
@setting_option(
    "allowed_hosts",
    "--allowed-host",
    multiple=True,
    metavar="NAME",
    help="Also answer requests whose Host is NAME (repeatable; * = any, behind a proxy that "
    "checks names); other names get 403, against DNS rebinding.",
)
@setting_option(
    "cors_origins",
    "--cors-origin",
    multiple=True,
    metavar="ORIGIN",
    help="Let web pages from ORIGIN (e.g. https://app.example:8443) call the API, with CORS "
    "(repeatable; * = any); requests from other pages' origins get 403.",
)
@setting_option(
    "tls_cert", "--tls-cert", metavar="PEM", help="Certificate (chain) for TLS on REST and gRPC."
)
@setting_option("tls_key", "--tls-key", metavar="PEM", help="Private key of --tls-cert.")
@setting_option(
    "tls_client_ca",
    "--tls-client-ca",
    metavar="PEM",
    help="Require client certificates signed by this CA (mutual TLS).",
)
@setting_option(
    "jwt_public_key",
    "--jwt-public-key",
    metavar="PEM",
    help="Accept JWT bearer tokens signed by this public key (RS256, ES256, EdDSA).",
)
@setting_option(
    "jwks_file",
    "--jwks-file",
    metavar="JSON",
    help="Accept JWT bearer tokens signed by a key of this local JWKS file.",
)
@setting_option("jwt_audience", "--jwt-audience", help="Required `aud` of JWT bearer tokens.")
@setting_option("jwt_issuer", "--jwt-issuer", help="Required `iss` of JWT bearer tokens.")
@setting_option(
    "jwt_scope_claim",
    "--jwt-scope-claim",
    help="The claim that holds a token's scopes (infer, read, admin).",
)
@setting_option(
    "max_elements",
    "--max-elements",
    type=int,
    metavar="N",
    help="Most tensor elements, all inputs together, in one inference request (413 past it).",
)
@setting_option(
    "max_batch",
    "--max-batch",
    type=int,
    metavar="ROWS",
    help="Most rows of any input in one inference request (413 past it).",
)
@setting_option(
    "max_queue",
    "--max-queue",
    type=int,
    metavar="N",
    help="Most requests waiting for one model at once, all workers together; past it, requests "
    "are shed with 503 + Retry-After (gRPC RESOURCE_EXHAUSTED) so latency stays bounded.",
)
@setting_option(
    "request_timeout",
    "--request-timeout",
    type=float,
    metavar="SECONDS",
    help="Answer an inference 504 (gRPC DEADLINE_EXCEEDED) once it has taken this long; a "
    "client's shorter `timeout` parameter (microseconds) or gRPC deadline wins. 0 = none.",
)
@setting_option(
    "rate_limit",
    "--rate-limit",
    type=float,
    metavar="PER_SECOND",
    help="Requests a second each caller (API key, token subject, else address) may send, per "
    "worker; past it, 429 with Retry-After.",
)
@setting_option(
    "rate_burst",
    "--rate-burst",
    type=float,
    help="Requests a caller may send at once before --rate-limit applies.",
)
def serve(
    paths: tuple[Path, ...],
    model_name: str | None,
    fmt: str | None,
    trust_pickle: bool,
    config_file: Path | None,
    workers: str | None,
    **flags: Any,
) -> None:
    """Serve models over the Open Inference Protocol (REST and gRPC): a registry's, or PATH's.

    \b
      modelport serve                       # the registry's models (./.modelport by default)
      modelport serve iris.skops            # one file, served as model "iris"
      modelport serve iris_model.pkl --trust-pickle --model-name iris
      modelport serve models/ other.onnx    # every model in models/, and other.onnx
      modelport serve /mnt/models --model-name iris

    Without PATH it serves the models of the registry. It follows the registry while it
    runs: new versions and alias moves (`models alias`, `models rollback`) take effect within
    about a second, with no restart.

    PATH is a model file of any format `models push` takes, an MLflow model directory (with an
    MLmodel file), or a directory such as KServe's /mnt/models: each model file in it (and
    each MLflow directory) is one model, named after its file's stem; --model-name names a
    PATH that holds one model. The models are registered as `models push` registers them,
    with the same trust rules (pickle-family files need --trust-pickle), in --registry, else
    in a temporary registry that is removed at exit, and only they are served.

    In a SageMaker container (`serve` alone, with /opt/ml/model present and no registry
    named) it serves the models in /opt/ml/model on port 8080 ($SAGEMAKER_BIND_TO_PORT) of
    every address, with gRPC off and no credential of its own: SageMaker authenticates the
    calls to the endpoint. SIGTERM drains within SageMaker's 30 seconds.

    Prints where it listens, then a "ready" line once the models are loaded.
    Every inference is recorded in the inference log (`modelport logs`); metrics are at
    /metrics. Ctrl-C (or SIGTERM) finishes in-flight requests, writes their records and stops.
    """
    from modelport.cli.serve_paths import sagemaker_settings, serve_paths
    from modelport.observability.access_log import configure_logging
    from modelport.server import serve as run

    with reported(), contextlib.ExitStack() as stack:
        # Every other option is named as its setting; None means "not given".
        for repeatable in ("models", "allowed_hosts", "cors_origins"):
            flags[repeatable] = flags[repeatable] or None
        flags["workers"] = None if workers is None else parse_workers(workers)
        own_registry = registry_given(flags, config_file)
        platform = None
        container = None if paths or own_registry else sagemaker_container()
        if container is not None:
            paths = (Path(container.model_dir),)
            platform = sagemaker_settings(container)
        settings = build_serve_settings(flags, config_file, platform=platform)
        configure_logging(settings.logging.level, settings.logging.format, sys.stderr)
        if container is not None:
            click.echo(
                f"SageMaker container: serving the models in {container.model_dir} on port "
                f"{settings.listen.http_port}"
            )
        if paths:
            settings = serve_paths(
                settings,
                paths,
                stack,
                model_name=model_name,
                format=fmt,
                trust_pickle=trust_pickle or trust_pickle_from_environment(),
                own_registry=own_registry,
                echo=click.echo,
            )
        else:
            given = {"--model-name": model_name, "--format": fmt, "--trust-pickle": trust_pickle}
            for flag, value in given.items():
                if value:
                    raise InvalidInput(f"{flag} applies to the models of a PATH; give the PATH")
        status = run(settings, announce=lambda line: click.echo(line, nl=True))
    sys.exit(status)


@click.command()
@registry_option
def demo(registry: str | None) -> None:
    """Train the demo models (data shipped with scikit-learn, no downloads) and register them."""
    from modelport.demo import build_demo

    with reported():
        from modelport.registry.database import display_location

        location = registry_location(registry)
        for line in build_demo(location, created_by=current_user()):
            click.echo(line)
        click.echo(
            f"demo registry ready in {display_location(location)}; serve it with: modelport serve"
        )
