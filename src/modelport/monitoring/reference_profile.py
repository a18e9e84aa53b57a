"""A model's reference profile: how each input feature was distributed in reference data.

Built once, at push, from reference data (typically the training set) mapped onto the model's
inputs, and stored with the version; `drift.DriftMonitor` compares live inputs with it.
Numeric features keep decile bins and a sorted sample, categorical ones their most frequent
categories. Pure numpy: no I/O.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np

from modelport.errors import InvalidInput, Unsupported
from modelport.protocol.datatypes import numpy_dtype
from modelport.protocol.signature import TensorSpec

PROFILE_FORMAT: Final = 1
"""Version of the profile's JSON form; a newer one is refused rather than misread."""
SAMPLE_SIZE: Final = 1000
"""Reference values a numeric feature keeps (evenly spaced quantiles) for the KS statistic."""
TOP_CATEGORIES: Final = 20
"""Categories a categorical feature keeps; the rest share one "other" bin."""
_DECILES: Final = np.arange(1, 10) / 10

Kind = Literal["numeric", "categorical"]
Array = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class FeatureProfile:
    """How one feature was distributed in the reference data."""

    name: str
    input: str
    """Name of the input tensor the feature is read from."""
    column: int | None
    """Index in the tensor's second dimension; None for a one-dimensional tensor."""
    kind: Kind
    edges: tuple[float, ...] = ()
    """Numeric: inner bin edges (reference deciles, repeats removed); the first and last bins
    are open-ended, and a value equal to an edge falls in the bin above it."""
    proportions: tuple[float, ...] = ()
    """Numeric: reference share of each bin (len(edges) + 1 of them)."""
    sample: tuple[float, ...] = ()
    """Numeric: up to SAMPLE_SIZE reference values, sorted."""
    categories: tuple[str, ...] = ()
    """Categorical: the most frequent reference categories, most frequent first."""
    shares: tuple[float, ...] = ()
    """Categorical: reference share of each of `categories`."""
    other: float = 0.0
    """Categorical: reference share of every other category."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form (only the fields of its kind)."""
        head = {"name": self.name, "input": self.input, "column": self.column, "kind": self.kind}
        if self.kind == "numeric":
            return {
                **head,
                "edges": list(self.edges),
                "proportions": list(self.proportions),
                "sample": list(self.sample),
            }
        return {
            **head,
            "categories": list(self.categories),
            "shares": list(self.shares),
            "other": self.other,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FeatureProfile:
        """Build from the JSON form; InvalidInput says what is wrong."""
        try:
            name, tensor, column, kind = raw["name"], raw["input"], raw["column"], raw["kind"]
            if not (isinstance(name, str) and isinstance(tensor, str)):
                raise TypeError("name and input must be strings")
            if column is not None and (isinstance(column, bool) or not isinstance(column, int)):
                raise TypeError("column must be an integer or null")
            if kind == "numeric":
                feature = cls(
                    name,
                    tensor,
                    column,
                    kind,
                    edges=_floats(raw["edges"]),
                    proportions=_floats(raw["proportions"]),
                    sample=_floats(raw["sample"]),
                )
            elif kind == "categorical":
                categories = tuple(raw["categories"])
                if not all(isinstance(c, str) for c in categories):
                    raise TypeError("categories must be strings")
                feature = cls(
                    name,
                    tensor,
                    column,
                    kind,
                    categories=categories,
                    shares=_floats(raw["shares"]),
                    other=float(raw["other"]),
                )
            else:
                raise ValueError(f"kind must be numeric or categorical, not {kind!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"a reference profile feature is malformed ({exc})") from None
        feature._check()
        return feature

    def _check(self) -> None:
        if self.column is not None and self.column < 0:
            raise InvalidInput(f"reference profile feature {self.name!r}: column is negative")
        if self.kind == "numeric":
            consistent = (
                len(self.proportions) == len(self.edges) + 1
                and bool(self.sample)
                and all(a < b for a, b in zip(self.edges, self.edges[1:], strict=False))
                and all(a <= b for a, b in zip(self.sample, self.sample[1:], strict=False))
            )
        else:
            consistent = len(self.shares) == len(self.categories)
        if not consistent:
            raise InvalidInput(
                f"reference profile feature {self.name!r} is inconsistent; push the version "
                "again with its reference data to rebuild the profile"
            )


@dataclass(frozen=True, slots=True)
class ReferenceProfile:
    """The reference distribution of each profiled feature of a model's inputs."""

    features: tuple[FeatureProfile, ...]
    rows: int
    """Reference rows the profile was built from."""
    source_rows: int
    """Rows in the reference data (more than `rows` when it was sampled)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as the registry stores it."""
        return {
            "format": PROFILE_FORMAT,
            "rows": self.rows,
            "source_rows": self.source_rows,
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ReferenceProfile:
        """Build from the JSON form; InvalidInput when malformed, Unsupported when newer."""
        if not isinstance(raw, Mapping):
            raise InvalidInput("a reference profile is a JSON object")
        version = raw.get("format")
        if isinstance(version, int) and version > PROFILE_FORMAT:
            raise Unsupported(
                f"the reference profile has format {version}, newer than this modelport "
                f"reads ({PROFILE_FORMAT}); upgrade modelport"
            )
        if version != PROFILE_FORMAT:
            raise InvalidInput(f"the reference profile has an unknown format {version!r}")
        rows, source_rows, features = raw.get("rows"), raw.get("source_rows"), raw.get("features")
        if not (isinstance(rows, int) and isinstance(source_rows, int) and rows >= 1):
            raise InvalidInput('a reference profile needs positive integer "rows"/"source_rows"')
        if not isinstance(features, list) or not features:
            raise InvalidInput('a reference profile needs a non-empty list of "features"')
        parsed = tuple(FeatureProfile.from_dict(f) for f in features)
        names = [f.name for f in parsed]
        if len(set(names)) != len(names):
            raise InvalidInput("reference profile feature names must be unique")
        read: dict[str, list[int | None]] = {}
        for feature in parsed:
            read.setdefault(feature.input, []).append(feature.column)
        for tensor, columns in read.items():
            if len(set(columns)) != len(columns) or (None in columns and len(columns) > 1):
                raise InvalidInput(
                    f"reference profile features of input {tensor!r} must read distinct "
                    "columns (or the one column of a one-dimensional input)"
                )
        return cls(parsed, rows, source_rows)


def _floats(values: Any) -> tuple[float, ...]:
    floats = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in floats):
        raise ValueError("numbers must be finite")
    return floats


# -- building a profile --------------------------------------------------------------------


def map_features(
    columns: Sequence[str], inputs: Sequence[TensorSpec]
) -> list[tuple[str, TensorSpec, int | None]]:
    """Which data column feeds which input: (column name, input, index in the input).

    Each input named by a column is a feature when every input has one value per row
    ([-1] or [-1, 1]); other columns are ignored. Else one input [-1, F] takes exactly F
    columns in order (one [-1] input takes a single column). InvalidInput otherwise.
    """
    scalar = all(len(s.shape) == 1 or s.shape[1:] == (1,) for s in inputs)
    if inputs and scalar and all(s.name in columns for s in inputs):
        return [(s.name, s, None if len(s.shape) == 1 else 0) for s in inputs]
    if len(inputs) == 1:
        (spec,) = inputs
        if len(spec.shape) == 1 and len(columns) == 1:
            return [(columns[0], spec, None)]
        if len(spec.shape) == 2 and spec.shape[1] in (-1, len(columns)) and columns:
            return [(column, spec, i) for i, column in enumerate(columns)]
    takes = ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in inputs) or "none"
    shown = ", ".join(repr(c) for c in columns[:20]) + (", ..." if len(columns) > 20 else "")
    raise InvalidInput(
        f"the reference data does not fit the model's inputs ({takes}); give it a column "
        "named like each input when every input holds one value per row ([-1] or [-1, 1]), "
        "or, for a model with one [-1, F] input, exactly F columns in the order of the "
        f"input's features and no other (such as a label). It has {len(columns)} "
        f"column(s): {shown}"
    )


def build_profile(
    columns: Mapping[str, Array],
    inputs: Sequence[TensorSpec],
    *,
    source_rows: int | None = None,
) -> dict[str, Any]:
    """The JSON form of the reference profile of `columns` (equal-length 1-D arrays by name).

    Columns map to `inputs` as `map_features` says. A BYTES input's feature is categorical
    (values compared as text), any other numeric; missing and non-finite numbers are left
    out. `source_rows` is the size of the data the columns were sampled from, if they were.
    InvalidInput names a column that does not fit.
    """
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise InvalidInput("the reference data's columns differ in length")
    rows = lengths.pop() if lengths else 0
    if rows == 0:
        raise InvalidInput("the reference data has no rows; give at least one")
    features = []
    for column, spec, index in map_features(list(columns), inputs):
        values = np.asarray(columns[column])
        if spec.datatype == "BYTES":
            features.append(_categorical(column, spec.name, index, values))
        else:
            features.append(_numeric(column, spec, index, values))
    profile = ReferenceProfile(tuple(features), rows, max(source_rows or rows, rows))
    return profile.to_dict()


def _numeric(name: str, spec: TensorSpec, column: int | None, values: Array) -> FeatureProfile:
    numbers = _as_numbers(name, values)
    if spec.datatype in ("FP16", "FP32"):
        # Live values arrive rounded to the input's precision: 5.1 as FP32 is just below
        # 5.1, and would fall in another bin than the reference's 5.1 on a decile edge.
        with np.errstate(over="ignore"):
            numbers = numbers.astype(numpy_dtype(spec.datatype)).astype(np.float64)
    numbers = np.sort(numbers[np.isfinite(numbers)])
    if numbers.size == 0:
        raise InvalidInput(f"reference column {name!r} holds no finite numbers")
    # Deciles that are data values (not interpolated between two): a discrete feature's
    # values each land in a bin of their own.
    edges = np.unique(np.quantile(numbers, _DECILES, method="lower"))
    counts = np.bincount(np.searchsorted(edges, numbers, side="right"), minlength=edges.size + 1)
    if numbers.size > SAMPLE_SIZE:
        numbers = numbers[np.linspace(0, numbers.size - 1, SAMPLE_SIZE).round().astype(np.intp)]
    return FeatureProfile(
        name,
        spec.name,
        column,
        "numeric",
        edges=tuple(edges.tolist()),
        proportions=tuple((counts / counts.sum()).tolist()),
        sample=tuple(numbers.tolist()),
    )


def _as_numbers(name: str, values: Array) -> Array:
    if values.dtype.kind in "biuf":
        return values.astype(np.float64)
    numbers = np.empty(values.size, dtype=np.float64)
    for i, value in enumerate(values.tolist()):
        if value is None or (isinstance(value, str) and not value.strip()):
            numbers[i] = math.nan  # a blank cell is a missing value
            continue
        try:
            numbers[i] = float(value)
        except (TypeError, ValueError):
            shown = str(value)[:40]
            raise InvalidInput(
                f"reference column {name!r} feeds a numeric input but holds {shown!r}; give "
                "numbers (blank for missing)"
            ) from None
    return numbers


def _categorical(name: str, tensor: str, column: int | None, values: Array) -> FeatureProfile:
    counts = Counter(as_text(v) for v in values.tolist())
    total = sum(counts.values())
    # Most frequent first; ties by name, so that the same data always gives the same profile.
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_CATEGORIES]
    kept = sum(count for _, count in top)
    return FeatureProfile(
        name,
        tensor,
        column,
        "categorical",
        categories=tuple(category for category, _ in top),
        shares=tuple(count / total for _, count in top),
        other=(total - kept) / total,
    )


def as_text(value: Any) -> str:
    """A categorical value as text: BYTES tensors hold bytes, data files hold str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
