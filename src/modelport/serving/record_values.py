"""How the values of records become an input's array: the element rules of each datatype.

serving.record_mapping states the rules and picks which fields feed which input (an
`InputFeed` each); this module converts the values: plain numbers in bulk, anything else one
by one, with a refusal that names the field, the record and what the input takes.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from modelport.errors import InvalidInput
from modelport.protocol.datatypes import numpy_dtype
from modelport.serving.input_sources import InputSource, describe

Array = np.ndarray[Any, Any]

_LISTS: Final = (list, tuple)
_FP_MAX: Final = {"FP16": float(np.finfo(np.float16).max), "FP32": float(np.finfo(np.float32).max)}


@dataclass(frozen=True, slots=True)
class InputFeed:
    """One input's conversion, precomputed: which fields, what datatype, how many values."""

    spec_text: str
    """The input as refusals name it."""
    name: str
    datatype: str
    dtype: np.dtype[Any]
    fields: tuple[str, ...]
    stacked: bool
    """True: `fields` are the F features of a `[-1, F]` input, one value each."""
    width: int | None
    """None: one value per record (a `[-1]` input, or stacked); else the list length a
    named `[-1, K]` input takes (-1: any, the same in every record)."""
    plain: frozenset[type]
    """Element types that go to numpy unchecked (numpy refuses what does not fit)."""
    bound: float
    """Largest magnitude taken unchecked (below the datatype's overflow); inf: no bound."""

    @classmethod
    def of(cls, source: InputSource) -> InputFeed:
        """The conversion for one resolved input source."""
        spec = source.spec
        dtype = numpy_dtype(spec.datatype)
        width = None if source.stacked or len(spec.shape) == 1 else spec.shape[1]
        if spec.datatype == "BOOL":
            plain: frozenset[type] = frozenset({bool})
        elif dtype.kind in "iu":
            plain = frozenset({int})
        elif dtype.kind == "f":
            plain = frozenset({int, float})
        else:
            plain = frozenset()
        # float16 and float32 overflow below a Python float's range; float64 cannot.
        bound = _FP_MAX.get(spec.datatype, np.inf)
        return cls(
            describe(spec),
            spec.name,
            spec.datatype,
            dtype,
            source.columns,
            source.stacked,
            width,
            plain,
            bound,
        )

    def array(self, values: list[Any], many: bool) -> Array:
        """The input's array from each record's value (a list of the F values when stacked).

        `many`: the values come from a list of records, which refusals then number.
        """
        if self.width is not None:
            values = _widths(values, self, many)
        if self.datatype == "BYTES":
            return _bytes_array(values, self, many)
        flat = values if self.width is None and not self.stacked else _flat(values)
        plain = self.plain
        # The common case, checked in bulk: plain numbers inside the datatype's range.
        if all(type(v) in plain for v in flat) and (
            self.bound == np.inf or -self.bound <= min(flat) <= max(flat) <= self.bound
        ):
            try:
                return np.array(values, dtype=self.dtype)
            except (OverflowError, ValueError, TypeError):
                pass  # an integer out of range: the checked path names it
        return np.array(_checked(values, self, many), dtype=self.dtype)


def _flat(values: list[Any]) -> list[Any]:
    return values[0] if len(values) == 1 else [v for row in values for v in row]


def _widths(values: list[Any], feed: InputFeed, many: bool) -> list[Any]:
    """Each record's value of a named `[-1, K]` input as a list of K; InvalidInput if not."""
    width = feed.width
    out: list[Any] = []
    for index, value in enumerate(values):
        if not isinstance(value, _LISTS):
            if width not in (1, -1):
                why = f"holds one value; give a list of {width} values"
                raise _refusal(feed, index, many, why)
            value = [value]
        if width == -1:
            width = len(value)
        elif len(value) != width:
            takes = "as many as the first record" if feed.width == -1 else f"{width} per record"
            raise _refusal(
                feed, index, many, f"holds {len(value)} value(s); the input takes {takes}"
            )
        out.append(value if type(value) is list else list(value))
    if width == 0:
        raise _refusal(feed, 0, many, "holds an empty list; give at least one value")
    return out


def _checked(values: list[Any], feed: InputFeed, many: bool) -> list[Any]:
    """`values` with every element checked and converted; InvalidInput names the first misfit."""
    if feed.stacked:
        return [
            [_element(v, feed, i, many, column=j) for j, v in enumerate(row)]
            for i, row in enumerate(values)
        ]
    if feed.width is not None:
        return [
            [_element(v, feed, i, many, at=k) for k, v in enumerate(row)]
            for i, row in enumerate(values)
        ]
    return [_element(v, feed, i, many) for i, v in enumerate(values)]


