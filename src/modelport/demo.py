"""The demo registry: small models trained from data that ships with scikit-learn (no downloads).

The scikit-learn, XGBoost and LightGBM models are also compiled to ONNX at push (each kept
only if it matches its original), so that serving the demo imports none of those libraries.
Each model is pushed with the rows it was trained on as its reference data, so that the served
demo answers drift (`GET /v2/models/NAME/drift`) too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import InternalError
from modelport.intake.push import push_artifact
from modelport.monitoring.reference_profile import build_profile
from modelport.protocol.signature import Signature
from modelport.registry.store import Registry

Built = tuple[Path, str, dict[str, Any]]
"""(artifact file, format, provenance metadata)."""
Columns = dict[str, np.ndarray[Any, Any]]
"""Reference data: feature name -> one value per training row, in the input's feature order."""

_SEED = 0


def _iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


def _iris_columns() -> Columns:
    from sklearn.datasets import load_iris

    x, _ = _iris()
    names = [n.removesuffix(" (cm)").replace(" ", "_") for n in load_iris().feature_names]
    return {name: x[:, j] for j, name in enumerate(names)}


def _diabetes_columns() -> Columns:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = data.data.astype(np.float32)
    return {name: x[:, j] for j, name in enumerate(data.feature_names)}


def _accuracy(predicted: Any, y: Any) -> str:
    return f"{float(np.mean(np.asarray(predicted) == np.asarray(y))):.4f}"


def build_iris(out: Path) -> Built:
    """LogisticRegression on iris, saved with skops (loads without trusting code)."""
    import skops.io
    from sklearn.linear_model import LogisticRegression

    x, y = _iris()
    model = LogisticRegression(max_iter=1000, random_state=_SEED).fit(x, y)
    path = out / "iris.skops"
    skops.io.dump(model, path)
    meta = {
        "dataset": "sklearn.datasets.load_iris",
        "train_accuracy": _accuracy(model.predict(x), y),
    }
    return path, "sklearn", meta


def build_iris_xgboost(out: Path) -> Built:
    """A gradient-boosted iris classifier in XGBoost's native UBJ format."""
    import xgboost

    x, y = _iris()
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=3, random_state=_SEED, n_jobs=1)
    model.fit(x, y)
    path = out / "iris-xgboost.ubj"
    model.get_booster().save_model(path)
    meta = {
        "dataset": "sklearn.datasets.load_iris",
        "train_accuracy": _accuracy(model.predict(x), y),
    }
    return path, "xgboost", meta


def build_diabetes_lightgbm(out: Path) -> Built:
    """A LightGBM regressor on the diabetes data set, as a LightGBM text model."""
    import lightgbm
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    model = lightgbm.LGBMRegressor(n_estimators=50, random_state=_SEED, n_jobs=1, verbose=-1)
    model.fit(x.astype(np.float32), y)
    path = out / "diabetes-lightgbm.txt"
    model.booster_.save_model(path)
    return path, "lightgbm", {"dataset": "sklearn.datasets.load_diabetes", "target": "progression"}


