"""`modelport serve` and `modelport demo`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from modelport.cli.options import registry_option, reported
from modelport.config import (
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
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Log level. Default: info.",
)
def serve(
    registry: str | None,
    host: str | None,
    http_port: int | None,
    grpc_port: int | None,
    models: tuple[str, ...],
    workers: str | None,
    batching: bool | None,
    compiled: bool | None,
    config_file: Path | None,
    log_level: str | None,
) -> None:
    """Serve the registry's models over the Open Inference Protocol (REST and gRPC).

    Prints where it listens, then a "ready" line once the models are loaded.
    Follows the registry while it runs: new versions and alias moves (`models alias`,
    `models rollback`) take effect within about a second, with no restart.
    Ctrl-C (or SIGTERM) finishes in-flight requests and stops.
    """
    from modelport.server import serve as run

    with reported():
        settings = build_serve_settings(
            {
                "registry": registry,
                "host": host,
                "http_port": http_port,
                "grpc_port": grpc_port,
                "models": models or None,
                "workers": None if workers is None else parse_workers(workers),
                "batching": batching,
                "compiled": compiled,
                "log_level": log_level,
            },
            config_file,
        )
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        # Alembic narrates every migration step at INFO; only its problems matter here.
        logging.getLogger("alembic").setLevel(
            max(logging.getLevelName(settings.log_level.upper()), logging.WARNING)
        )
        status = run(settings, announce=lambda line: click.echo(line, nl=True))
    sys.exit(status)


@click.command()
@registry_option
def demo(registry: str | None) -> None:
    """Train the demo models (data shipped with scikit-learn, no downloads) and register them."""
    from modelport.demo import build_demo

    with reported():
        from modelport.registry.location import display_location

        location = registry_location(registry)
        for line in build_demo(location, created_by=current_user()):
            click.echo(line)
        click.echo(
            f"demo registry ready in {display_location(location)}; serve it with: modelport serve"
        )
