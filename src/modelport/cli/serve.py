"""`modelport serve` and `modelport demo`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from modelport.cli.options import registry_option, reported
from modelport.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    OVERFLOW_POLICIES,
    TRACE_EXPORTERS,
    build_serve_settings,
    current_user,
    parse_workers,
    registry_location,
)


@click.command()
@registry_option
@click.option("--host", default=None, help="Address to bind. Default: 127.0.0.1 (loopback only).")
@click.option(
    "--http-port", type=int, default=None, help="REST port (0 picks a free one). Default: 8080."
)
@click.option(
    "--grpc-port",
    type=int,
    default=None,
    help="gRPC port; 0 turns gRPC off. Default: 8081.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME[:VERSION]",
    help="Serve only these models (repeatable); NAME:VERSION pins one version. Default: "
    "every model, its newest version and every version an alias names.",
)
@click.option(
    "--workers",
    default=None,
    metavar="N|auto",
    help="Server processes sharing the port; auto = one per available core. Models load "
    "once, before the workers start, and are shared. Default: 1.",
)
@click.option(
    "--batching/--no-batching",
    default=None,
    help="Combine concurrent requests into one model call where the model allows. "
    "Default: on (tune per model in the config file).",
)
@click.option(
    "--compiled/--no-compiled",
    default=None,
    help="Serve a version's compiled (ONNX) artifact when it has one. Default: on.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML file with a [serve] table of these settings and [models.NAME] tables; "
    "flags override it.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    default=None,
    help="Log level. Default: info.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default=None,
    help="Log lines as JSON or text; auto = JSON unless the output is a terminal. Default: auto.",
)
@click.option(
    "--access-log/--no-access-log",
    default=None,
    help="One log record per request (id, model, version, status, latency). Default: on.",
)
@click.option(
    "--metrics/--no-metrics",
    default=None,
    help="Prometheus metrics at /metrics, added up over all workers. Default: on.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve /metrics on this port instead of the REST port.",
)
@click.option(
    "--inference-log",
    default=None,
    metavar="PATH|URL|off",
    help="Where every inference is recorded: a SQLite file, a postgresql:// URL, or off. "
    "Default: inference-log.sqlite in the registry directory (a PostgreSQL registry: its "
    "database).",
)
@click.option(
    "--inference-log-journal",
    default=None,
    metavar="DIR",
    help="Local directory holding records while the inference-log store is unreachable. "
    "Default: inference-journal in the registry directory, else ./.modelport-journal.",
)
@click.option(
    "--inference-log-capacity",
    type=int,
    default=None,
    help="Most records held back while the store is unreachable. Default: 1000000.",
)
@click.option(
    "--inference-log-overflow",
    type=click.Choice(OVERFLOW_POLICIES),
    default=None,
    help="Past the capacity: shed (answer 503, so nothing answered goes unrecorded) or drop "
    "(answer, drop the record and count it). Default: shed.",
)
@click.option(
    "--trace-exporter",
    type=click.Choice(TRACE_EXPORTERS),
    default=None,
    help="OpenTelemetry spans for request, queue, batch and predict (needs the otel extra): "
    "console prints them, otlp sends them to --trace-endpoint. Default: none.",
)
@click.option(
    "--trace-endpoint",
    default=None,
    metavar="URL",
    help="OTLP/HTTP traces endpoint, e.g. http://localhost:4318/v1/traces.",
)
@click.option(
    "--require-auth",
    is_flag=True,
    default=None,
    help="Every request but health checks needs an API key (`modelport keys create`) or a JWT "
    "with the right scope, as `Authorization: Bearer ...` or `x-api-key` (gRPC: metadata).",
)
@click.option(
    "--allow-insecure",
    is_flag=True,
    default=None,
    help="Listen beyond loopback without --require-auth: only when something in front of the "
    "server authenticates every request.",
)
@click.option(
    "--tls-cert", default=None, metavar="PEM", help="Certificate (chain) for TLS on REST and gRPC."
)
@click.option("--tls-key", default=None, metavar="PEM", help="Private key of --tls-cert.")
@click.option(
    "--tls-client-ca",
    default=None,
    metavar="PEM",
    help="Require client certificates signed by this CA (mutual TLS).",
)
@click.option(
    "--jwt-public-key",
    default=None,
    metavar="PEM",
    help="Accept JWT bearer tokens signed by this public key (RS256, ES256, EdDSA).",
)
@click.option(
    "--jwks-file",
    default=None,
    metavar="JSON",
    help="Accept JWT bearer tokens signed by a key of this local JWKS file.",
)
@click.option("--jwt-audience", default=None, help="Required `aud` of JWT bearer tokens.")
@click.option("--jwt-issuer", default=None, help="Required `iss` of JWT bearer tokens.")
@click.option(
    "--jwt-scope-claim",
    default=None,
    help="The claim that holds a token's scopes (infer, read, admin). Default: scope.",
)
@click.option(
    "--max-elements",
    type=int,
    default=None,
    metavar="N",
    help="Most tensor elements, all inputs together, in one inference request (413 past it). "
    "Default: 16777216.",
)
@click.option(
    "--max-batch",
    type=int,
    default=None,
    metavar="ROWS",
    help="Most rows of any input in one inference request (413 past it). Default: 65536.",
)
@click.option(
    "--max-queue",
    type=int,
    default=None,
    metavar="N",
    help="Most requests waiting for one model at once, per worker; past it, requests are shed "
    "with 503 + Retry-After (gRPC RESOURCE_EXHAUSTED) so latency stays bounded. Default: 1024 "
    "(per model: max_queue in [models.NAME]).",
)
@click.option(
    "--request-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Answer an inference 504 (gRPC DEADLINE_EXCEEDED) once it has taken this long; a "
    "client's shorter `timeout` parameter (microseconds) or gRPC deadline wins. 0 = none. "
    "Default: 60.",
)
@click.option(
    "--rate-limit",
    type=float,
    default=None,
    metavar="PER_SECOND",
    help="Requests a second each caller (API key, token subject, else address) may send, per "
    "worker; past it, 429 with Retry-After. Default: 0 (no limit).",
)
@click.option(
    "--rate-burst",
    type=float,
    default=None,
    help="Requests a caller may send at once before --rate-limit applies. Default: the rate.",
)
def serve(config_file: Path | None, workers: str | None, **flags: Any) -> None:
    """Serve the registry's models over the Open Inference Protocol (REST and gRPC).

    Prints where it listens, then a "ready" line once the models are loaded.
    Follows the registry while it runs: new versions and alias moves (`models alias`,
    `models rollback`) take effect within about a second, with no restart.
    Every inference is recorded in the inference log (`modelport logs`); metrics are at
    /metrics. Ctrl-C (or SIGTERM) finishes in-flight requests, writes their records and stops.
    """
    from modelport.observability.access_log import configure_logging
    from modelport.server import serve as run

    with reported():
        # Every other option is named as its setting; None means "not given".
        flags["models"] = flags["models"] or None
        flags["workers"] = None if workers is None else parse_workers(workers)
        settings = build_serve_settings(flags, config_file)
        configure_logging(settings.log_level, settings.log_format, sys.stderr)
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
