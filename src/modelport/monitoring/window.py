"""The live window of drift monitoring: the last rows of one input's profiled columns.

A window is a ring buffer and its counters in shared memory (`serving.shared_memory`), made
when the monitor is: every server process forked after that writes into the same window, so
a drift report covers the whole server, whichever worker answers it. Shared memory holds
plain numbers only, so a categorical column keeps each row's bin (the index of its category
in the profile, or the "other" code) rather than the value itself: all a report needs.
The caller orders writes and reads with one lock (`DriftMonitor`); a window has none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from modelport.monitoring.reference_profile import Array, FeatureProfile, Kind, as_text
from modelport.serving.shared_memory import shared_array

CODE: Final = np.int32
"""How a categorical row is stored: its category's index in the profile, or the "other" code
(the number of categories)."""
_NUMBERS: Final = frozenset("biuf")
"""Array kinds that always convert to float64 (no ValueError halfway through a write)."""
_MISS: Final = -1


class Window:
    """The last `size` rows of the profiled columns of one input tensor (features of one kind).

    `prepare` converts a request's tensor outside the lock; `write` and `snapshot` run under
    the monitor's lock and only copy numbers.
    """

    __slots__ = ("buffer", "columns", "counters", "identity", "kind", "lookups", "name", "size")

    def __init__(
        self, name: str, features: Sequence[FeatureProfile], size: int, kind: Kind
    ) -> None:
        self.name = name
        self.kind = kind
        self.size = size
        columns = [f.column for f in features]
        one_d = columns == [None]
        self.columns: list[int] | None = None if one_d else [c or 0 for c in columns]
        self.identity = self.columns == list(range(len(columns)))
        dtype = np.float64 if kind == "numeric" else CODE
        self.buffer: Array = shared_array(size if one_d else (size, len(columns)), dtype)
        # A memoryview: reading and writing three integers costs a third of numpy's item access.
        self.counters: memoryview = shared_array(3, np.int64).data
        """position (where the next row goes), filled (rows held), observed (rows ever)."""
        self.lookups = [_lookup(f.categories) for f in features] if kind == "categorical" else []
        """Categorical: each column's category -> code (by text and by UTF-8 bytes), and the
        "other" code."""

    def prepare(self, data: Array) -> Array | None:
        """The rows of `data` as the window stores them; None when they do not fit or convert."""
        rows = self._columns(data)
        if rows is None:
            return None
        if self.kind == "categorical":
            return self._encode(rows)
        if rows.dtype.kind in _NUMBERS:
            return rows  # converted by the copy into the buffer, which cannot fail halfway
        try:
            return np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            return None

    def write(self, rows: Array) -> None:
        """Append prepared `rows`, overwriting the oldest (the caller holds the lock)."""
        counters = self.counters
        position, filled, observed = counters[0], counters[1], counters[2]
        size = self.size
        n = len(rows)
        if n >= size:
            self.buffer[:] = rows[n - size :]
            position, filled = 0, size
        else:
            end = position + n
            if end <= size:
                self.buffer[position:end] = rows
            else:
                split = size - position
                self.buffer[position:] = rows[:split]
                self.buffer[: end - size] = rows[split:]
            position, filled = end % size, min(filled + n, size)
        # Counters last: a writer killed halfway leaves rows, never counters, half-updated.
        counters[0], counters[1], counters[2] = position, filled, observed + n

    def snapshot(self) -> tuple[Array, int]:
        """A copy of the rows held (in ring order, not by age) and the rows ever observed."""
        filled, observed = self.counters[1], self.counters[2]
        return self.buffer[:filled].copy(), observed

    def ordered(self) -> Array:
        """A copy of the rows held, oldest first."""
        position, filled = self.counters[0], self.counters[1]
        ordered = np.roll(self.buffer, -position, axis=0)
        return ordered[len(ordered) - filled :]

    def _columns(self, data: Array) -> Array | None:
        if self.columns is None:
            return data if data.ndim == 1 else None
        if data.ndim != 2:
            return None
        if self.identity and data.shape[1] == len(self.columns):
            return data
        if data.shape[1] <= max(self.columns):
            return None
        return data[:, self.columns]

    def _encode(self, rows: Array) -> Array:
        if rows.ndim == 1:
            return _codes(rows.tolist(), *self.lookups[0])
        codes = np.empty(rows.shape, dtype=CODE)
        for j, (lookup, other) in enumerate(self.lookups):
            codes[:, j] = _codes(rows[:, j].tolist(), lookup, other)
        return codes


def decode(codes: Array, categories: Sequence[str]) -> Array:
    """Categorical codes as the profile's category text, None for a row in "other"."""
    names = np.array([*categories, None], dtype=object)
    return names[codes]


def _lookup(categories: Sequence[str]) -> tuple[dict[Any, int], int]:
    """Category -> code, for values given as text (data files) or UTF-8 bytes (BYTES tensors);
    and the "other" code."""
    lookup: dict[Any, int] = {}
    for code, category in enumerate(categories):
        lookup.setdefault(category, code)  # a repeated category: its first bin, as in a report
        with contextlib.suppress(UnicodeEncodeError):  # a lone surrogate: no bytes are it
            lookup.setdefault(category.encode(), code)
    return lookup, len(categories)


def _codes(values: list[Any], lookup: dict[Any, int], other: int) -> Array:
    """Each value's code: its category's, compared as text (`as_text`), else `other`."""
    try:
        codes = [lookup.get(v, _MISS) for v in values]
    except TypeError:  # an unhashable value: compared by its text, below
        codes = [_MISS] * len(values)
    if _MISS in codes:
        for i, code in enumerate(codes):
            if code == _MISS:
                # Bytes that are not UTF-8, numbers, other objects: as the profile reads them.
                codes[i] = lookup.get(as_text(values[i]), other)
    return np.fromiter(codes, CODE, len(codes))
