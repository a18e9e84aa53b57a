"""The `modelport` command: argv -> settings -> server, registry or demo."""

from __future__ import annotations

import click

from modelport import __version__
from modelport.cli import lifecycle as _lifecycle  # noqa: F401  (adds its commands to `models`)
from modelport.cli import mlflow as _mlflow  # noqa: F401  (adds `models import-mlflow`)
from modelport.cli import push as _push  # noqa: F401  (adds `models push`)
from modelport.cli.batch import batch
from modelport.cli.keys import keys
from modelport.cli.logs import logs
from modelport.cli.models import models
from modelport.cli.serve import demo, serve
from modelport.cli.stream import stream


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modelport")
def main() -> None:
    """Serve trained models over the Open Inference Protocol from a versioned registry.

    \b
    Quick start:
      modelport demo                 # train and register the demo models
      modelport serve                # serve them on http://127.0.0.1:8080
      modelport serve model.skops    # or serve a model file (or a folder) directly
      curl localhost:8080/v2/models/iris
      modelport batch iris rows.parquet --output scores/   # score a file
      modelport stream iris --source URL --sink URL        # answer a topic
    """


main.add_command(serve)
main.add_command(demo)
main.add_command(models)
main.add_command(logs)
main.add_command(keys)
main.add_command(batch)
main.add_command(stream)
