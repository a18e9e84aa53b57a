"""Compiled models: convert a model to ONNX at push, and keep it only if it gives the same answers.

The compiled graph is run by modelport's own OnnxRuntime next to the original runtime on a
verification sample (the caller's reference rows, else rows generated from the signature).
Every output must agree: floats within `atol + rtol * |original|`, labels and other exact
outputs equal, except rows where the original's class probabilities tie within that float
tolerance (then float32 rounding may pick the other class; such rows are counted).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

import numpy as np

from modelport.errors import InvalidInput, ModelportError, Unsupported
from modelport.intake import nonfinite
from modelport.intake.conversion import to_onnx
from modelport.protocol.datatypes import numpy_dtype
from modelport.protocol.signature import Signature, TensorSpec
from modelport.runtimes.base import Arrays, Runtime
from modelport.runtimes.onnx import OnnxRuntime

TARGETS: Final = ("onnx",)
"""Formats a model can be compiled to."""

SAMPLE_ROWS: Final = 512
"""Rows in the verification sample (reference rows beyond this are subsampled)."""

SAMPLE_SEED: Final = 0
"""Seed for generated rows and for subsampling reference rows: the check is reproducible."""

Reference: TypeAlias = "np.ndarray[Any, Any] | Mapping[str, np.ndarray[Any, Any]]"
"""Rows to verify on: one array for a single-input model, or arrays by input name."""

_FLOATS: Final = frozenset({"FP16", "FP32", "FP64"})


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Float outputs agree where |compiled - original| <= atol + rtol * |original|.

    The defaults allow for float32 arithmetic: onnxruntime computes in float32 where
    scikit-learn computes in float64 (a float32 sum of a few hundred terms is off by a few
    1e-7 relative), while an actually wrong graph is off by far more.
    """

    atol: float = 1e-5
    rtol: float = 1e-4

    def allows(self, original: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The largest allowed absolute difference for each original value."""
        return np.asarray(self.atol + self.rtol * np.abs(original))


@dataclass(frozen=True, slots=True)
class Compilation:
    """What compiling a model gave: the compiled bytes when they are kept, and the report."""

    target: str
    artifact: bytes | None
    """The compiled artifact, or None when it was not kept (the report says why)."""
    report: dict[str, Any]

    @property
    def kept(self) -> bool:
        """True when the compiled artifact passed its check and is to be stored."""
        return self.artifact is not None


def compile_model(
    runtime: Runtime,
    *,
    target: str = "onnx",
    reference: Reference | None = None,
    rows: int = SAMPLE_ROWS,
    tolerance: Tolerance = Tolerance(),
) -> Compilation:
    """Convert the model behind `runtime` to `target` and keep it only if it verifies.

    InvalidInput for an unknown target or reference rows that do not fit the signature (the
    caller's mistakes). A model that cannot be converted, or whose conversion disagrees with
    it on the sample, gives a Compilation without artifact whose report says why.
    """
    if target not in TARGETS:
        raise InvalidInput(f"cannot compile to {target!r}; the targets are {', '.join(TARGETS)}")
    report: dict[str, Any] = {"target": target, "kept": False}
    try:
        sample, source = verification_sample(runtime.signature, reference, rows=rows)
    except Unsupported as exc:
        return _rejected(target, report, exc.message)
    report["sample"] = {"source": source, "rows": _rows(sample), "seed": SAMPLE_SEED}
    report["tolerance"] = {"atol": tolerance.atol, "rtol": tolerance.rtol}
    try:
        artifact, converter = to_onnx(runtime)
    except Unsupported as exc:
        return _rejected(target, report, exc.message)
    except Exception as exc:  # a converter's fault must not fail the push of the original
        return _rejected(target, report, f"conversion failed ({_describe(exc)})")
    report["converter"] = converter
    try:
        compiled = _load(artifact, runtime.signature)
    except ModelportError as exc:
        return _rejected(target, report, f"onnxruntime cannot load the converted model: {exc}")
    try:
        outputs = verify(runtime, compiled, sample, tolerance)
        non_finite = nonfinite.behaviour(
            runtime,
            compiled,
            sample,
            lambda a, b, rows: all(c["passed"] for c in verify(a, b, rows, tolerance).values()),
        )
    except Exception as exc:  # e.g. a model that refuses negative inputs on generated rows
        return _rejected(
            target,
            report,
            f"the models could not be run on the {source} sample ({_describe(exc)}); "
            "give reference rows that the model accepts",
        )
    finally:
        compiled.close()
    report["outputs"] = outputs
    report["non_finite"] = non_finite
    failed = {name: check for name, check in outputs.items() if not check["passed"]}
    rows_text = f"{report['sample']['rows']} {source} rows"
    if failed:
        parts = [f"{name} on {c['mismatches']} rows{_diff_text(c)}" for name, c in failed.items()]
        report["headline"] = f"outputs differ on {rows_text}: {'; '.join(parts)}"
        return Compilation(target, None, report)
    parts = [f"{name} {_agreement(c)}" for name, c in outputs.items()]
    report["kept"] = True
    report["headline"] = f"outputs match on {rows_text}: {', '.join(parts)}"
    return Compilation(target, artifact, report)


def verify(
    original: Runtime,
    compiled: Runtime,
    sample: Mapping[str, np.ndarray[Any, Any]],
    tolerance: Tolerance = Tolerance(),
) -> dict[str, dict[str, Any]]:
    """Compare every output of `compiled` with `original` on `sample`, one check per output.

    Each check holds `datatype`, `tolerance` ({"atol", "rtol"} or "exact"), `max_abs_diff`
    and `max_rel_diff` (None for text), `mismatches` (rows where the output disagrees),
    `ties` (label rows excused because the original's probabilities tie) and `passed`.
    Errors the runtimes raise on the sample propagate.
    """
    names = list(original.signature.output_names)
    want = original.predict(sample, names)
    got = compiled.predict(sample, names)
    ties = _ties(want.get("predict_proba"), tolerance)
    checks = {}
    for spec in original.signature.outputs:
        excusable = ties if spec.name == "predict" and spec.datatype not in _FLOATS else None
        checks[spec.name] = _check(spec, want[spec.name], got[spec.name], tolerance, excusable)
    return checks


def verification_sample(
    signature: Signature,
    reference: Reference | None = None,
    *,
    rows: int = SAMPLE_ROWS,
    seed: int = SAMPLE_SEED,
) -> tuple[Arrays, str]:
    """Inputs to compare a model with its compiled form on, and their source.

    With `reference`: up to `rows` of its rows (a seeded random choice when it has more) as
    the signature's datatypes, source "reference"; InvalidInput when they do not fit the
    signature. Without: `rows` generated rows, source "generated": floats are a random sign
    times 10**u with u uniform in [-2, 2] (magnitudes 0.01 to 100, as many small as large),
    integers uniform in [-100, 100] ([0, 100] unsigned), booleans fair coin flips, text one
    to four random lowercase words. Unsupported when an input has a variable inner dimension,
    which only reference rows can fill.
    """
    rng = np.random.default_rng(seed)
    if reference is not None:
        return _reference_sample(signature, reference, rows, rng), "reference"
    return {spec.name: _generated(spec, rows, rng) for spec in signature.inputs}, "generated"


def _reference_sample(
    signature: Signature, reference: Reference, rows: int, rng: np.random.Generator
) -> Arrays:
    if isinstance(reference, Mapping):
        given = dict(reference)
    elif len(signature.inputs) == 1:
        given = {signature.inputs[0].name: reference}
    else:
        raise InvalidInput(
            f"the model takes {len(signature.inputs)} inputs; give reference rows by input name"
        )
    names = [s.name for s in signature.inputs]
    if sorted(given) != sorted(names):
        raise InvalidInput(
            f"reference rows must be given for the inputs {names}, not {sorted(given)}"
        )
    arrays = {spec.name: _as_input(spec, given[spec.name]) for spec in signature.inputs}
    counts = {a.shape[0] for a in arrays.values()}
    if len(counts) != 1 or 0 in counts:
        raise InvalidInput("reference inputs must all have the same, non-zero number of rows")
    (count,) = counts
    if count > rows:
        chosen = np.sort(rng.choice(count, size=rows, replace=False))
        arrays = {name: a[chosen] for name, a in arrays.items()}
    return arrays


def _as_input(spec: TensorSpec, values: Any) -> np.ndarray[Any, Any]:
    array = np.asarray(values)
    if not spec.shape_matches((array.shape[0] if array.ndim else 0, *array.shape[1:])):
        raise InvalidInput(
            f"reference rows for {spec.name!r} have shape {list(array.shape)}; the signature "
            f"says {list(spec.shape)}"
        )
    if spec.datatype == "BYTES":
        if array.dtype.kind not in "OSU":
            raise InvalidInput(f"reference rows for {spec.name!r} must be text")
        encoded = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.ravel()]
        return np.array(encoded, dtype=object).reshape(array.shape)
    if array.dtype.kind not in "biuf":
        raise InvalidInput(
            f"reference rows for {spec.name!r} must be numbers, not {array.dtype} values"
        )
    return array.astype(numpy_dtype(spec.datatype))


def _generated(spec: TensorSpec, rows: int, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    if any(d < 0 for d in spec.shape[1:]):
        raise Unsupported(
            f"input {spec.name!r} has a variable inner dimension {list(spec.shape)}, so no "
            "sample can be generated for it; pass reference rows"
        )
    shape = (rows, *spec.shape[1:])
    dtype = numpy_dtype(spec.datatype)
    if spec.datatype in _FLOATS:
        values = rng.choice([-1.0, 1.0], size=shape) * 10.0 ** rng.uniform(-2, 2, size=shape)
        return values.astype(dtype)
    if spec.datatype == "BOOL":
        return rng.random(shape) < 0.5
    if spec.datatype == "BYTES":
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        words = (
            " ".join("".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(n))
            for n in rng.integers(1, 5, size=int(np.prod(shape)))
        )
        return np.array([w.encode() for w in words], dtype=object).reshape(shape)
    low = 0 if dtype.kind == "u" else -100
    return rng.integers(low, 101, size=shape).astype(dtype)


def _ties(
    probabilities: np.ndarray[Any, Any] | None, tolerance: Tolerance
) -> np.ndarray[Any, Any] | None:
    """Rows whose two highest class probabilities are within the float tolerance."""
    if probabilities is None or probabilities.ndim != 2 or probabilities.shape[1] < 2:
        return None
    top = np.sort(probabilities.astype(np.float64), axis=1)[:, -2:]
    return np.asarray(top[:, 1] - top[:, 0] <= tolerance.allows(top[:, 1]))


def _check(
    spec: TensorSpec,
    want: np.ndarray[Any, Any],
    got: np.ndarray[Any, Any],
    tolerance: Tolerance,
    ties: np.ndarray[Any, Any] | None,
) -> dict[str, Any]:
    exact = spec.datatype not in _FLOATS
    check: dict[str, Any] = {
        "datatype": spec.datatype,
        "tolerance": "exact" if exact else {"atol": tolerance.atol, "rtol": tolerance.rtol},
        "max_abs_diff": None,
        "max_rel_diff": None,
    }
    rows = want.shape[0]
    if got.shape != want.shape:
        check.update(mismatches=rows, ties=0, passed=False)
        check["note"] = f"shape {list(got.shape)} instead of {list(want.shape)}"
        return check
    # Compared in their own dtype: int64 labels beyond 2**53 would blur in float64.
    same = np.asarray(want == got)
    if spec.datatype != "BYTES":
        a, b = want.astype(np.float64), got.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            # Equal values (infinities included) and NaN in both places agree exactly.
            equal = (a == b) | (np.isnan(a) & np.isnan(b))
            diff = np.where(equal, 0.0, np.abs(b - a))
            rel = np.where(equal, 0.0, diff / np.abs(a))
            # Only finite originals get a tolerance: rtol * inf would excuse any value.
            close = np.isfinite(a) & (diff <= tolerance.allows(np.where(np.isfinite(a), a, 0)))
        if not exact:
            same = equal | close
        check["max_abs_diff"] = _finite_max(diff)
        check["max_rel_diff"] = _finite_max(rel)
    wrong = ~same.reshape(rows, -1).all(axis=1)
    excused = wrong & ties if ties is not None else np.zeros(rows, dtype=bool)
    check["mismatches"] = int(np.count_nonzero(wrong & ~excused))
    check["ties"] = int(np.count_nonzero(excused))
    check["passed"] = check["mismatches"] == 0
    return check


def _finite_max(values: np.ndarray[Any, Any]) -> float | None:
    """The largest finite value (reports are JSON, which has no NaN); None if there is none."""
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else None


def _diff_text(check: Mapping[str, Any]) -> str:
    if check.get("note"):
        return f" ({check['note']})"
    diff = check["max_abs_diff"]
    return "" if diff is None or check["tolerance"] == "exact" else f" (max abs diff {diff:.2g})"


def _agreement(check: Mapping[str, Any]) -> str:
    if check["tolerance"] != "exact":
        return f"within tolerance (max abs diff {check['max_abs_diff'] or 0:.2g})"
    return "equal" if not check["ties"] else f"equal but for {check['ties']} tied rows"


def _rows(sample: Arrays) -> int:
    return int(next(iter(sample.values())).shape[0])


def _load(artifact: bytes, signature: Signature) -> Runtime:
    """The compiled bytes in modelport's own ONNX runtime, under the registered signature."""
    with tempfile.TemporaryDirectory(prefix="modelport-compile-") as tmp:
        path = Path(tmp) / "compiled.onnx"
        path.write_bytes(artifact)
        # onnxruntime reads the whole file into the session, so it may go afterwards.
        return OnnxRuntime.load(path, signature)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ModelportError):
        return exc.message
    lines = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {lines[0][:200]}" if lines else exc.__class__.__name__


def _rejected(target: str, report: dict[str, Any], reason: str) -> Compilation:
    report["reason"] = reason
    report["headline"] = reason
    return Compilation(target, None, report)
