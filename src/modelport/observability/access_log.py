"""Structured logs: one access record per request, and the formatter for everything else.

Records are JSON lines when the stream is not a terminal (for collectors), readable text when
it is. Access records are buffered and written in one call per flush, so answering a request
costs no write to the stream.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from modelport.serving.telemetry import Call

FLUSH_LINES = 256
"""Buffered access records that trigger a write before the periodic flush."""


def wants_json(log_format: str, stream: IO[Any]) -> bool:
    """Whether `log_format` ("auto", "json" or "text") means JSON lines on `stream`."""
    if log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (isatty is not None and isatty())
    return log_format == "json"


class AccessLog:
    """Buffers one record per request and writes them to `stream` on `flush`."""

    def __init__(self, stream: IO[str], *, json: bool) -> None:
        self._stream = stream
        self._json = json
        self._lines: list[str] = []

    def record(self, call: Call, code: str, seconds: float) -> None:
        """Queue the access record of an answered request."""
        version = "" if call.version is None else str(call.version)
        if self._json:
            # Built by hand: every field but the error is safe JSON text already (request ids
            # and names are validated, the rest are the server's own words), and this runs
            # once per request.
            line = (
                f'{{"ts":"{_iso(call.at)}","level":"info","logger":"modelport.access",'
                f'"request_id":"{call.request_id}","protocol":"{call.protocol}",'
                f'"endpoint":"{call.endpoint}","model":{_text(call.model)},"version":"{version}",'
                f'"status":"{code}","latency_ms":{seconds * 1000:.3f},"caller":{_text(call.caller)}'
            )
            line += f',"error":{_text(call.error)}}}' if call.error else "}"
        else:
            target = f"{call.model}:{version}" if call.model else "-"
            line = (
                f"{_iso(call.at)} INFO access {call.protocol} {call.endpoint} {target} {code} "
                f"{seconds * 1000:.2f}ms id={call.request_id} from={call.caller or '-'}"
            )
            if call.error:
                line += f" error={call.error!r}"
        self._lines.append(line)
        if len(self._lines) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered, in one call."""
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        try:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            # A closed or broken stream (the terminal went away) must not take requests down.
            pass


class JsonFormatter(logging.Formatter):
    """Log records as JSON lines: time, level, logger, message, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object per record."""
        entry: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str, log_format: str, stream: IO[str]) -> bool:
    """Send the process's logs to `stream` at `level` in `log_format`; True when JSON."""
    json = wants_json(log_format, stream)
    handler = logging.StreamHandler(stream)
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Alembic narrates every migration step at INFO; only its problems matter here.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
    return json


_second: list[Any] = [-1, ""]
"""The last whole second formatted, and its text (most records share it)."""


def _text(value: str) -> str:
    """`value` as a JSON string."""
    return orjson.dumps(value).decode()


def _iso(at: float) -> str:
    """`at` as ISO 8601 UTC with milliseconds, e.g. 2026-11-30T10:00:00.123+00:00."""
    whole = int(at)
    if whole != _second[0]:
        _second[0] = whole
        _second[1] = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{int((at - whole) * 1000):03d}+00:00"
