"""Data drift: how far live inputs have moved from a model's reference profile.

A server keeps the most recent rows of every profiled feature in a ring buffer
(`DriftMonitor.observe`, on the request path) and compares them with the reference profile
on demand (`DriftMonitor.report`): the population stability index (PSI) over the reference's
bins or categories, and for numeric features the two-sample Kolmogorov-Smirnov statistic.
Pure numpy: no I/O, no metrics library.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from modelport.errors import InvalidInput
from modelport.monitoring.reference_profile import (
    Array,
    FeatureProfile,
    Kind,
    ReferenceProfile,
    as_text,
    build_profile,
)

__all__ = ["DriftMonitor", "ReferenceProfile", "build_profile", "ks_statistic", "psi"]

PSI_EPSILON: Final = 1e-4
"""Floor of a bin's share in PSI, so an empty bin counts as rare rather than infinitely so."""


# -- comparing ------------------------------------------------------------------------------


def psi(expected: Sequence[float] | Array, actual: Sequence[float] | Array) -> float:
    """Population stability index of `actual` bin shares against `expected` ones.

    Shares below PSI_EPSILON count as PSI_EPSILON. Rule of thumb: < 0.1 stable, 0.1-0.25
    moderate shift, > 0.25 major shift.
    """
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_EPSILON)
    if e.shape != a.shape:
        raise InvalidInput(f"psi needs as many expected as actual shares ({e.size} != {a.size})")
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(reference_sorted: Sequence[float] | Array, live: Sequence[float] | Array) -> float:
    """Two-sample Kolmogorov-Smirnov D: the largest gap between the two empirical CDFs.

    `reference_sorted` must be sorted ascending; both must be non-empty.
    """
    reference = np.asarray(reference_sorted, dtype=np.float64)
    observed = np.sort(np.asarray(live, dtype=np.float64))
    if reference.size == 0 or observed.size == 0:
        raise InvalidInput("the KS statistic needs at least one value on each side")
    points = np.concatenate([reference, observed])
    gap = (
        np.searchsorted(reference, points, side="right") / reference.size
        - np.searchsorted(observed, points, side="right") / observed.size
    )
    return float(np.max(np.abs(gap)))


# -- monitoring ------------------------------------------------------------------------------


class _Window:
    """The last `size` rows of the profiled columns of one input tensor (one kind)."""

    __slots__ = ("buffer", "columns", "filled", "identity", "name", "observed", "position")

    def __init__(self, name: str, columns: list[int | None], size: int, kind: Kind) -> None:
        self.name = name
        dtype = np.float64 if kind == "numeric" else np.object_
        one_d = columns == [None]
        self.columns: list[int] | None = None if one_d else [c or 0 for c in columns]
        self.identity = self.columns == list(range(len(columns)))
        self.buffer: Array = np.empty(size if one_d else (size, len(columns)), dtype=dtype)
        self.position = self.filled = self.observed = 0

    def rows(self, data: Array) -> Array | None:
        """The profiled columns of `data`, or None when its shape does not fit."""
        if self.columns is None:
            return data if data.ndim == 1 else None
        if data.ndim != 2:
            return None
        if self.identity and data.shape[1] == len(self.columns):
            return data
        if data.shape[1] <= max(self.columns):
            return None
        return data[:, self.columns]

    def write(self, rows: Array) -> None:
        """Append `rows`, overwriting the oldest; ValueError/TypeError if they do not convert."""
        size = len(self.buffer)
        n = len(rows)
        if n >= size:
            self.buffer[:] = rows[n - size :]
            self.position, self.filled = 0, size
        else:
            end = self.position + n
            if end <= size:
                self.buffer[self.position : end] = rows
            else:
                split = size - self.position
                self.buffer[self.position :] = rows[:split]
                self.buffer[: end - size] = rows[split:]
            self.position = end % size
            self.filled = min(self.filled + n, size)
        self.observed += n


