"""The scikit-learn runtime: estimators and pipelines from skops files or joblib/pickle files."""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np

from modelport.errors import InternalError, InvalidInput, Unsupported, UntrustedArtifact
from modelport.protocol.signature import Signature, TensorSpec
from modelport.runtimes.base import Arrays, Runtime, empty_output, input_text, output_array
from modelport.runtimes.pickled import error_class, read_object, require_predict

INPUT: Final = "input-0"
"""Name of the single input of an inferred signature."""

METHODS: Final = (
    "predict",
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "transform",
)
"""Estimator methods a signature may name as outputs; inference offers the first two."""

_FALLBACK: Final = (
    "pass --signature FILE to say what the model takes and gives"  # said when inference fails
)


def is_skops_file(path: Path) -> bool:
    """True when `path` is a skops archive (a zip holding schema.json), which loads without pickle.

    Anything else given to the sklearn runtime is unpickled, so callers that decide whether
    an artifact needs `--trust-pickle` must use this content check, not the file name.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return "schema.json" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


class SklearnRuntime(Runtime):
    """A fitted scikit-learn estimator or pipeline; outputs are its methods (predict, ...).

    Tabular models take one FP32 [-1, n_features] input; models whose first step is a text
    vectorizer take one BYTES [-1] input, decoded from UTF-8 before the model sees it.
    """

    format: ClassVar[str] = "sklearn"
    suffixes: ClassVar[tuple[str, ...]] = (".skops", ".joblib", ".pkl", ".pickle")
    row_independent: ClassVar[bool] = True
    steady: ClassVar[bool] = True

    def __init__(self, model: Any, signature: Signature) -> None:
        super().__init__(signature)
        self._model = model
        self._input = signature.inputs[0]
        self._decode = self._input.datatype == "BYTES"
        self._methods: dict[str, Callable[[Any], Any]] = {
            s.name: getattr(model, s.name) for s in signature.outputs
        }
        self._specs = {s.name: s for s in signature.outputs}

    @classmethod
    def runs_code(cls, path: Path) -> bool:
        """Everything but a skops archive whose types skops trusts by default can run code."""
        if not is_skops_file(path):
            return True
        import skops.io

        try:
            return bool(skops.io.get_untrusted_types(file=path))
        except Exception:  # an unreadable archive is treated as unsafe
            return True

    @classmethod
    def load(
        cls, path: Path, signature: Signature | None = None, *, trusted: bool = False
    ) -> SklearnRuntime:
        """Load a skops file, or a joblib/pickle file the caller has already trusted.

        skops files name every type they hold; types that skops does not trust by default
        make this raise UntrustedArtifact listing them, unless `trusted` is True (the pusher
        vouched for the artifact with `--trust-pickle`). Joblib and pickle files run code as
        they load: they must only reach this method after the caller's trust and digest checks.
        """
        model = _read(path, trusted)
        require_predict(model, "sklearn", "push a fitted scikit-learn estimator or pipeline")
        if signature is None:
            signature = _infer_signature(model)
        else:
            _check_signature(model, signature)
        return cls(model, signature)

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        """Call the estimator method behind each requested output on the single input."""
        x = inputs[self._input.name]
        if x.shape[0] == 0:
            # scikit-learn rejects empty arrays; an empty batch has an empty answer.
            return {name: empty_output(self._specs[name]) for name in outputs}
        if self._decode:
            x = input_text(x, self._input.name)
        return {name: _as_output(self._methods[name](x), self._specs[name]) for name in outputs}


def _read(path: Path, trusted: bool) -> Any:
    if is_skops_file(path):
        return _read_skops(path, trusted)
    if path.suffix.lower() == ".skops":
        # Never fall back to unpickling a file that was presented as pickle-free.
        raise InvalidInput(f"{path.name!r} is not a skops archive; save it with skops.io.dump")
    try:
        import joblib
    except ImportError:
        raise Unsupported(
            "loading joblib/pickle models needs joblib; install modelport[sklearn]"
        ) from None
    return read_object(
        lambda: joblib.load(path),
        f"cannot read {path.name!r} as a joblib/pickle file",
        "save the model with joblib.dump or skops.io.dump",
    )


def _read_skops(path: Path, trusted: bool) -> Any:
    try:
        import skops.io
    except ImportError:
        raise Unsupported("loading skops models needs skops; install modelport[sklearn]") from None
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
        if untrusted and not trusted:
            raise UntrustedArtifact(
                f"the skops file holds types that are not trusted by default: "
                f"{', '.join(untrusted)}; review them and push with --trust-pickle "
                "if you trust the file's source"
            )
        return skops.io.load(path, trusted=untrusted or None)
    except UntrustedArtifact:
        raise
    except ModuleNotFoundError as exc:
        raise InvalidInput(
            f"the skops model needs module {exc.name!r}, which is not installed here"
        ) from None
    except Exception as exc:
        raise InvalidInput(
            f"cannot read {path.name!r} as a skops file ({error_class(exc)}); "
            "save the model with skops.io.dump"
        ) from None


def _first_step(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    while isinstance(steps, list) and steps:
        model = steps[0][1]
        steps = getattr(model, "steps", None)
    return model


def _is_text(model: Any) -> bool:
    return callable(getattr(_first_step(model), "build_analyzer", None))


def _n_features(model: Any) -> int:
    n = getattr(model, "n_features_in_", None)
    if n is None:
        n = getattr(_first_step(model), "n_features_in_", None)
    return int(n) if isinstance(n, int | np.integer) else -1


def _infer_signature(model: Any) -> Signature:
    if _is_text(model):
        input_spec = TensorSpec(INPUT, "BYTES", (-1,))
        probe: Any = np.array([""], dtype=object)
    else:
        n = _n_features(model)
        input_spec = TensorSpec(INPUT, "FP32", (-1, n))
        probe = np.zeros((1, n), dtype=np.float32) if n > 0 else None
    outputs = [_predict_spec(model, probe)]
    classes = getattr(model, "classes_", None)
    if (
        callable(getattr(model, "predict_proba", None))
        and isinstance(classes, np.ndarray)
        and classes.ndim == 1
    ):
        outputs.append(TensorSpec("predict_proba", "FP32", (-1, len(classes))))
    return Signature((input_spec,), tuple(outputs))


def _predict_spec(model: Any, probe: Any) -> TensorSpec:
    """The predict output, from one prediction on a dummy row when the model allows it."""
    result: np.ndarray[Any, Any] | None = None
    if probe is not None:
        # A model may reject dummy rows; then the attributes below decide.
        with contextlib.suppress(Exception):
            result = np.asarray(model.predict(probe))
    if result is None:
        classes = getattr(model, "classes_", None)
        if isinstance(classes, np.ndarray) and classes.ndim == 1:
            return TensorSpec("predict", _label_datatype(classes.dtype), (-1,))
        width = getattr(model, "n_outputs_", 1)
        shape = (-1, int(width)) if isinstance(width, int) and width > 1 else (-1,)
        return TensorSpec("predict", "FP64", shape)
    return TensorSpec("predict", _label_datatype(result.dtype), (-1, *result.shape[1:]))


def _label_datatype(dtype: np.dtype[Any]) -> str:
    if dtype.kind in "iu":
        return "INT64"
    if dtype.kind == "f":
        return "FP64"
    if dtype.kind == "b":
        return "BOOL"
    if dtype.kind in "OUS":
        return "BYTES"
    raise InvalidInput(f"the model predicts values of dtype {dtype}; {_FALLBACK}")


def _check_signature(model: Any, signature: Signature) -> None:
    if len(signature.inputs) != 1:
        raise InvalidInput(
            "a scikit-learn model takes exactly one input tensor; "
            f"the signature lists {len(signature.inputs)}"
        )
    spec = signature.inputs[0]
    if _is_text(model):
        if spec.datatype != "BYTES" or len(spec.shape) != 1:
            raise InvalidInput(
                f"this model starts with a text vectorizer: input {spec.name!r} must be "
                f"BYTES [-1], not {spec.datatype} {list(spec.shape)}"
            )
    else:
        n = _n_features(model)
        if len(spec.shape) != 2:
            raise InvalidInput(
                f"input {spec.name!r} must be two-dimensional [-1, n_features], "
                f"not {list(spec.shape)}"
            )
        if n > 0 and spec.shape[1] not in (-1, n):
            raise InvalidInput(
                f"input {spec.name!r} has {spec.shape[1]} features but the model was fitted "
                f"on {n}; fix the signature"
            )
    offered = [m for m in METHODS if callable(getattr(model, m, None))]
    unknown = [s.name for s in signature.outputs if s.name not in offered]
    if unknown:
        raise InvalidInput(
            f"the signature names output(s) {', '.join(repr(n) for n in unknown)}, but this "
            f"model offers: {', '.join(offered)}"
        )


def _as_output(values: Any, spec: TensorSpec) -> np.ndarray[Any, Any]:
    """`values` as output `spec` holds them; InternalError when they do not convert."""
    array = np.asarray(values)
    try:
        return output_array(array, spec.datatype)
    except (TypeError, ValueError):
        raise InternalError(
            f"output {spec.name!r}: the model gives {array.dtype} values that do not convert "
            f"to {spec.datatype}; register the model with a matching signature"
        ) from None
