"""How a format name finds its Runtime class, and how a file's name and content find its format.

Built-in and third-party runtimes are entry points in the group `modelport.runtimes`; a custom
runtime can also be named by its dotted path, `package.module:Class`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Final

from modelport.errors import InvalidInput, Unsupported
from modelport.runtimes.base import Runtime

GROUP: Final = "modelport.runtimes"
"""The entry-point group runtimes register under."""

_DOTTED: Final = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    # Scanning installed distributions costs milliseconds; the set cannot change in a process
    # that does not install packages, so one scan serves every lookup.
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    # Built-ins first so that, for a suffix two runtimes share, the built-in is tried first.
    return dict(
        sorted(found.items(), key=lambda kv: (not kv[1].value.startswith("modelport."), kv[0]))
    )


def available_formats() -> tuple[str, ...]:
    """Names of the installed runtimes (entry points), built-ins first."""
    return tuple(_entry_points())


def runtime_class(format: str) -> type[Runtime]:
    """The Runtime class for an entry-point name or a `package.module:Class` dotted path.

    Unsupported when no runtime has that name or its module is not installed; InvalidInput
    when the name is malformed or does not lead to a concrete Runtime subclass.
    """
    ep = _entry_points().get(format)
    if ep is not None:
        try:
            loaded = ep.load()
        except (ImportError, AttributeError) as exc:
            raise Unsupported(
                f"the runtime for format {format!r} is registered but cannot be imported "
                f"({exc.__class__.__name__}: {exc}); reinstall the package that provides it"
            ) from None
        return _checked(loaded, format)
    if ":" not in format:
        raise Unsupported(
            f"unknown model format {format!r}; use one of {', '.join(available_formats())} "
            "or a custom runtime as 'package.module:Class'"
        )
    return _import_dotted(format)


def _import_dotted(dotted: str) -> type[Runtime]:
    if not _DOTTED.fullmatch(dotted):
        raise InvalidInput(
            f"custom runtime {dotted!r} is not a dotted path; write it as 'package.module:Class'"
        )
    module_name, _, attr_path = dotted.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise Unsupported(
            f"custom runtime {dotted!r}: module {module_name!r} cannot be imported "
            f"({exc.__class__.__name__}: {exc}); install it where modelport runs"
        ) from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InvalidInput(
                f"custom runtime {dotted!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return _checked(obj, dotted)


def _checked(obj: object, name: str) -> type[Runtime]:
    if not (isinstance(obj, type) and issubclass(obj, Runtime)):
        raise InvalidInput(
            f"runtime {name!r} is not a subclass of modelport.runtimes.base.Runtime; "
            "a custom runtime must subclass it"
        )
    if inspect.isabstract(obj):
        raise InvalidInput(
            f"runtime {name!r} is abstract; implement load and predict in the class you name"
        )
    return obj


def detect_format(path: Path) -> str:
    """The format name for the artifact at `path`, from its suffix and a look at its content.

    Each installed runtime claims suffixes (`Runtime.suffixes`) and checks the content with
    `Runtime.recognizes`, so a `.json` or `.txt` file is only taken for a model when it looks
    like one. InvalidInput asks for `--format`
    when nothing matches.
    """
    name = path.name.lower()
    claimed: list[str] = []
    for fmt in _entry_points():
        try:
            cls = runtime_class(fmt)
        except (InvalidInput, Unsupported):
            # A broken third-party plugin must not stop detection of the formats that work.
            continue
        if not any(name.endswith(s.lower()) for s in cls.suffixes):
            continue
        claimed.append(fmt)
        if cls.recognizes(path):
            return fmt
    formats = ", ".join(available_formats())
    if claimed:
        raise InvalidInput(
            f"{path.name!r} does not look like a model of format {' or '.join(claimed)}; "
            f"pass --format (one of {formats}) if it is one"
        )
    raise InvalidInput(
        f"cannot tell the format of {path.name!r} from its name; pass --format (one of {formats})"
    )
