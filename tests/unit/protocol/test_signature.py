"""Model signatures: their JSON form and the request checks compiled from them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelport.errors import InvalidInput
from modelport.protocol.datatypes import DATATYPES, numpy_dtype
from modelport.protocol.signature import RequestValidator, Signature, TensorSpec
from modelport.protocol.types import InferRequest, RequestedOutput, Tensor

specs = st.builds(
    TensorSpec,
    name=st.text(min_size=1, max_size=20),
    datatype=st.sampled_from(sorted(DATATYPES)),
    shape=st.lists(st.integers(min_value=-1, max_value=2**40), max_size=5).map(tuple),
)


def unique_by_name(items: list[TensorSpec]) -> tuple[TensorSpec, ...]:
    return tuple({s.name: s for s in items}.values())


signatures = st.builds(
    Signature,
    inputs=st.lists(specs, max_size=4).map(unique_by_name),
    outputs=st.lists(specs, min_size=1, max_size=4).map(unique_by_name),
)

IRIS = Signature(
    inputs=(TensorSpec("input-0", "FP32", (-1, 4)),),
    outputs=(TensorSpec("predict", "INT64", (-1,)), TensorSpec("predict_proba", "FP32", (-1, 3))),
)
TWO_INPUTS = Signature(
    inputs=(TensorSpec("a", "FP32", (-1, 2)), TensorSpec("b", "BYTES", (-1,))),
    outputs=(TensorSpec("y", "FP64", (-1,)),),
)


def tensor(name: str, datatype: str, shape: tuple[int, ...]) -> Tensor:
    data = np.zeros(shape, dtype=numpy_dtype(datatype))
    return Tensor(name, datatype, shape, data)


def invalid(call: Any, *args: Any) -> str:
    with pytest.raises(InvalidInput) as info:
        call(*args)
    return info.value.message


# JSON form ---------------------------------------------------------------------------------


@given(spec=specs)
def test_tensor_spec_round_trips_through_json(spec: TensorSpec) -> None:
    raw = json.loads(json.dumps(spec.to_dict()))
    assert raw == {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}
    assert TensorSpec.from_dict(raw) == spec


@given(signature=signatures)
def test_signature_round_trips_through_json(signature: Signature) -> None:
    again = Signature.from_dict(json.loads(json.dumps(signature.to_dict())))
    assert again == signature
    assert again.output_names == tuple(s.name for s in signature.outputs)


def test_signature_without_inputs_key_has_no_inputs() -> None:
    signature = Signature.from_dict({"outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]})
    assert signature.inputs == ()


@pytest.mark.parametrize(
    "raw",
    [
        {"datatype": "FP32", "shape": [1]},
        {"name": "x", "shape": [1]},
        {"name": "x", "datatype": "FP32"},
        {"name": "x", "datatype": "FP32", "shape": 4},
        {"name": "x", "datatype": "FP32", "shape": ["a"]},
    ],
)
def test_tensor_spec_from_dict_says_what_is_needed(raw: dict[str, Any]) -> None:
    assert invalid(TensorSpec.from_dict, raw).startswith(
        'each signature tensor needs "name", "datatype" and a list of integer "shape"'
    )


def test_tensor_spec_checks() -> None:
    assert invalid(TensorSpec, "", "FP32", (1,)) == "a tensor in a signature needs a non-empty name"
    message = invalid(TensorSpec, "x", "FLOAT", (1,))
    assert message.startswith("tensor 'x': unknown datatype 'FLOAT'; use one of ")
    assert invalid(TensorSpec, "x", "FP32", (-2,)) == (
        "tensor 'x': dimensions are -1 (variable) or >= 0"
    )


@pytest.mark.parametrize(
    ("shape", "matches"),
    [((5, 4), True), ((0, 4), True), ((5, 3), False), ((4,), False), ((1, 4, 1), False)],
)
def test_shape_matches(shape: tuple[int, ...], matches: bool) -> None:
    assert IRIS.inputs[0].shape_matches(shape) is matches


def test_signature_checks() -> None:
    x = TensorSpec("x", "FP32", (1,))
    assert (
        invalid(Signature, (x, x), (x,)) == "signature input names must be unique, got ['x', 'x']"
    )
    assert invalid(Signature, (x,), (x, x)) == (
        "signature output names must be unique, got ['x', 'x']"
    )
    assert invalid(Signature, (x,), ()) == "a signature needs at least one output"


@pytest.mark.parametrize("raw", [[], "x", {"inputs": []}, {"outputs": 3}])
def test_signature_from_dict_rejects_other_shapes(raw: Any) -> None:
    assert "signature" in invalid(Signature.from_dict, raw)


# Request validation ------------------------------------------------------------------------


def test_valid_request_gives_inputs_by_name() -> None:
    validator = RequestValidator(TWO_INPUTS)
    request = InferRequest([tensor("b", "BYTES", (3,)), tensor("a", "FP32", (3, 2))])
    inputs = validator.inputs(request)
    assert list(inputs) == ["b", "a"]
    assert inputs["a"] is request.inputs[1].data
    assert validator.outputs(request) is None


def test_unknown_input_lists_what_the_model_takes() -> None:
    request = InferRequest([tensor("input_0", "FP32", (1, 4))])
    assert invalid(RequestValidator(IRIS).inputs, request) == (
        "unknown input 'input_0'; the model takes: input-0 FP32 [-1, 4]"
    )


def test_wrong_datatype_says_the_expected_one() -> None:
    request = InferRequest([tensor("input-0", "FP64", (1, 4))])
    assert invalid(RequestValidator(IRIS).inputs, request) == (
        "input 'input-0' has datatype FP64; the model expects FP32"
    )


@pytest.mark.parametrize("shape", [(1, 3), (4,), (1, 4, 1)])
def test_wrong_shape_says_the_expected_one(shape: tuple[int, ...]) -> None:
    request = InferRequest([tensor("input-0", "FP32", shape)])
    assert invalid(RequestValidator(IRIS).inputs, request) == (
        f"input 'input-0' has shape {list(shape)}; the model expects [-1, 4] (-1 means any size)"
    )


def test_missing_input_names_it_and_lists_the_signature() -> None:
    request = InferRequest([tensor("a", "FP32", (2, 2))])
    assert invalid(RequestValidator(TWO_INPUTS).inputs, request) == (
        "missing input(s) 'b'; the model takes: a FP32 [-1, 2], b BYTES [-1]"
    )


def test_duplicate_input() -> None:
    request = InferRequest([tensor("input-0", "FP32", (1, 4)), tensor("input-0", "FP32", (2, 4))])
    assert invalid(RequestValidator(IRIS).inputs, request) == (
        "input 'input-0' is given more than once"
    )


def test_requested_outputs() -> None:
    validator = RequestValidator(IRIS)
    request = InferRequest([], outputs=[RequestedOutput("predict_proba")])
    assert validator.outputs(request) == ("predict_proba",)


def test_unknown_requested_output_lists_what_the_model_gives() -> None:
    request = InferRequest([], outputs=[RequestedOutput("predict"), RequestedOutput("proba")])
    assert invalid(RequestValidator(IRIS).outputs, request) == (
        "unknown output(s) 'proba'; the model gives: predict, predict_proba"
    )


def test_many_duplicate_outputs_are_refused_without_quadratic_work() -> None:
    # Counting each name in the list took hours for a 64 MiB body (the event loop blocked);
    # at this size the old way ran past the suite's time limit, the new one takes milliseconds.
    names = ["predict", "predict_proba"] * 100_000
    request = InferRequest([], outputs=[RequestedOutput(n) for n in names])
    assert invalid(RequestValidator(IRIS).outputs, request) == (
        "output(s) 'predict', 'predict_proba' requested more than once; list each output once"
    )
