"""Data drift: how far live inputs have moved from a model's reference profile.

A server keeps the most recent rows of every profiled feature in a ring buffer that all its
processes share (`DriftMonitor.observe`, on the request path; `window.Window`) and compares
them with the reference profile on demand (`DriftMonitor.report`): the population stability
index (PSI) over the reference's bins or categories, and for numeric features the two-sample
Kolmogorov-Smirnov statistic. Pure numpy over shared memory: no I/O, no metrics library.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import numpy as np

from modelport.errors import InvalidInput, Overloaded
from modelport.monitoring.reference_profile import (
    Array,
    FeatureProfile,
    Kind,
    ReferenceProfile,
    build_profile,
)
from modelport.monitoring.window import Window, decode
from modelport.serving.shared_memory import ProcessLock

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

OBSERVE_TIMEOUT: Final = 0.02
"""Seconds `observe` waits for the window's lock before it skips the request's rows."""
REPORT_TIMEOUT: Final = 1.0
"""Seconds a report waits for the window's lock before it answers Overloaded."""


class DriftMonitor:
    """Keeps the last `window` rows of live inputs and reports their drift from a profile.

    The window is the server's: its rows and counters live in shared memory made here, so
    every process forked after the monitor was made (the server's workers) writes into the
    same window, and any process's report covers the rows all of them observed. One
    `ProcessLock` orders writes and reads across processes and threads. `observe` costs a
    dictionary lookup per input tensor (and per categorical value, for its bin) and one array
    copy per tensor under that lock; `report` does the arithmetic on a snapshot taken under
    it. PSI and KS stay null until a feature has `min_rows` rows.
    """

    __slots__ = ("_features", "_lock", "_min_rows", "_profile", "_size", "_windows")

    def __init__(self, profile: ReferenceProfile, window: int = 1000, min_rows: int = 30) -> None:
        if not 1 <= min_rows <= window:
            raise InvalidInput(f"drift needs 1 <= min_rows ({min_rows}) <= window ({window})")
        self._profile = profile
        self._size = window
        self._min_rows = min_rows
        self._lock = ProcessLock()
        grouped: dict[tuple[str, Kind], list[FeatureProfile]] = {}
        for feature in profile.features:
            grouped.setdefault((feature.input, feature.kind), []).append(feature)
        self._windows: tuple[Window, ...] = ()
        # Each feature's window and its position among the window's columns.
        self._features: list[tuple[FeatureProfile, Window, int]] = []
        for (tensor, kind), features in grouped.items():
            ring = Window(tensor, features, window, kind)
            self._windows += (ring,)
            self._features += [(f, ring, i) for i, f in enumerate(features)]

    @property
    def profile(self) -> ReferenceProfile:
        """The reference profile live inputs are compared with."""
        return self._profile

    def observe(self, inputs: Mapping[str, Array]) -> None:
        """Remember the rows of one request's inputs; never raises, never waits long.

        Inputs of an unexpected shape, or whose values do not convert to the feature's kind,
        are skipped: monitoring must never fail the request it watches. So are all of the
        request's rows when the window's lock is not had within OBSERVE_TIMEOUT (a process
        stalled while holding it): monitoring must never stall the request either.
        """
        prepared = []
        for ring in self._windows:
            data = inputs.get(ring.name)
            if data is not None:
                rows = ring.prepare(data)
                if rows is not None:
                    prepared.append((ring, rows))
        if not prepared:
            return
        with self._lock.hold(OBSERVE_TIMEOUT) as held:
            if held:
                for ring, rows in prepared:
                    ring.write(rows)

    def live(self, name: str) -> Array:
        """The live window of feature `name`, oldest row first (a copy).

        A numeric feature's values as float64; a categorical feature's as its category's text
        in the profile, None for a value outside the profile's categories (the "other" bin):
        the window keeps which bin a row fell in, not the value the request sent.
        """
        for feature, ring, index in self._features:
            if feature.name == name:
                with self._locked():
                    data = ring.ordered()
                values = data if data.ndim == 1 else data[:, index]
                if feature.kind == "categorical":
                    return decode(values, feature.categories)
                return values
        raise InvalidInput(f"the reference profile has no feature {name!r}")

    def report(self) -> dict[str, Any]:
        """The drift of the server's live window from the reference, per feature, as JSON.

        Overloaded when the window's lock is not had within REPORT_TIMEOUT.
        """
        with self._locked():
            snapshot = {id(ring): ring.snapshot() for ring in self._windows}
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

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock.hold(REPORT_TIMEOUT) as held:
            if not held:
                raise Overloaded("the drift window is busy; retry the drift report")
            yield

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
            # Codes are category indices, the last one "other" (window.py).
            counts = np.bincount(values, minlength=len(feature.categories) + 1)
            shares = counts / len(values)
            found["psi"] = psi([*feature.shares, feature.other], shares)
        found["status"] = "ok" if found["psi"] is not None else "collecting"
        return found
