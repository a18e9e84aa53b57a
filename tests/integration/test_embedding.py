"""Embedding: `modelport.load(...)` gives a model that predicts like the library it came from."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import modelport
from modelport.errors import InvalidInput, NotFound
from modelport.registry.store import Registry

from ..conftest import assert_close_compiled, assert_close_float32

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def iris(demo_registry: Path) -> Iterator[modelport.Model]:
    model = modelport.load("iris", registry=demo_registry)
    yield model
    model.close()


@pytest.fixture(scope="module")
def reference() -> tuple[LogisticRegression, np.ndarray]:
    """The demo's iris model trained again the same way, and the data."""
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    return LogisticRegression(max_iter=1000, random_state=0).fit(x, y), x


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "original"])
def test_predict_equals_sklearn(
    demo_registry: Path, reference: tuple[LogisticRegression, np.ndarray], compiled: bool
) -> None:
    model, x = reference
    iris = modelport.load("iris", registry=demo_registry, compiled=compiled)
    try:
        got = iris.predict(x)
    finally:
        iris.close()
    assert set(got) == {"predict", "predict_proba"}
    assert got["predict"].dtype == np.int64
    assert got["predict"].tolist() == model.predict(x).tolist()
    assert got["predict_proba"].dtype == np.float32
    # The original is scikit-learn itself, in float32 like the reference. The compiled ONNX form
    # is held to the tolerance its compile check used (labels stay exact).
    if compiled:
        assert_close_compiled(got["predict_proba"], model.predict_proba(x))
    else:
        assert_close_float32(got["predict_proba"], model.predict_proba(x))


def test_named_inputs_lists_and_output_subset(
    iris: modelport.Model, reference: tuple[LogisticRegression, np.ndarray]
) -> None:
    model, x = reference
    rows = x[:3].tolist()  # plain lists are converted to the input's datatype
    got = iris.predict({"input-0": rows}, outputs=["predict"])
    assert list(got) == ["predict"]
    assert got["predict"].tolist() == model.predict(x[:3]).tolist()


def test_version_and_signature(iris: modelport.Model, demo_registry: Path) -> None:
    with Registry.open(demo_registry) as store:
        mv = store.get("iris", 1)
    assert iris.version == mv
    assert [s.to_dict() for s in iris.signature.inputs] == [
        {"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}
    ]
    assert mv.digest[:12] in repr(iris)
    pinned = modelport.load("iris", version=1, registry=str(demo_registry))
    try:
        assert pinned.version.digest == mv.digest
    finally:
        pinned.close()


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        (np.zeros((2, 3), dtype=np.float32), ("[2, 3]", "[-1, 4]")),
        (np.zeros(4, dtype=np.float32), ("[4]", "[-1, 4]")),
        ({"features": np.zeros((1, 4))}, ("features", "input-0")),
        ({}, ("missing", "input-0")),
        ([["a", "b", "c", "d"]], ("FP32",)),
    ],
)
def test_wrong_inputs_raise_invalid_input(
    iris: modelport.Model, inputs: object, words: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidInput) as caught:
        iris.predict(inputs)  # type: ignore[arg-type]
    for word in words:
        assert word in caught.value.message


def test_unknown_output_raises_invalid_input(iris: modelport.Model) -> None:
    with pytest.raises(InvalidInput, match="labels"):
        iris.predict(np.zeros((1, 4), dtype=np.float32), outputs=["labels"])


def test_bytes_model_takes_strings(demo_registry: Path) -> None:
    model = modelport.load("greeting-language", registry=demo_registry)
    try:
        got = model.predict(["good morning", "buenas noches", b"vielen dank", "bonjour marc"])
    finally:
        model.close()
    # BYTES outputs come back as bytes; a text not in the greeting table is "unknown".
    assert got["language"].tolist() == [b"en", b"es", b"de", b"unknown"]


def test_unknown_model_or_version(demo_registry: Path) -> None:
    with pytest.raises(NotFound, match="nope"):
        modelport.load("nope", registry=demo_registry)
    with pytest.raises(NotFound, match="version"):
        modelport.load("iris", version=5, registry=demo_registry)


def test_registry_defaults_to_the_environment(
    demo_registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPORT_REGISTRY", str(demo_registry))
    model = modelport.load("iris-onnx")
    try:
        assert model.version.name == "iris-onnx"
    finally:
        model.close()


def test_import_is_cheap() -> None:
    code = (
        "import sys, modelport; "
        "heavy = {'sklearn', 'xgboost', 'lightgbm', 'onnxruntime', 'uvicorn', 'sqlalchemy'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
