"""`modelport models push --compile onnx`: the compiled form, its check, and what show prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
from sklearn.datasets import load_iris

from modelport.registry.store import Registry
from modelport.serving.artifacts import load_artifact

from .conftest import fails, ok, run


@pytest.fixture
def registry(tmp_path: Path) -> str:
    return str(tmp_path / "registry")


def test_push_compile_keeps_the_onnx_form(registry: str, iris_file: Path) -> None:
    result = run("models", "push", str(iris_file), "--name", "iris", "--compile", "onnx",
                 "--registry", registry)  # fmt: skip
    assert ok(result) == "1\n"  # stdout stays the bare version number
    with Registry.open(registry) as store:
        mv = store.get("iris", 1)
        assert mv.compiled is not None
        loaded = load_artifact(store, mv)
        loaded.runtime.close()
    assert loaded.compiled is True
    assert mv.compile_report is not None
    diff = mv.compile_report["outputs"]["predict_proba"]["max_abs_diff"]
    assert result.stderr == (
        f"compiled to onnx: kept (sha256 {mv.compiled.digest[:12]}); "
        "outputs match on 512 generated rows: predict equal, predict_proba within tolerance "
        f"(max abs diff {diff:.2g})\n"
    )

    shown = ok(run("models", "show", "iris", "--registry", registry))
    assert f"onnx sha256 {mv.compiled.digest} ({mv.compiled.size:,} bytes)" in shown
    assert "outputs match on 512 generated rows" in shown
    assert "512 generated rows" in shown
    assert "skl2onnx" in shown
    assert "compile check" in shown
    assert "atol 1e-05 + rtol 0.0001" in shown

    as_json = json.loads(ok(run("models", "show", "iris", "--json", "--registry", registry)))
    assert as_json["compiled"] == mv.compiled.to_dict()
    assert as_json["digest"] == mv.digest
    report = as_json["compile_report"]
    assert report["kept"] is True
    assert report["sample"] == {"source": "generated", "rows": 512, "seed": 0}
    assert report["outputs"]["predict"]["passed"] is True
    assert report["outputs"]["predict"]["mismatches"] == 0
    assert report["outputs"]["predict_proba"]["passed"] is True
    assert report["outputs"]["predict_proba"]["max_abs_diff"] < 1e-5


def test_push_without_compile_shows_no_compiled_rows(registry: str, iris_file: Path) -> None:
    result = run("models", "push", str(iris_file), "--name", "iris", "--registry", registry)
    assert (ok(result), result.stderr) == ("1\n", "")
    shown = ok(run("models", "show", "iris", "--registry", registry))
    assert "compiled" not in shown
    assert "compile check" not in shown


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_reference_rows_from_a_file(
    registry: str, iris_file: Path, tmp_path: Path, suffix: str
) -> None:
    x = load_iris(return_X_y=True)[0]
    reference = tmp_path / f"reference{suffix}"
    if suffix == ".npy":
        np.save(reference, x)
    else:
        np.savetxt(reference, x, delimiter=",")
    result = run("models", "push", str(iris_file), "--name", "iris", "--compile", "onnx",
                 "--reference", str(reference), "--registry", registry)  # fmt: skip
    ok(result)
    assert "kept" in result.stderr
    assert "outputs match on 150 reference rows" in result.stderr
    as_json = json.loads(ok(run("models", "show", "iris", "--json", "--registry", registry)))
    assert as_json["compile_report"]["sample"] == {"source": "reference", "rows": 150, "seed": 0}


def test_reference_mistakes_are_errors(registry: str, iris_file: Path, tmp_path: Path) -> None:
    push = ["models", "push", str(iris_file), "--name", "iris", "--registry", registry]
    narrow = tmp_path / "narrow.npy"
    np.save(narrow, np.zeros((5, 3)))
    fails(run(*push, "--reference", str(narrow)), "--reference is only used with --compile")
    fails(
        run(*push, "--compile", "onnx", "--reference", str(narrow)),
        "have shape [5, 3]; the signature says [-1, 4]",
    )
    header = tmp_path / "header.csv"
    header.write_text("a,b,c,d\n1,2,3,4\n")
    message = fails(run(*push, "--compile", "onnx", "--reference", str(header)), "header.csv")
    assert str(tmp_path) not in message
    other = tmp_path / "rows.parquet"
    other.write_bytes(b"PAR1")
    fails(run(*push, "--compile", "onnx", "--reference", str(other)), "give a .npy or a .csv")
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    fails(run(*push, "--compile", "onnx", "--reference", str(pickled)), "objects.npy")
    with Registry.open(registry) as store:
        assert store.models() == []  # no refused push registered anything
    assert "Invalid value for '--compile'" in run(*push, "--compile", "tflite").stderr


def test_a_model_without_converter_is_pushed_with_a_warning(registry: str, tmp_path: Path) -> None:
    class Doubler:
        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            return {"y": inputs["x"] * 2}

    model = tmp_path / "doubler.cloudpickle"
    model.write_bytes(cloudpickle.dumps(Doubler()))
    signature = tmp_path / "signature.json"
    signature.write_text(json.dumps({
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP64", "shape": [-1, 2]}],
    }))  # fmt: skip
    result = run("models", "push", str(model), "--name", "doubler", "--format", "python",
                 "--trust-pickle", "--signature", str(signature), "--compile", "onnx",
                 "--registry", registry)  # fmt: skip
    assert ok(result) == "1\n"
    assert result.stderr == (
        "warning: compiled onnx form not kept, the original serves: no ONNX converter for "
        "'python' models; scikit-learn, XGBoost and LightGBM models are compiled\n"
    )
    shown = ok(run("models", "show", "doubler", "--registry", registry))
    assert "onnx: not kept (the original serves)" in shown
    assert "no ONNX converter for 'python' models" in shown
    with Registry.open(registry) as store:
        mv = store.get("doubler")
    assert mv.compiled is None
    assert mv.compile_report is not None
    assert mv.compile_report["kept"] is False
