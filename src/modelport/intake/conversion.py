"""ONNX conversion: a loaded scikit-learn, XGBoost or LightGBM model as an ONNX graph.

The graph is made to wear the registered signature exactly: its inputs and outputs carry the
signature's names, datatypes and shapes, so `OnnxRuntime` serves it under the same contract as
the original. Whether its numbers agree with the original is not decided here (see
intake.compilation).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Final

from modelport.errors import Unsupported
from modelport.protocol.signature import Signature, TensorSpec
from modelport.runtimes.base import Runtime
from modelport.runtimes.lightgbm import LightGBMRuntime
from modelport.runtimes.sklearn import SklearnRuntime
from modelport.runtimes.xgboost import XGBoostRuntime

_TEXT: Final = (
    "text models are not compiled: onnxruntime's tokenizer and lowercasing differ from "
    "Python's on non-ASCII text, which a sample cannot rule out"
)
_INSTALL: Final = "compiling to ONNX needs onnx, onnxruntime, skl2onnx and onnxmltools; " + (
    "install modelport[onnx]"
)
_ELEMENT_TYPES: Final = {
    # OIP datatype -> onnx.TensorProto element type number (stable across onnx releases).
    "FP32": 1,
    "UINT8": 2,
    "INT8": 3,
    "UINT16": 4,
    "INT16": 5,
    "INT32": 6,
    "INT64": 7,
    "BYTES": 8,
    "BOOL": 9,
    "FP16": 10,
    "FP64": 11,
    "UINT32": 12,
    "UINT64": 13,
}
_STRING: Final = 8
_STANDARD_OPSET: Final = 13


@dataclass(frozen=True, slots=True)
class _Pick:
    """Which graph output feeds a signature output, and which column of it (None: all)."""

    output: str
    column: int | None = None


def to_onnx(runtime: Runtime) -> tuple[bytes, str]:
    """The model behind `runtime` as a serialized ONNX graph, and the converter that made it.

    The graph's inputs and outputs are the runtime's signature (names, datatypes, shapes).
    Unsupported says why a model cannot be converted: no converter for its kind, an output
    with no ONNX counterpart, a converter that fails, or missing libraries.
    """
    try:
        import onnx
    except ImportError:
        raise Unsupported(_INSTALL) from None
    signature = runtime.signature
    if len(signature.inputs) != 1:
        raise Unsupported("only models with a single input tensor are compiled")
    if signature.inputs[0].datatype == "BYTES":
        raise Unsupported(_TEXT)
    # The runtimes keep the library's own model object; conversion needs exactly that object.
    if isinstance(runtime, SklearnRuntime):
        graph, picks, converter = _from_sklearn(runtime._model, signature)
    elif isinstance(runtime, XGBoostRuntime):
        graph, picks, converter = _from_xgboost(runtime._booster, signature)
    elif isinstance(runtime, LightGBMRuntime):
        graph, picks, converter = _from_lightgbm(runtime._booster, signature)
    else:
        raise Unsupported(
            f"no ONNX converter for {runtime.format!r} models; scikit-learn, XGBoost and "
            "LightGBM models are compiled"
        )
    _conform(graph, signature, picks)
    try:
        onnx.checker.check_model(graph)
    except Exception as exc:
        raise Unsupported(f"{converter} made an invalid ONNX graph ({_first_line(exc)})") from None
    return graph.SerializeToString(), converter


def _from_sklearn(model: Any, signature: Signature) -> tuple[Any, dict[str, _Pick], str]:
    try:
        from skl2onnx import convert_sklearn
        from sklearn.base import is_classifier
    except ImportError:
        raise Unsupported(_INSTALL) from None
    converter = f"skl2onnx {version('skl2onnx')}"
    final = model
    while isinstance(getattr(final, "steps", None), list) and final.steps:
        final = final.steps[-1][1]
    classifier = is_classifier(final)
    # Tensor outputs only: the default ZipMap turns probabilities into a list of dicts.
    options = {id(final): {"zipmap": False}} if classifier else None
    try:
        graph = convert_sklearn(
            model, initial_types=[("features", _input_type(signature.inputs[0]))], options=options
        )
    except Exception as exc:
        raise Unsupported(f"{converter} cannot convert this model ({_first_line(exc)})") from None
    outputs = [o.name for o in graph.graph.output]
    # skl2onnx gives classifiers (label, probabilities) and regressors (prediction).
    roles = ("predict", "predict_proba") if classifier else ("predict",)
    picks = {}
    for spec in signature.outputs:
        if spec.name not in roles or roles.index(spec.name) >= len(outputs):
            raise Unsupported(
                f"output {spec.name!r} has no ONNX counterpart; predict and, for "
                "classifiers, predict_proba are compiled"
            )
        picks[spec.name] = _Pick(outputs[roles.index(spec.name)])
    return graph, picks, converter


def _from_xgboost(booster: Any, signature: Signature) -> tuple[Any, dict[str, _Pick], str]:
    try:
        from onnxmltools import convert_xgboost
    except ImportError:
        raise Unsupported(_INSTALL) from None
    converter = f"onnxmltools {version('onnxmltools')}"
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    try:
        graph = convert_xgboost(booster, initial_types=[("features", _float_type(signature))])
    except Exception as exc:
        raise Unsupported(
            f"{converter} cannot convert this XGBoost model (objective {objective!r}: "
            f"{_first_line(exc)})"
        ) from None
    # multi:softmax predicts the class index itself; other classifiers predict probabilities.
    pick = _booster_pick(graph, signature, labels=objective == "multi:softmax")
    return graph, {signature.outputs[0].name: pick}, converter


def _from_lightgbm(booster: Any, signature: Signature) -> tuple[Any, dict[str, _Pick], str]:
    try:
        from onnxmltools import convert_lightgbm
    except ImportError:
        raise Unsupported(_INSTALL) from None
    converter = f"onnxmltools {version('onnxmltools')}"
    try:
        graph = convert_lightgbm(
            booster, initial_types=[("features", _float_type(signature))], zipmap=False
        )
    except Exception as exc:
        raise Unsupported(
            f"{converter} cannot convert this LightGBM model ({_first_line(exc)})"
        ) from None
    pick = _booster_pick(graph, signature, labels=False)
    return graph, {signature.outputs[0].name: pick}, converter


def _booster_pick(graph: Any, signature: Signature, *, labels: bool) -> _Pick:
    """Map a booster's graph outputs onto its one `predict` output.

    Regressors give one output. Classifiers give (label, probabilities): a [-1, k] predict is
    the probabilities, a [-1] predict the label (when `labels`) or, for a binary model, the
    probability of the positive class, as the boosters' own predict gives them.
    """
    outputs = [o.name for o in graph.graph.output]
    if len(outputs) == 1:
        return _Pick(outputs[0])
    if len(signature.outputs[0].shape) > 1:
        return _Pick(outputs[1])
    return _Pick(outputs[0]) if labels else _Pick(outputs[1], column=1)


def _input_type(spec: TensorSpec) -> Any:
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    # A float64 input keeps double precision; other numeric inputs are cast to float32 in
    # the graph, which is what the libraries do with them too.
    kind = DoubleTensorType if spec.datatype == "FP64" else FloatTensorType
    return kind([None, *(None if d < 0 else d for d in spec.shape[1:])])


def _float_type(signature: Signature) -> Any:
    from onnxmltools.convert.common.data_types import FloatTensorType

    return FloatTensorType([None, *(None if d < 0 else d for d in signature.inputs[0].shape[1:])])


def _conform(model: Any, signature: Signature, picks: Mapping[str, _Pick]) -> None:
    """Give `model`'s graph the signature's inputs and outputs, in place.

    The converter's own input is fed from a new input named after the signature's (cast to
    the converter's type where they differ); each signature output is taken from its pick,
    then cast and reshaped as the signature says. Names in the graph that collide with the
    signature's are renamed first.
    """
    from onnx import helper

    graph = model.graph
    wanted = {s.name for s in (*signature.inputs, *signature.outputs)}
    taken = set(_names(graph)) | wanted
    fresh = _Fresh(taken)
    mapping = {name: fresh(name) for name in _names(graph) if name in wanted}
    _rename(graph, mapping)
    initialized = {i.name for i in graph.initializer}
    sources = [i for i in graph.input if i.name not in initialized]
    if len(sources) != 1:
        raise Unsupported(f"the converted graph takes {len(sources)} inputs instead of one")
    (source,) = sources
    produced = {o.name: o for o in graph.output}

    spec = signature.inputs[0]
    source_type = source.type.tensor_type
    if len(source_type.shape.dim) != len(spec.shape):
        raise Unsupported(
            f"the converted graph takes a rank-{len(source_type.shape.dim)} input, the "
            f"signature a rank-{len(spec.shape)} one"
        )
    head = [_cast_or_copy(helper, spec.name, source.name, _ELEMENT_TYPES[spec.datatype], source)]
    tail = []
    for out in signature.outputs:
        pick = picks[out.name]
        current = mapping.get(pick.output, pick.output)
        tail.extend(_output_nodes(graph, out, pick, current, produced[current].type, fresh))
    _rewire(model, [*head, *graph.node, *tail], source.name, signature)


def _output_nodes(
    graph: Any, out: TensorSpec, pick: _Pick, current: str, info: Any, fresh: _Fresh
) -> list[Any]:
    """The nodes that turn graph output `current` (of type `info`) into signature output `out`.

    Each step (pick a column, cast, reshape; else an identity) feeds the next, and the last
    one writes `out`'s name. Constants the steps need are added to `graph`'s initializers.
    """
    from onnx import helper, numpy_helper

    if not info.HasField("tensor_type"):
        raise Unsupported(f"the converted graph's output for {out.name!r} is not a tensor")
    element, rank = info.tensor_type.elem_type, len(info.tensor_type.shape.dim)
    steps: list[tuple[str, list[str], dict[str, Any]]] = []
    if pick.column is not None:
        index = fresh("column")
        column = numpy_helper.from_array(_int64(pick.column, scalar=True), index)
        graph.initializer.append(column)
        steps.append(("Gather", [index], {"axis": 1}))
        rank -= 1
    target = _ELEMENT_TYPES[out.datatype]
    if element != target:
        if _STRING in (element, target):
            raise Unsupported(
                f"output {out.name!r} is {out.datatype} in the signature, but the converted "
                "graph gives it as another kind of value (text vs numbers)"
            )
        steps.append(("Cast", [], {"to": target}))
    if rank != len(out.shape):
        if any(d < 0 for d in out.shape[1:]):
            raise Unsupported(
                f"output {out.name!r} needs a reshape, but its inner dimensions are variable"
            )
        shape = fresh("shape")
        graph.initializer.append(
            numpy_helper.from_array(_int64([-1, *out.shape[1:]], scalar=False), shape)
        )
        steps.append(("Reshape", [shape], {}))
    steps = steps or [("Identity", [], {})]
    nodes = []
    for i, (op, extra, attrs) in enumerate(steps):
        result = out.name if i == len(steps) - 1 else fresh(out.name)
        nodes.append(helper.make_node(op, [current, *extra], [result], **attrs))
        current = result
    return nodes


def _rewire(model: Any, nodes: list[Any], source: str, signature: Signature) -> None:
    """Make `nodes` the graph's nodes and the signature its inputs (for `source`) and outputs."""
    from onnx import helper

    graph = model.graph
    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        # The added nodes are standard operators; a graph of ML operators only (XGBoost's)
        # does not import the standard domain, and all of them exist in opset 13.
        model.opset_import.append(helper.make_opsetid("", _STANDARD_OPSET))
    # Copies: messages removed from a repeated field must not be relied on afterwards.
    copies = [copy.deepcopy(n) for n in nodes]
    del graph.node[:]
    graph.node.extend(copies)
    kept_inputs = [copy.deepcopy(i) for i in graph.input if i.name != source]
    del graph.input[:]
    graph.input.extend([_value_info(helper, signature.inputs[0]), *kept_inputs])
    del graph.output[:]
    graph.output.extend(_value_info(helper, s) for s in signature.outputs)


def _cast_or_copy(helper: Any, src: str, dst: str, src_type: int, dst_info: Any) -> Any:
    dst_type = dst_info.type.tensor_type.elem_type
    if src_type == dst_type:
        return helper.make_node("Identity", [src], [dst])
    return helper.make_node("Cast", [src], [dst], to=dst_type)


def _value_info(helper: Any, spec: TensorSpec) -> Any:
    dims = [None if d < 0 else d for d in spec.shape]
    return helper.make_tensor_value_info(spec.name, _ELEMENT_TYPES[spec.datatype], dims)


def _int64(value: Any, *, scalar: bool) -> Any:
    import numpy as np

    array = np.asarray(value, dtype=np.int64)
    return array.reshape(()) if scalar else array


class _Fresh:
    """Hands out names not yet used in a graph."""

    def __init__(self, taken: set[str]) -> None:
        self._taken = taken

    def __call__(self, base: str) -> str:
        n = 1
        while f"{base}_{n}" in self._taken:
            n += 1
        name = f"{base}_{n}"
        self._taken.add(name)
        return name


def _subgraphs(graph: Any) -> Iterator[Any]:
    """`graph` and every graph nested in its nodes' attributes (If, Loop, Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _subgraphs(attr.g)
            for sub in attr.graphs:
                yield from _subgraphs(sub)


def _names(graph: Any) -> Iterator[str]:
    """Every tensor name the graph and its subgraphs define or use."""
    for g in _subgraphs(graph):
        for info in (*g.input, *g.output, *g.value_info, *g.initializer):
            yield info.name
        for node in g.node:
            yield from node.input
            yield from node.output


def _rename(graph: Any, mapping: Mapping[str, str]) -> None:
    """Rename tensors everywhere in `graph`, subgraphs included."""
    if not mapping:
        return
    for g in _subgraphs(graph):
        for info in (*g.input, *g.output, *g.value_info, *g.initializer):
            info.name = mapping.get(info.name, info.name)
        for node in g.node:
            for names in (node.input, node.output):
                for i, name in enumerate(names):
                    names[i] = mapping.get(name, name)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    detail = text[0][:200] if text else ""
    return f"{exc.__class__.__name__}: {detail}" if detail else exc.__class__.__name__
