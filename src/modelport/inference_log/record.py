"""The inference log's record: its fields, stated once, and what every format derives from them.

`Fields` names each column with its Python type and its `Kind`, which says how the column is
encoded, checked, stored in SQL and exported to Arrow. `LogRecord` (what the server hands in) and
`StoredRecord` (what a store reads back) are its two views; COLUMNS, the SQL table, the encoded
row and the export schema all follow its order.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

import numpy as np
import orjson

Row = dict[str, Any]
Tensors = Mapping[str, np.ndarray[Any, Any] | None]
T = TypeVar("T")

REDACTED: Final = "[redacted]"
"""What a redacted tensor is stored as."""
_JSON_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True, slots=True)
class Kind:
    """How one kind of column is written: encoded for a row, checked when read back from the
    journal, declared in SQL (a store fills in {json}) and typed in an Arrow export."""

    encode: Callable[[Any], Any]
    valid: Callable[[Any], bool]
    sql: str
    arrow: str


def clean_text(value: str) -> str:
    """`value` storable everywhere: NUL and unpaired surrogates replaced."""
    # PostgreSQL refuses NUL in text (and \u0000 in JSONB casts); UTF-8 has no lone surrogates.
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def to_json(value: Any) -> str:
    """`value` as JSON text; numpy arrays and scalars, bytes and text tensors included."""
    return orjson.dumps(value, default=_json_default, option=_JSON_OPTIONS).decode()


def _tensors(arrays: Tensors | None) -> str | None:
    if arrays is None:
        return None
    if all(name.isascii() and "\x00" not in name and a is not None for name, a in arrays.items()):
        # The usual case, as is: half the cost of copying the mapping first.
        return to_json(arrays)
    return to_json({clean_text(name): REDACTED if a is None else a for name, a in arrays.items()})


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


TEXT: Final = Kind(clean_text, lambda v: isinstance(v, str), "TEXT NOT NULL", "string")
NUMBER: Final = Kind(
    float, lambda v: isinstance(v, int | float), "DOUBLE PRECISION NOT NULL", "float64"
)
OPTIONAL_INTEGER: Final = Kind(
    _optional_int, lambda v: v is None or isinstance(v, int), "INTEGER", "int64"
)
TENSORS: Final = Kind(_tensors, lambda v: v is None or isinstance(v, str), "{json}", "string")
"""Named tensors, stored as JSON text (None when there are none)."""


@dataclass(slots=True)
class Fields(Generic[T]):
    """The columns of the inference log, in table order; `T` is how tensors are held."""

    request_id: str = field(metadata={"kind": TEXT})
    at: float = field(metadata={"kind": NUMBER})
    """Arrival, as Unix time."""
    model: str = field(metadata={"kind": TEXT})
    version: int | None = field(metadata={"kind": OPTIONAL_INTEGER})
    digest: str = field(metadata={"kind": TEXT})
    protocol: str = field(metadata={"kind": TEXT})
    caller: str = field(metadata={"kind": TEXT})
    inputs: T | None = field(metadata={"kind": TENSORS})
    """Already redacted when logged: a redacted tensor's name maps to None."""
    outputs: T | None = field(metadata={"kind": TENSORS})
    latency_ms: float = field(metadata={"kind": NUMBER})
    status: str = field(metadata={"kind": TEXT})
    """The transport's code, e.g. "200", "400", "OK", "INVALID_ARGUMENT"."""
    error: str = field(metadata={"kind": TEXT})
    """"" when the inference succeeded."""


@dataclass(slots=True)
class LogRecord(Fields[Tensors]):
    """One answered inference as the server hands it to the log (arrays stay numpy)."""


@dataclass(slots=True)
class StoredRecord(Fields[dict[str, Any]]):
    """One row of the inference log as read back: tensors decoded from JSON to nested lists."""

    id: int = field(kw_only=True)
    """Store order: increases with every row written."""


def _kind_of(column: dataclasses.Field[Any]) -> Kind:
    """The `Kind` a column of `Fields` was declared with."""
    kind: Kind = column.metadata["kind"]
    return kind


COLUMN_KINDS: Final = tuple((c.name, _kind_of(c)) for c in dataclasses.fields(Fields))
"""Each column's name and kind, in table order."""
COLUMNS: Final = tuple(name for name, _ in COLUMN_KINDS)
"""The keys of an encoded row, in the order of the table's columns."""
row_values: Final = operator.itemgetter(*COLUMNS)
"""An encoded row's values in column order, as a tuple (in C: this runs once per record)."""
_values: Final = operator.attrgetter(*COLUMNS)
_ENCODERS: Final = tuple((name, kind.encode) for name, kind in COLUMN_KINDS)


def encode_record(record: LogRecord) -> Row:
    """The record as a row of plain values, its tensors as JSON text; ready for a store or the
    journal. Text is made storable everywhere: NUL and unpaired surrogates are replaced."""
    return {
        name: encode(value)
        for (name, encode), value in zip(_ENCODERS, _values(record), strict=True)
    }


