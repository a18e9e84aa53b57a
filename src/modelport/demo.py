"""The demo registry: small models trained from data that ships with scikit-learn (no downloads)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelport.registry.store import Registry
from modelport.serving.artifacts import push_artifact

Built = tuple[Path, str, dict[str, Any]]
"""(artifact file, format, provenance metadata)."""

_SEED = 0


def _iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


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
_NAMES = ["anna", "marc", "lucía", "jonas", "sam", "zoé"]


def build_greeting_language(out: Path) -> Built:
    """A text classifier (BYTES input): which language a greeting is in, from generated phrases."""
    import skops.io
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts, labels = [], []
    for language, phrases in _GREETINGS.items():
        for phrase in phrases:
            for name in _NAMES:
                texts.append(f"{phrase} {name}")
                labels.append(language)
    model = make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3)),
        LogisticRegression(max_iter=1000, random_state=_SEED),
    ).fit(texts, labels)
    path = out / "greeting-language.skops"
    skops.io.dump(model, path)
    meta = {"dataset": "generated greetings", "labels": ",".join(_GREETINGS)}
    return path, "sklearn", meta


DEMO_MODELS: tuple[tuple[str, Callable[[Path], Built]], ...] = (
    ("iris", build_iris),
    ("iris-xgboost", build_iris_xgboost),
    ("diabetes-lightgbm", build_diabetes_lightgbm),
    ("iris-onnx", build_iris_onnx),
    ("greeting-language", build_greeting_language),
)


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
                mv = push_artifact(
                    registry, path, name=name, format=fmt, metadata=meta, created_by=created_by
                )
                yield f"{name}: version {mv.version} ({fmt}, sha256 {mv.digest[:12]})"
    finally:
        registry.close()