class DriftMonitor:
    """Keeps the last `window` rows of live inputs and reports their drift from a profile.

    `observe` costs a dictionary lookup and one array copy per input tensor, under a lock
    (threads may share a monitor); `report` does the arithmetic. PSI and KS stay null until
    a feature has `min_rows` live rows.
    """

    __slots__ = ("_features", "_lock", "_min_rows", "_profile", "_size", "_windows")

    def __init__(self, profile: ReferenceProfile, window: int = 1000, min_rows: int = 30) -> None:
        if not 1 <= min_rows <= window:
            raise InvalidInput(f"drift needs 1 <= min_rows ({min_rows}) <= window ({window})")
        self._profile = profile
        self._size = window
        self._min_rows = min_rows
        self._lock = threading.Lock()
        grouped: dict[tuple[str, Kind], list[FeatureProfile]] = {}
        for feature in profile.features:
            grouped.setdefault((feature.input, feature.kind), []).append(feature)
        self._windows: tuple[_Window, ...] = ()
        # Each feature's window and its position among the window's columns.
        self._features: list[tuple[FeatureProfile, _Window, int]] = []
        for (tensor, kind), features in grouped.items():
            ring = _Window(tensor, [f.column for f in features], window, kind)
            self._windows += (ring,)
            self._features += [(f, ring, i) for i, f in enumerate(features)]

    @property
    def profile(self) -> ReferenceProfile:
        """The reference profile live inputs are compared with."""
        return self._profile

    def observe(self, inputs: Mapping[str, Array]) -> None:
        """Remember the rows of one request's inputs; never raises.

        Inputs of an unexpected shape, or whose values do not convert to the feature's kind,
        are skipped: monitoring must never fail the request it watches.
        """
        for ring in self._windows:
            data = inputs.get(ring.name)
            if data is None:
                continue
            rows = ring.rows(data)
            if rows is None:
                continue
            with self._lock:
                try:
                    ring.write(rows)
                except (TypeError, ValueError):
                    # A partial write leaves valid rows of an older request in place.
                    continue

    def live(self, name: str) -> Array:
        """The live window of feature `name`, oldest row first (a copy)."""
        for feature, ring, index in self._features:
            if feature.name == name:
                with self._lock:
                    ordered = np.roll(ring.buffer, -ring.position, axis=0)
                    data = ordered[len(ordered) - ring.filled :]
                return data if data.ndim == 1 else data[:, index]
        raise InvalidInput(f"the reference profile has no feature {name!r}")

    def report(self) -> dict[str, Any]:
        """The drift of the live window from the reference, per feature, as JSON values."""
        with self._lock:
            snapshot = {
                id(ring): (ring.buffer[: ring.filled].copy(), ring.observed)
                for ring in self._windows
            }
        features = []
        for feature, ring, index in self._features:
            data, _ = snapshot[id(ring)]
            values = data if data.ndim == 1 else data[:, index]
            features.append(self._compare(feature, values))
        live = [f["live_rows"] for f in features]
        return {
            "status": "ok" if min(live) >= self._min_rows else "collecting",
            "window": min(live),
            "window_size": self._size,
            "min_rows": self._min_rows,
            "observed": max(observed for _, observed in snapshot.values()),
            "reference_rows": self._profile.rows,
            "features": features,
        }

    def _compare(self, feature: FeatureProfile, values: Array) -> dict[str, Any]:
        found: dict[str, Any] = {
            "name": feature.name,
            "input": feature.input,
            "column": feature.column,
            "kind": feature.kind,
            "live_rows": len(values),
            "psi": None,
            "ks": None,
        }
        if feature.kind == "numeric":
            values = values[np.isfinite(values)]
            if len(values) >= self._min_rows:
                bins = np.searchsorted(np.asarray(feature.edges), values, side="right")
                counts = np.bincount(bins, minlength=len(feature.proportions))
                found["psi"] = psi(feature.proportions, counts / len(values))
                found["ks"] = ks_statistic(feature.sample, values)
        elif len(values) >= self._min_rows:
            seen = Counter(as_text(v) for v in values.tolist())
            shares = [seen.pop(category, 0) / len(values) for category in feature.categories]
            other = sum(seen.values()) / len(values)
            found["psi"] = psi([*feature.shares, feature.other], [*shares, other])
        found["status"] = "ok" if found["psi"] is not None else "collecting"
        return found
