"""Artifacts that hold a pickled Python object: reading one, and checking it can predict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelport.errors import InvalidInput


def read_object(read: Callable[[], Any], cannot: str, fix: str) -> Any:
    """What `read()` returns; InvalidInput when it fails, as "{cannot} (error class); {fix}".

    A missing module gets its own message, since installing it is the fix. The error's own
    message is left out: it may quote file-system paths.
    """
    try:
        return read()
    except ModuleNotFoundError as exc:
        raise InvalidInput(
            f"the pickled model needs module {exc.name!r}, which is not installed here"
        ) from None
    except Exception as exc:
        raise InvalidInput(f"{cannot} ({error_class(exc)}); {fix}") from None


def require_predict(model: Any, format: str, fix: str) -> None:
    """InvalidInput, ending with `fix`, unless the `format` artifact's object has a predict."""
    if not callable(getattr(model, "predict", None)):
        raise InvalidInput(
            f"the {format} artifact holds a {type(model).__name__}, which has no predict "
            f"method; {fix}"
        )


def error_class(exc: BaseException) -> str:
    """The exception's qualified class name; its message may quote paths, so it is left out."""
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
