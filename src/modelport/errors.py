"""One error tree for modelport: every error carries an ErrorKind that transports map once."""

from __future__ import annotations

import enum
from typing import ClassVar


class ErrorKind(enum.Enum):
    """What went wrong, independent of the transport that reports it."""

    INVALID_INPUT = "invalid_input"
    NOT_FOUND = "not_found"
    NOT_READY = "not_ready"
    OVERLOADED = "overloaded"
    RATE_LIMITED = "rate_limited"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    DEADLINE = "deadline"
    CONFLICT = "conflict"
    UNTRUSTED_ARTIFACT = "untrusted_artifact"
    UNSUPPORTED = "unsupported"
    TOO_LARGE = "too_large"
    INTERNAL = "internal"


class ModelportError(Exception):
    """Root of every error modelport raises on purpose; the message says what to fix."""

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ModelportError):
    """The request is malformed or does not match the model's signature."""

    kind = ErrorKind.INVALID_INPUT


class NotFound(ModelportError):
    """An unknown model, version or alias."""

    kind = ErrorKind.NOT_FOUND


class NotReady(ModelportError):
    """The model exists but cannot answer yet."""

    kind = ErrorKind.NOT_READY


class Overloaded(ModelportError):
    """The server sheds this request; the client may retry after `retry_after` seconds."""

    kind = ErrorKind.OVERLOADED

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(Overloaded):
    """The caller sent more than its rate allows; it may retry after `retry_after` seconds."""

    kind = ErrorKind.RATE_LIMITED


class Unauthenticated(ModelportError):
    """No valid credential was presented."""

    kind = ErrorKind.UNAUTHENTICATED


class Forbidden(ModelportError):
    """The credential lacks the scope this action needs."""

    kind = ErrorKind.FORBIDDEN


class DeadlineExceeded(ModelportError):
    """The request ran past its deadline."""

    kind = ErrorKind.DEADLINE


class Conflict(ModelportError):
    """The action contradicts the current state (e.g. a duplicate push)."""

    kind = ErrorKind.CONFLICT


class UntrustedArtifact(ModelportError):
    """An artifact that may run code was not trusted, or no longer matches its digest."""

    kind = ErrorKind.UNTRUSTED_ARTIFACT


class Unsupported(ModelportError):
    """The server does not offer this feature or format."""

    kind = ErrorKind.UNSUPPORTED


class TooLarge(ModelportError):
    """The request is bigger than the server accepts."""

    kind = ErrorKind.TOO_LARGE


class InternalError(ModelportError):
    """A genuine fault inside modelport or a model."""

    kind = ErrorKind.INTERNAL
