"""`modelport stream MODEL --source URL --sink URL`: answer a broker's messages with a model."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from modelport.cli.options import option_group, registry_option, reported
from modelport.cli.serve import model_options, observability_options

_URLS = """\b
Brokers (--source, --sink, --dead-letter; any mix):
  kafka://HOST:9092/TOPIC              Kafka (consumer group, committed offsets)
  redis://HOST:6379/0?stream=NAME      Redis Streams (rediss:// for TLS)
  nats://HOST:4222?stream=S&subject=X  NATS JetStream (tls:// for TLS)
See docs/streaming.md for TLS, SASL and credentials."""


@click.command(
    "stream",
    epilog=f"""\b
Examples:
  modelport stream iris --source kafka://127.0.0.1:9092/features \\
      --sink kafka://127.0.0.1:9092/scores --dead-letter kafka://127.0.0.1:9092/refused
  modelport stream iris:production --format json \\
      --source 'redis://127.0.0.1:6379/0?stream=rows' \\
      --sink 'redis://127.0.0.1:6379/0?stream=scores'

{_URLS}

\b
Delivery is at least once: a message is acknowledged only after its output (or its
dead letter) was acknowledged by the broker. Outputs keep the input's key and carry
x-request-id, x-model-name, x-model-version and x-model-sha256 headers. Ctrl-C or
SIGTERM answers what is in flight, acknowledges it and stops; a second one stops at
once (what was not acknowledged is delivered again).""",
)
@click.argument("model", metavar="MODEL[:VERSION|ALIAS]")
@click.option("--source", required=True, metavar="URL", help="Where messages are consumed.")
@click.option("--sink", required=True, metavar="URL", help="Where answers are produced.")
@click.option(
    "--dead-letter",
    metavar="URL",
    help="Where messages that cannot be answered go, with the error, stage, origin and "
    "attempt count as headers. Without it they are logged and acknowledged.",
)
@click.option(
    "--group",
    metavar="NAME",
    help="Consumer group; processes of one group share the work. Default: modelport-MODEL.",
)
@click.option(
    "--consumer",
    "consumer_name",
    metavar="NAME",
    help="This process's name in the group. Default: HOST-PID.",
)
@click.option(
    "--format",
    "message_format",
    type=click.Choice(["oip", "json", "avro"]),
    default="oip",
    show_default=True,
    help="Messages are OIP inference requests (the REST body), JSON records whose fields "
    "map to the model's inputs, or Avro records (--schema or --schema-dir).",
)
@click.option(
    "--schema",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Avro schema (.avsc) of schemaless Avro messages.",
)
@click.option(
    "--schema-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory of ID.avsc files for Avro messages in the Confluent wire format.",
)
@click.option(
    "--output-format",
    type=click.Choice(["json", "avro"]),
    help="Answers of --format avro in Avro (default) or JSON.",
)
@click.option(
    "--output-schema-id",
    type=click.IntRange(min=0),
    metavar="N",
    help="Frame Avro answers in the Confluent wire format with this schema id (the id the "
    "answer schema is registered under); needed with --schema-dir unless answers are JSON.",
)
@click.option(
    "--print-output-schema",
    is_flag=True,
    help="Print the Avro schema of the model's answers and exit.",
)
@click.option(
    "--features",
    metavar="A,B,C",
    help="Fields of the model's single [-1, F] input, in order (JSON and Avro records). "
    "Default: the feature order of the reference data the version was pushed with.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Messages received and not yet acknowledged; consumption pauses past it.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="A message delivered more often than this without being acknowledged is "
    "dead-lettered unread (it may be what stopped the consumers before).",
)
@click.option(
    "--reclaim-after",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a message may stay unacknowledged before another consumer of the group "
    "takes it over (Redis idle time, NATS ack wait; Kafka: the session timeout).",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="After a stop, how long in-flight messages may take to be answered and acknowledged.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address of --metrics-port.",
)
@registry_option
@option_group([model_options, observability_options])
def stream(model: str, **flags: Any) -> None:
    """Answer a message broker's messages with a registered model, at least once.

    Consumes --source in a consumer group, predicts with the model's registered version
    (compiled form, validation, batching and provenance as `serve`), produces each answer
    to --sink, and dead-letters what cannot be answered. Follows the registry: an alias
    move switches the model within about a second. Prints a JSON progress line every few
    seconds on stderr, and a summary when it stops.

    Unlike `serve`, the access log (a line per message) is off unless --access-log is
    given, and metrics are collected and served only with --metrics-port.
    """
    from modelport.config_loader import build_serve_settings
    from modelport.jobs.streams.consumer import StreamOptions
    from modelport.observability.access_log import configure_logging
    from modelport.stream import StreamSpec, run

    with reported():
        names = flags.pop("features")
        spec = StreamSpec(
            source=flags.pop("source"),
            sink=flags.pop("sink"),
            dead_letter=flags.pop("dead_letter"),
            group=flags.pop("group"),
            consumer=flags.pop("consumer_name"),
            format=flags.pop("message_format"),
            schema=flags.pop("schema"),
            schema_dir=flags.pop("schema_dir"),
            output_format=flags.pop("output_format"),
            output_schema_id=flags.pop("output_schema_id"),
            features=None if names is None else [n.strip() for n in names.split(",")],
            reclaim_after=flags.pop("reclaim_after"),
        )
        name, _, version = model.partition(":")
        options = StreamOptions(
            name,
            version or None,
            max_in_flight=flags.pop("max_in_flight"),
            max_attempts=flags.pop("max_attempts"),
            drain_seconds=flags.pop("drain_timeout"),
        )
        if flags.pop("print_output_schema"):
            _print_output_schema(model, flags.get("registry"))
            return
        host = flags.pop("host")
        if flags["metrics"] is None and flags["metrics_port"] is None:
            flags["metrics"] = False  # nothing would serve them
        if flags["access_log"] is None:
            flags["access_log"] = False  # a line per message: on when asked
        settings = build_serve_settings(flags, flags.pop("config_file"))
        configure_logging(settings.logging.level, settings.logging.format, sys.stderr)
        with contextlib.ExitStack() as stack:
            metrics_socket = None
            if settings.metrics.port:
                from modelport.server import bind

                metrics_socket = stack.enter_context(
                    bind(host, settings.metrics.port, flag="--metrics-port")
                )
            stats = run(
                model,
                spec,
                settings=settings,
                options=options,
                metrics_socket=metrics_socket,
                announce=lambda line: click.echo(line, err=True),
                progress=lambda s: click.echo(orjson.dumps(s.as_dict()), err=True),
            )
        click.echo(orjson.dumps({"stopped": stats.as_dict()}), err=True)


def _print_output_schema(model: str, registry: str | None) -> None:
    from modelport.config import registry_location
    from modelport.registry.store import Registry
    from modelport.serving.avro_records import output_schema_json

    name, _, version = model.partition(":")
    with Registry.open(registry_location(registry), create=False) as store:
        mv = store.resolve(name, version or None)
        click.echo(output_schema_json(mv), nl=False)
