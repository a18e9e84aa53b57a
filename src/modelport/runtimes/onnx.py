"""The ONNX runtime: an onnxruntime session on the CPU, one thread, signature from the graph."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np

from modelport.errors import InvalidInput, Unsupported
from modelport.protocol.signature import Signature, TensorSpec, shapes_agree
from modelport.runtimes.base import Arrays, Runtime, input_text, output_array

# onnxruntime's type strings for the tensors OIP can carry. Other element types (bfloat16,
# float8, complex) and non-tensors (sequences, maps) have no OIP datatype.
_DATATYPES: Final = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


class OnnxRuntime(Runtime):
    """An ONNX graph run by onnxruntime; inputs and outputs are the graph's tensors.

    Graph outputs that are not tensors (e.g. the ZipMap sequences of maps that some
    converters add) are left out of the signature. BYTES tensors travel as UTF-8 text.
    """

    format: ClassVar[str] = "onnx"
    suffixes: ClassVar[tuple[str, ...]] = (".onnx",)
    row_independent: ClassVar[bool] = True
    steady: ClassVar[bool] = True

    def __init__(self, session: Any, signature: Signature, invalid_argument: type[Exception]):
        super().__init__(signature)
        self._session: Any = session
        self._text_inputs = tuple(s.name for s in signature.inputs if s.datatype == "BYTES")
        self._specs = {s.name: s for s in signature.outputs}
        self._invalid_argument = invalid_argument

    @classmethod
    def load(
        cls, path: Path, signature: Signature | None = None, *, trusted: bool = False
    ) -> OnnxRuntime:
        """Open an inference session on the CPU with one intra-op and one inter-op thread."""
        try:
            import onnxruntime
            from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
        except ImportError:
            raise Unsupported("ONNX models need onnxruntime; install modelport[onnx]") from None
        options = onnxruntime.SessionOptions()
        # One thread each: the server runs one worker per core and scales by processes.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise InvalidInput(
                f"cannot load {path.name!r} as an ONNX model "
                f"({first.replace(str(path), path.name)})"
            ) from None
        inferred = _graph_signature(session)
        if signature is None:
            signature = inferred
        else:
            _check_signature(signature, inferred)
        return cls(session, signature, InvalidArgument)

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        """Run the graph for the requested outputs only."""
        feeds = dict(inputs)
        for name in self._text_inputs:
            # onnxruntime takes tensor(string) as str, not bytes.
            feeds[name] = input_text(feeds[name], name)
        try:
            results = self._session.run(list(outputs), feeds)
        except self._invalid_argument as exc:
            # onnxruntime reports inputs its graph rejects (e.g. a fixed inner dimension).
            raise InvalidInput(f"the ONNX model rejected the inputs: {exc}") from None
        return {
            name: output_array(value, self._specs[name].datatype)
            for name, value in zip(outputs, results, strict=True)
        }

    def close(self) -> None:
        """Drop the session so onnxruntime frees its memory now rather than at collection."""
        self._session = None


def _dims(shape: Any) -> tuple[int, ...]:
    # Symbolic ("batch") and unknown (None) dimensions are variable.
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (shape or ()))


def _graph_signature(session: Any) -> Signature:
    inputs = []
    for arg in session.get_inputs():
        datatype = _DATATYPES.get(arg.type)
        if datatype is None:
            raise InvalidInput(
                f"graph input {arg.name!r} has type {arg.type}, which the Open Inference "
                "Protocol cannot carry; export the model with tensor inputs"
            )
        inputs.append(TensorSpec(arg.name, datatype, _dims(arg.shape)))
    outputs = [
        TensorSpec(arg.name, _DATATYPES[arg.type], _dims(arg.shape))
        for arg in session.get_outputs()
        if arg.type in _DATATYPES
    ]
    if not outputs:
        raise InvalidInput(
            "the ONNX graph has no tensor outputs (only sequences or maps); export it with "
            "tensor outputs, e.g. skl2onnx options={'zipmap': False}"
        )
    return Signature(tuple(inputs), tuple(outputs))


def _check_signature(signature: Signature, graph: Signature) -> None:
    declared = {s.name: s for s in signature.inputs}
    wanted = {s.name: s for s in graph.inputs}
    if declared.keys() != wanted.keys():
        raise InvalidInput(
            f"the signature's inputs {sorted(declared)} must be the graph's inputs {sorted(wanted)}"
        )
    for name, spec in declared.items():
        graph_spec = wanted[name]
        if spec.datatype != graph_spec.datatype or not shapes_agree(spec.shape, graph_spec.shape):
            raise InvalidInput(
                f"input {name!r} is {spec.datatype} {list(spec.shape)} in the signature but "
                f"{graph_spec.datatype} {list(graph_spec.shape)} in the graph; fix the signature"
            )
    offered = {s.name for s in graph.outputs}
    unknown = [s.name for s in signature.outputs if s.name not in offered]
    if unknown:
        raise InvalidInput(
            f"the signature names output(s) {', '.join(repr(n) for n in unknown)}, but the "
            f"graph's tensor outputs are: {', '.join(sorted(offered))}"
        )