def build_iris_onnx(out: Path) -> Built:
    """A random forest on iris compiled to ONNX with skl2onnx (plain tensors, no ZipMap)."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    x, y = _iris()
    model = RandomForestClassifier(n_estimators=20, max_depth=4, random_state=_SEED).fit(x, y)
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    path = out / "iris-onnx.onnx"
    path.write_bytes(onx.SerializeToString())
    meta = {
        "dataset": "sklearn.datasets.load_iris",
        "train_accuracy": _accuracy(model.predict(x), y),
    }
    return path, "onnx", meta


_GREETINGS = {
    "en": ["hello", "good morning", "good evening", "thank you", "see you soon", "how are you"],
    "fr": ["bonjour", "bonsoir", "merci beaucoup", "à bientôt", "comment allez-vous", "salut"],
    "es": ["hola", "buenos días", "buenas noches", "muchas gracias", "hasta luego", "qué tal"],
    "de": ["hallo", "guten morgen", "guten abend", "vielen dank", "bis bald", "wie geht's"],
}
UNKNOWN_LANGUAGE = "unknown"
"""What `greeting-language` answers for text that is not one of its greetings."""


def build_greeting_language(out: Path) -> Built:
    """A text model (BYTES in and out) as an ONNX graph: the language of a known greeting.

    One `ai.onnx.ml` LabelEncoder maps each phrase of `_GREETINGS`, exactly as written, to
    its language code, and anything else to UNKNOWN_LANGUAGE. Built by hand rather than
    trained: a scikit-learn text pipeline would make the server import scikit-learn at start
    and cannot be compiled (see intake.conversion), while this graph needs onnxruntime only.
    """
    from onnx import TensorProto, checker, helper

    phrases = [(phrase, language) for language, ps in _GREETINGS.items() for phrase in ps]
    encoder = helper.make_node(
        "LabelEncoder",
        ["text"],
        ["language"],
        domain="ai.onnx.ml",
        keys_strings=[phrase for phrase, _ in phrases],
        values_strings=[language for _, language in phrases],
        default_string=UNKNOWN_LANGUAGE,
    )
    graph = helper.make_graph(
        [encoder],
        "greeting-language",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("language", TensorProto.STRING, ["batch"])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
        # IR 8 is what opset 17 needs, old enough for every onnxruntime that runs opset 17.
        ir_version=8,
        producer_name="modelport.demo",
    )
    checker.check_model(model, full_check=True)
    path = out / "greeting-language.onnx"
    path.write_bytes(model.SerializeToString())
    meta = {"dataset": "the demo's greeting table", "labels": ",".join(_GREETINGS)}
    return path, "onnx", meta


DEMO_MODELS: tuple[tuple[str, Callable[[Path], Built]], ...] = (
    ("iris", build_iris),
    ("iris-xgboost", build_iris_xgboost),
    ("diabetes-lightgbm", build_diabetes_lightgbm),
    ("iris-onnx", build_iris_onnx),
    ("greeting-language", build_greeting_language),
)

COMPILED_DEMO_MODELS: frozenset[str] = frozenset({"iris", "iris-xgboost", "diabetes-lightgbm"})
"""Demo models pushed with compile="onnx": served from ONNX, so serving them needs no
scikit-learn, XGBoost or LightGBM import (those take most of a server's start-up)."""


def _greeting_columns() -> Columns:
    phrases = [phrase for ps in _GREETINGS.values() for phrase in ps]
    return {"text": np.array(phrases, dtype=np.object_)}


REFERENCE_DATA: dict[str, Callable[[], Columns]] = {
    "iris": _iris_columns,
    "iris-xgboost": _iris_columns,
    "diabetes-lightgbm": _diabetes_columns,
    "iris-onnx": _iris_columns,
    "greeting-language": _greeting_columns,
}
"""Each demo model's training rows (features only), which its reference profile is built from."""


def _profile(columns: Columns) -> Callable[[Signature], dict[str, Any]]:
    return lambda signature: build_profile(columns, signature.inputs)


def build_demo(location: str, created_by: str) -> Iterator[str]:
    """Train and register each demo model not yet in the registry; yields one line per model."""
    registry = Registry.open(location)
    try:
        existing = set(registry.models())
        with tempfile.TemporaryDirectory(prefix="modelport-demo-") as tmp:
            for name, build in DEMO_MODELS:
                if name in existing:
                    yield f"{name}: already registered, kept as it is"
                    continue
                path, fmt, meta = build(Path(tmp))
                compile = "onnx" if name in COMPILED_DEMO_MODELS else None
                mv = push_artifact(
                    registry,
                    path,
                    name=name,
                    format=fmt,
                    metadata=meta,
                    created_by=created_by,
                    compile=compile,
                    profile=_profile(REFERENCE_DATA[name]()),
                )
                line = f"{name}: version {mv.version} ({fmt}, sha256 {mv.digest[:12]}"
                line += "; reference profile of its training rows"
                if compile is not None:
                    if mv.compiled is None:
                        # A demo that silently served its originals would start slowly and
                        # hide a conversion regression; say so loudly instead.
                        reason = (mv.compile_report or {}).get("headline", "no report")
                        raise InternalError(f"demo model {name!r} was not compiled: {reason}")
                    line += f"; compiled to {mv.compiled.format}, sha256 {mv.compiled.digest[:12]}"
                yield line + ")"
    finally:
        registry.close()
