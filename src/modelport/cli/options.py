"""What every `modelport` command shares: the --registry option, output, error reporting."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from modelport.config_loader import shown_default
from modelport.errors import ModelportError

F = TypeVar("F", bound=Callable[..., Any])

REGISTRY_HELP = (
    "Registry directory (SQLite metadata plus content-addressed artifacts), or "
    "postgresql://USER@HOST:PORT/DB?artifacts=PATH for one that replicas share."
)


def console() -> Any:
    """A rich console; piped output gets a wide fixed width so tables are not squeezed."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def registry_option(fn: F) -> F:
    """The shared --registry option."""
    help_text = f"{REGISTRY_HELP} Default: {shown_default('registry')}"
    return click.option("--registry", metavar="DIR|URL", default=None, help=help_text)(fn)


def setting_option(key: str, flag: str, *, help: str, **attrs: Any) -> Callable[[F], F]:
    """A `serve` option for the flat setting `key`, whose help ends with the settings' default.

    The option's value is None when it is not given, so the config file and the environment
    still apply; the default itself is stated once, by the settings field.
    """
    shown = shown_default(key)
    text = f"{help} Default: {shown}." if shown else help
    return click.option(flag, key, default=None, help=text, **attrs)


def option_group(decorators: list[Callable[[F], F]]) -> Callable[[F], F]:
    """One decorator applying `decorators` in order, as if stacked (first = topmost)."""

    def apply(fn: F) -> F:
        for decorate in reversed(decorators):
            fn = decorate(fn)
        return fn

    return apply


def file_option(*decls: str, help: str) -> Callable[[F], F]:
    """An option naming an existing file (not a directory), given as a Path; None without it."""
    return click.option(
        *decls,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help=help,
    )


@contextmanager
def reported() -> Iterator[None]:
    """Turn modelport errors into one clear line on stderr and exit status 1."""
    try:
        yield
    except ModelportError as exc:
        click.secho(f"error: {exc.message}", fg="red", err=True)
        sys.exit(1)
