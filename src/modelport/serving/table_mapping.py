"""How the columns of a table become a model's inputs, and its outputs become columns.

Transport-free: batch jobs and `Model.predict_table` map rows the same way, and records (stream
messages, HTTP bodies: serving.record_mapping) by the same rules, which serving.input_sources
holds for both. The mapping is resolved once, from the model's signature and the table's
column names, before any row is read (`TableMapping.for_model`); each record batch is then
converted with `inputs` and the model's outputs turned back into columns with `output_columns`.

Inputs, in this order of preference:

- named: every input is named by a column (one value per row for a `[-1]` or `[-1, 1]` input;
  a list column for a `[-1, F]` input);
- features: a model with a single `[-1, F]` input takes F columns, in the order `features`
  gives, else the order the version's reference profile recorded (the columns of the
  reference data it was pushed with); without either the mapping is ambiguous and refused;
- BYTES inputs take string or binary columns (text is encoded as UTF-8).

Outputs: a 1-D output is one column named as the output; a 2-D output `[-1, K]` (such as a
classifier's probabilities) is K columns `NAME_0` ... `NAME_{K-1}`, numbered by position (the
registry does not record class labels), or with `outputs_as="lists"` one list column `NAME` of
K values per row. BYTES outputs are written as text (UTF-8, undecodable bytes replaced).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelport.errors import InvalidInput
from modelport.protocol.datatypes import numpy_dtype
from modelport.protocol.signature import TensorSpec
from modelport.registry.manifest import ModelVersion
from modelport.serving.arrow_buffers import from_numpy, to_numpy
from modelport.serving.input_sources import InputSource, describe, resolve_sources
from modelport.serving.input_sources import recorded_features as recorded_features

OutputsAs = Literal["columns", "lists"]
"""How a 2-D output is written: K columns NAME_0..NAME_{K-1}, or one list column NAME."""
OUTPUTS_AS: Final[tuple[OutputsAs, ...]] = ("columns", "lists")

Array = np.ndarray[Any, Any]

_ARROW: Final[dict[str, pa.DataType]] = {
    "BOOL": pa.bool_(),
    "UINT8": pa.uint8(),
    "UINT16": pa.uint16(),
    "UINT32": pa.uint32(),
    "UINT64": pa.uint64(),
    "INT8": pa.int8(),
    "INT16": pa.int16(),
    "INT32": pa.int32(),
    "INT64": pa.int64(),
    "FP16": pa.float16(),
    "FP32": pa.float32(),
    "FP64": pa.float64(),
    "BYTES": pa.string(),
}


def arrow_type(datatype: str) -> pa.DataType:
    """The Arrow type a column of `datatype` values is written as (BYTES as text)."""
    return _ARROW[datatype]


@dataclass(frozen=True, slots=True)
class TableMapping:
    """The resolved mapping of a table's columns onto one model version's inputs and outputs."""

    sources: tuple[InputSource, ...]
    outputs: tuple[TensorSpec, ...]
    outputs_as: OutputsAs = "columns"

    @classmethod
    def for_model(
        cls,
        version: ModelVersion,
        columns: Sequence[str],
        features: Sequence[str] | None = None,
        *,
        outputs_as: OutputsAs = "columns",
    ) -> TableMapping:
        """Resolve how `columns` feed `version`'s inputs; InvalidInput says what to change.

        `features` names the columns of a single `[-1, F]` input, in order (`--features`).
        Missing columns are named together with the columns the table has.
        """
        if outputs_as not in OUTPUTS_AS:
            raise InvalidInput(f"outputs_as must be one of {', '.join(OUTPUTS_AS)}")
        sources = resolve_sources(version, columns, features)
        return cls(sources, version.signature.outputs, outputs_as)

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the inputs read, each once, in order."""
        return tuple(dict.fromkeys(c for s in self.sources for c in s.columns))

    def inputs(self, batch: pa.RecordBatch | pa.Table) -> dict[str, Array]:
        """The model's inputs from one batch, in their datatypes; InvalidInput when they won't go.

        A null cell, text that is not a number, or a number that does not fit the datatype
        (1.5 for an integer input) is refused for the whole batch; batch jobs then split the
        batch to find the rows at fault.
        """
        out: dict[str, Array] = {}
        for source in self.sources:
            spec = source.spec
            if source.stacked:
                matrix = np.empty((batch.num_rows, len(source.columns)), numpy_dtype(spec.datatype))
                for j, column in enumerate(source.columns):
                    matrix[:, j] = _values(batch.column(column), column, spec.datatype)
                out[spec.name] = matrix
            else:
                out[spec.name] = _shaped(batch.column(source.columns[0]), source)
        return out

    def output_columns(self, outputs: Mapping[str, Array]) -> list[tuple[str, pa.Array]]:
        """The columns to write for `outputs`, in signature order (see the module docstring)."""
        columns: list[tuple[str, pa.Array]] = []
        for spec in self.outputs:
            if spec.name not in outputs:
                continue
            array = _as_datatype(outputs[spec.name], spec.datatype)
            kind = arrow_type(spec.datatype)
            if array.ndim == 1:
                columns.append((spec.name, _arrow(array, kind)))
            elif array.ndim == 2 and self.outputs_as == "lists":
                values = _arrow(array.reshape(-1), kind)
                columns.append(
                    (spec.name, pa.FixedSizeListArray.from_arrays(values, array.shape[1]))
                )
            elif array.ndim == 2:
                for k in range(array.shape[1]):
                    columns.append((f"{spec.name}_{k}", _arrow(array[:, k], kind)))
            else:
                raise InvalidInput(
                    f"output {spec.name!r} has shape {list(array.shape)}; a table holds 1-D "
                    "outputs and 2-D ones [-1, K]"
                )
        return columns

    def output_names(self) -> list[str] | None:
        """The output column names, when every output's width is fixed by the signature."""
        names: list[str] = []
        for spec in self.outputs:
            if len(spec.shape) == 2 and self.outputs_as == "columns":
                if spec.shape[1] < 0:
                    return None
                names.extend(f"{spec.name}_{k}" for k in range(spec.shape[1]))
            else:
                names.append(spec.name)
        return names