@dataclass(frozen=True, slots=True)
class LogBatch:
    """Requests answered by one inference, as the server hands them to the log: a row each
    (its request id, caller and rows of the tensors), the other fields shared."""

    at: float
    model: str
    version: int | None
    digest: str
    protocol: str
    latency_ms: float
    status: str
    request_ids: Sequence[str]
    callers: Sequence[str]
    inputs: Tensors | None
    """Stacked along the first dimension; already redacted (a name maps to None)."""
    outputs: Tensors | None
    spans: Sequence[slice]
    """Each request's part of the tensors' first dimension, one after another from row 0
    (or `slice(None)`: a single request holding the tensors whole)."""

    def __len__(self) -> int:
        return len(self.request_ids)


def encode_batch(batch: LogBatch) -> list[Row]:
    """A row per request of `batch`, as `encode_record` makes them (the shared fields encoded
    once)."""
    shared = encode_record(
        LogRecord(
            "",
            batch.at,
            batch.model,
            batch.version,
            batch.digest,
            batch.protocol,
            "",
            None,
            None,
            batch.latency_ms,
            batch.status,
            "",
        )
    )
    inputs = _row_tensors(batch.inputs, batch.spans)
    outputs = _row_tensors(batch.outputs, batch.spans)
    return [
        {
            **shared,
            "request_id": clean_text(request_id),
            "caller": clean_text(caller),
            "inputs": request_inputs,
            "outputs": request_outputs,
        }
        for request_id, caller, request_inputs, request_outputs in zip(
            batch.request_ids, batch.callers, inputs, outputs, strict=True
        )
    ]


def _row_tensors(arrays: Tensors | None, spans: Sequence[slice]) -> Sequence[str | None]:
    """Each span's part of `arrays`, as `_tensors` writes it."""
    if arrays is None:
        return [None] * len(spans)
    count = len(spans)
    # Spans follow one another from row 0: ending at row `count`, each is one row.
    one_each = arrays and spans[-1].stop == count
    if one_each and all(_splittable(n, a, count) for n, a in arrays.items()):
        # Each tensor written once and cut into rows; the rows' JSON joined by newlines
        # (which JSON text never holds raw) and decoded at once: a third of the cost.
        names = [orjson.dumps(name) for name in arrays]
        glue = [b"{" + names[0] + b":", *(b"," + name + b":" for name in names[1:]), b"}\n"]
        columns = [_json_rows(a) for a in arrays.values() if a is not None]
        pieces: list[Iterable[bytes]] = [itertools.repeat(glue[0])]
        for column, after in zip(columns, glue[1:], strict=True):
            pieces += [column, itertools.repeat(after)]
        text = b"".join(itertools.chain.from_iterable(zip(*pieces, strict=False))).decode()
        return text.split("\n")[:-1]
    if spans[0] == slice(None):  # one request: the tensors whole, of whatever shape
        return [_tensors(arrays)]
    return [
        _tensors({name: None if a is None else a[span] for name, a in arrays.items()})
        for span in spans
    ]


def _splittable(name: str, array: np.ndarray[Any, Any] | None, rows: int) -> bool:
    """Whether `_json_rows` can write `array` (as `_tensors` would, under `name`)."""
    return (
        array is not None
        and name.isascii()
        and "\x00" not in name
        and array.dtype.kind in "biuf"
        and array.dtype.isnative
        and array.ndim >= 1
        and array.shape[0] == rows
        and array.size > 0
        and array.flags.c_contiguous
    )


def _json_rows(array: np.ndarray[Any, Any]) -> list[bytes]:
    """`array[i:i + 1]` as JSON for each row i, from one JSON text of the whole: numbers hold
    no brackets or commas, so the rows are where the brackets one level down meet."""
    depth = array.ndim - 1
    body = orjson.dumps(array, option=_JSON_OPTIONS)[1:-1]
    parts = body.split(b"]" * depth + b"," + b"[" * depth)
    if depth:
        parts[0], parts[-1] = parts[0][depth:], parts[-1][:-depth]
    opening, closing = b"[" * (depth + 1), b"]" * (depth + 1)
    return [opening + part + closing for part in parts]


def is_row(row: Any) -> bool:
    """Whether `row` is an encoded row: every column there, each value of its kind."""
    return isinstance(row, dict) and all(
        name in row and kind.valid(row[name]) for name, kind in COLUMN_KINDS
    )


def _json_default(value: Any) -> Any:
    """What orjson cannot write itself: text tensors, non-contiguous arrays, bytes, scalars."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return _text_tensor(value)
        if not value.flags.c_contiguous:
            return np.ascontiguousarray(value)
        return value.tolist()
    if isinstance(value, bytes | bytearray | memoryview):
        return clean_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot record a value of type {type(value).__name__}")


def _text_tensor(array: np.ndarray[Any, Any]) -> Any:
    """A BYTES (object, S or U) tensor as nested lists of clean UTF-8 strings."""
    if array.size == 0:
        return array.tolist()
    flat: list[Any] = [_element(v) for v in array.reshape(-1).tolist()]
    if array.ndim == 0:
        return flat[0]
    for size in reversed(array.shape[1:]):
        flat = [flat[i : i + size] for i in range(0, len(flat), size)]
    return flat


def _element(value: Any) -> Any:
    if isinstance(value, bytes):
        return clean_text(value.decode("utf-8", "replace"))
    if isinstance(value, str):
        return clean_text(value)
    return value