def _element(
    value: Any,
    feed: InputFeed,
    index: int,
    many: bool,
    column: int | None = None,
    at: int | None = None,
) -> Any:
    """One value converted for `feed`'s datatype (a Python or numpy scalar), or refused."""
    why = _misfit(value, feed)
    if why is None:
        number = value.item() if isinstance(value, np.number) else value
        if isinstance(number, str):
            number = _number_text(number, feed.dtype)
        elif isinstance(number, decimal.Decimal):
            number = int(number) if number == number.to_integral_value() else float(number)
        if number is None:
            kind = "a whole number" if feed.dtype.kind in "iu" else "a number"
            why = f"holds text {_shown(value)} that is not {kind}"
        else:
            converted, why = _fitted(number, feed)
            if why is None:
                return converted
    raise _refusal(feed, index, many, why, column, at)


def _misfit(value: Any, feed: InputFeed) -> str | None:
    """Why `value` is of no type the input takes, or None."""
    if value is None:
        return "is null; give every field a value"
    if isinstance(value, (*_LISTS, Mapping)):
        kind = "an object" if isinstance(value, Mapping) else "a list"
        return f"holds {kind}; the input takes one {_takes(feed)} here"
    if feed.datatype == "BOOL":
        ok = isinstance(value, bool | np.bool_)
        return None if ok else f"holds {_shown(value)}; the input takes true or false"
    if isinstance(value, bool | np.bool_):
        return f"holds {_shown(value)}; the input takes numbers, not true/false"
    if isinstance(value, int | float | str | decimal.Decimal | np.number) and not isinstance(
        value, np.complexfloating
    ):
        return None
    return f"holds {_shown(value)}; the input takes {_takes(feed)}s"


def _fitted(value: Any, feed: InputFeed) -> tuple[Any, str | None]:
    """`value` in the input's datatype, or why it does not fit."""
    datatype, dtype = feed.datatype, feed.dtype
    if datatype == "BOOL":
        return bool(value), None
    if dtype.kind in "iu":
        if isinstance(value, float):
            if not value.is_integer():
                return None, f"holds {value!r}, a fraction; the input takes whole numbers"
            value = int(value)
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            return None, f"holds {value}, beyond {datatype} ({info.min} to {info.max})"
        return value, None
    with np.errstate(over="raise"):
        try:
            return dtype.type(value), None
        except (FloatingPointError, OverflowError):
            return None, f"holds {value!r}, beyond the range of {datatype}"


def _number_text(text: str, dtype: np.dtype[Any]) -> float | None:
    stripped = text.strip()
    if "_" in stripped:  # Python reads 1_000; a CSV reader does not
        return None
    try:
        return int(stripped) if dtype.kind in "iu" else float(stripped)
    except ValueError:
        return None


def _bytes_array(values: list[Any], feed: InputFeed, many: bool) -> Array:
    if feed.width is None and not feed.stacked:
        out = np.empty(len(values), dtype=object)
        out[:] = [_bytes(v, feed, i, many) for i, v in enumerate(values)]
        return out
    matrix = np.empty((len(values), len(values[0])), dtype=object)
    for i, row in enumerate(values):
        if feed.stacked:
            matrix[i, :] = [_bytes(v, feed, i, many, column=j) for j, v in enumerate(row)]
        else:
            matrix[i, :] = [_bytes(v, feed, i, many, at=k) for k, v in enumerate(row)]
    return matrix


def _bytes(
    value: Any,
    feed: InputFeed,
    index: int,
    many: bool,
    column: int | None = None,
    at: int | None = None,
) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode()
        except UnicodeEncodeError:
            why = "holds text that is not valid Unicode"
    elif isinstance(value, bytes):
        return value
    elif isinstance(value, bytearray | memoryview):
        return bytes(value)
    elif value is None:
        why = "is null; give every field a value"
    else:
        why = f"holds {_shown(value)}; the input takes text or bytes"
    raise _refusal(feed, index, many, why, column, at)


def _refusal(
    feed: InputFeed,
    index: int,
    many: bool,
    why: str,
    column: int | None = None,
    at: int | None = None,
) -> InvalidInput:
    field = feed.fields[column if column is not None else 0]
    where = f"record {index}: " if many else ""
    item = f"[{at}]" if at is not None else ""
    return InvalidInput(f"{where}field {field!r}{item} {why} (input {feed.spec_text})")


def _takes(feed: InputFeed) -> str:
    if feed.datatype == "BYTES":
        return "text"
    if feed.datatype == "BOOL":
        return "true/false value"
    return "whole number" if feed.dtype.kind in "iu" else "number"


def _shown(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    if isinstance(value, int | float):
        return repr(value)
    return f"a value of type {type(value).__name__}"