def _shaped(column: pa.Array | pa.ChunkedArray, source: InputSource) -> Array:
    spec, name = source.spec, source.columns[0]
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
        return _matrix(column, name, spec)
    values = _values(column, name, spec.datatype)
    if len(spec.shape) == 2:
        if spec.shape[1] not in (1, -1):
            raise InvalidInput(
                f"input {describe(spec)} takes {spec.shape[1]} values per row; column "
                f"{name!r} holds one (give a list column, or use --features)"
            )
        return values.reshape(-1, 1)
    return values


def _matrix(column: pa.Array | pa.ChunkedArray, name: str, spec: TensorSpec) -> Array:
    if len(spec.shape) != 2:
        raise InvalidInput(f"column {name!r} holds lists; input {describe(spec)} takes one value")
    if column.null_count:
        raise InvalidInput(f"column {name!r} has an empty (null) cell; give every row a value")
    combined = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = to_numpy(pc.list_value_length(combined))
    width = spec.shape[1]
    if len(lengths) and (lengths.min() != lengths.max() or width not in (-1, lengths[0])):
        want = "the same number of values" if width < 0 else f"{width} values"
        raise InvalidInput(f"column {name!r} must hold {want} in every row for input {spec.name!r}")
    flat = _values(combined.flatten(), name, spec.datatype)
    return flat.reshape(len(combined), -1 if len(combined) else max(width, 0))


def _values(column: pa.Array | pa.ChunkedArray, name: str, datatype: str) -> Array:
    """One column as a 1-D numpy array of `datatype`; InvalidInput when it cannot be."""
    if column.null_count:
        raise InvalidInput(f"column {name!r} has an empty (null) cell; give every row a value")
    kind = column.type
    if datatype == "BYTES":
        if not (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
        ):
            raise InvalidInput(f"column {name!r} feeds a BYTES input; give text or binary values")
        out = np.empty(len(column), dtype=object)
        out[:] = [v if isinstance(v, bytes) else v.encode() for v in column.to_pylist()]
        return out
    target = arrow_type(datatype)
    try:
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            column = pc.utf8_trim_whitespace(column)
        if kind != target:
            column = pc.cast(column, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(f"column {name!r} does not convert to {datatype}: {exc}") from None
    return np.asarray(to_numpy(column), dtype=numpy_dtype(datatype))


def _as_datatype(array: Array, datatype: str) -> Array:
    if datatype == "BYTES":
        return np.asarray(array, dtype=object)
    dtype = numpy_dtype(datatype)
    return array if array.dtype == dtype else array.astype(dtype)


def _arrow(values: Array, kind: pa.DataType) -> pa.Array:
    if pa.types.is_string(kind):
        text = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
        return pa.array(text, type=kind)
    return from_numpy(values, kind)
