"""The ONNX runtime against onnxruntime and scikit-learn, on graphs compiled by skl2onnx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import StringTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from modelport.errors import InvalidInput
from modelport.protocol.signature import Signature, TensorSpec
from modelport.runtimes.onnx import OnnxRuntime

from ...conftest import assert_close_compiled, assert_close_float32

BATCHES = [1, 6]


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray[Any, Any], LogisticRegression]:
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    return x, LogisticRegression(max_iter=300).fit(x, y)


@pytest.fixture
def plain_path(iris: tuple[np.ndarray[Any, Any], LogisticRegression], tmp_path: Path) -> Path:
    x, model = iris
    path = tmp_path / "iris.onnx"
    path.write_bytes(to_onnx(model, x[:1], options={"zipmap": False}).SerializeToString())
    return path


@pytest.mark.parametrize("batch", BATCHES)
def test_tensor_outputs_match_onnxruntime_and_sklearn(
    iris: tuple[np.ndarray[Any, Any], LogisticRegression], plain_path: Path, batch: int
) -> None:
    x, model = iris
    runtime = OnnxRuntime.load(plain_path)
    assert runtime.signature.to_dict() == {
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
    rows = x[70 : 70 + batch]
    out = runtime.predict({"X": rows}, ["label", "probabilities"])
    reference = onnxruntime.InferenceSession(plain_path, providers=["CPUExecutionProvider"])
    label, probabilities = reference.run(["label", "probabilities"], {"X": rows})
    assert out["label"].dtype == np.int64
    np.testing.assert_array_equal(out["label"], label)
    np.testing.assert_array_equal(out["label"], model.predict(rows))
    assert out["probabilities"].dtype == np.float32
    assert out["probabilities"].shape == (batch, 3)
    assert_close_float32(out["probabilities"], probabilities)
    # The converted graph against scikit-learn: what the compile check verifies.
    assert_close_compiled(out["probabilities"], model.predict_proba(rows))


def test_only_requested_outputs(
    iris: tuple[np.ndarray[Any, Any], LogisticRegression], plain_path: Path
) -> None:
    out = OnnxRuntime.load(plain_path).predict({"X": iris[0][:2]}, ["probabilities"])
    assert set(out) == {"probabilities"}


def test_zipmap_output_is_left_out_of_the_signature(
    iris: tuple[np.ndarray[Any, Any], LogisticRegression], tmp_path: Path
) -> None:
    x, model = iris
    path = tmp_path / "zipmap.onnx"
    path.write_bytes(to_onnx(model, x[:1]).SerializeToString())
    runtime = OnnxRuntime.load(path)
    assert [s.name for s in runtime.signature.outputs] == ["output_label"]
    out = runtime.predict({"X": x[:5]}, ["output_label"])
    np.testing.assert_array_equal(out["output_label"], model.predict(x[:5]))


@pytest.mark.parametrize("batch", BATCHES)
def test_string_input_and_output_travel_as_bytes(tmp_path: Path, batch: int) -> None:
    colours = np.array([["red"], ["green"], ["blue"], ["red"], ["blue"], ["green"]])
    labels = ["warm", "cool", "cool", "warm", "cool", "cool"]
    model = make_pipeline(OneHotEncoder(), LogisticRegression()).fit(colours, labels)
    graph = to_onnx(
        model, initial_types=[("colour", StringTensorType([None, 1]))], options={"zipmap": False}
    )
    path = tmp_path / "colours.onnx"
    path.write_bytes(graph.SerializeToString())
    runtime = OnnxRuntime.load(path)
    assert runtime.signature.inputs == (TensorSpec("colour", "BYTES", (-1, 1)),)
    assert runtime.signature.outputs[0] == TensorSpec("label", "BYTES", (-1,))
    rows = colours[:batch]
    x = np.array([[c.encode() for c in row] for row in rows], dtype=object)
    out = runtime.predict({"colour": x}, ["label"])
    assert out["label"].dtype == object
    assert list(out["label"]) == [label.encode() for label in model.predict(rows)]


def test_graph_without_tensor_outputs_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("SequenceConstruct", ["X"], ["S"])
    graph = helper.make_graph(
        [node],
        "only-a-sequence",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_sequence_value_info("S", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "seq.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InvalidInput, match="no tensor outputs"):
        OnnxRuntime.load(path)


def test_given_signature_is_used(
    iris: tuple[np.ndarray[Any, Any], LogisticRegression], plain_path: Path
) -> None:
    signature = Signature(
        (TensorSpec("X", "FP32", (-1, 4)),), (TensorSpec("probabilities", "FP64", (-1, 3)),)
    )
    runtime = OnnxRuntime.load(plain_path, signature)
    assert runtime.signature == signature
    out = runtime.predict({"X": iris[0][:2]}, ["probabilities"])
    assert out["probabilities"].dtype == np.float64


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (
            Signature((TensorSpec("X", "FP64", (-1, 4)),), (TensorSpec("label", "INT64", (-1,)),)),
            "in the graph",
        ),
        (
            Signature((TensorSpec("X", "FP32", (-1, 5)),), (TensorSpec("label", "INT64", (-1,)),)),
            "in the graph",
        ),
        (
            Signature(
                (TensorSpec("input-0", "FP32", (-1, 4)),), (TensorSpec("label", "INT64", (-1,)),)
            ),
            "graph's inputs",
        ),
        (
            Signature((TensorSpec("X", "FP32", (-1, 4)),), (TensorSpec("score", "FP32", (-1,)),)),
            "score",
        ),
    ],
)
def test_incompatible_signature_is_refused(
    plain_path: Path, signature: Signature, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        OnnxRuntime.load(plain_path, signature)


def test_inputs_the_graph_rejects_are_invalid_input(plain_path: Path) -> None:
    runtime = OnnxRuntime.load(plain_path)
    with pytest.raises(InvalidInput, match="rejected"):
        runtime.predict({"X": np.zeros((2, 5), np.float32)}, ["label"])


def test_unreadable_file_is_invalid_input_without_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not protobuf at all")
    with pytest.raises(InvalidInput, match=r"broken\.onnx") as info:
        OnnxRuntime.load(path)
    assert str(tmp_path) not in info.value.message


def test_close_releases_the_session(plain_path: Path) -> None:
    runtime = OnnxRuntime.load(plain_path)
    runtime.close()
    assert runtime._session is None
