"""How records (field -> value) become a model's input tensors, and its outputs become records.

Transport-free: stream messages (JSON objects, Avro records) and HTTP bodies of records map onto
a model as a table's rows do (serving.input_sources holds the rules both share): every input
named by a field; a single `[-1, F]` input from F feature fields, in the order `features`
gives, else the order the version's reference data recorded; anything else ambiguous and
refused. `RecordMapping.for_model` resolves what it can once; `tensors` converts one record (a
message) or a list of them, and `records` turns the outputs back into one record per row.

Values, by the input's datatype:

- numbers (INT*, UINT*, FP*): numbers, or text that reads as one (as a CSV cell does); a
  fraction never becomes an integer (2.0 is 2, 1.5 is refused), a value beyond the datatype's
  range is refused, and true/false are not numbers;
- BOOL: true or false;
- BYTES: text (stored as its UTF-8 encoding) or bytes.

A `[-1]` input takes one value per record, `[-1, 1]` one value or a list of one, `[-1, K]` a
list of K values (for `[-1, -1]` any length, the same in every record). A null is refused,
inside a list too. Every refusal is InvalidInput naming the field, the record (when there are
several) and what the input takes.

Outputs: one dict per row, outputs in the response's order: a `[-1]` output as its value, a
`[-1, K]` output as a list of K values; BYTES as text when it is UTF-8, else as bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelport.errors import InternalError, InvalidInput
from modelport.protocol.types import InferRequest, InferResponse, Parameters, Tensor
from modelport.registry.manifest import ModelVersion
from modelport.serving.input_sources import (
    FIELDS,
    InputSource,
    found,
    recorded_features,
    resolve_sources,
)
from modelport.serving.record_values import InputFeed

Record = Mapping[str, Any]
"""One record: field name -> value (a number, text, bytes, a list of them)."""
Array = np.ndarray[Any, Any]


class RecordMapping:
    """The resolved mapping of records onto one model version's inputs; see the module docstring.

    With `fields` (the fields every record has, as an Avro schema declares them) the mapping is
    resolved, and refused, once; without, each record's own fields decide, by the same rules.
    """

    __slots__ = ("_features", "_fixed", "_inputs", "_named", "_recorded", "_version")

    def __init__(
        self,
        version: ModelVersion,
        features: Sequence[str] | None,
        *,
        fixed: tuple[InputFeed, ...] | None,
        named: tuple[InputFeed, ...] | None,
        recorded: tuple[InputFeed, ...] | None,
    ) -> None:
        self._version = version
        self._features = None if features is None else tuple(features)
        self._inputs = frozenset(s.name for s in version.signature.inputs)
        self._fixed = fixed
        self._named = named
        self._recorded = recorded

    @classmethod
    def for_model(
        cls,
        version: ModelVersion,
        fields: Sequence[str] | None = None,
        features: Sequence[str] | None = None,
    ) -> RecordMapping:
        """Resolve how records feed `version`'s inputs; InvalidInput says what to change.

        `features` names the fields of a single `[-1, F]` input, in order (`--features`);
        `fields`, when known ahead, are the fields every record will have.
        """
        if fields is not None:
            fixed = _feeds(resolve_sources(version, fields, features, FIELDS))
            return cls(version, features, fixed=fixed, named=None, recorded=None)
        if features is not None:
            fixed = _feeds(resolve_sources(version, features, features, FIELDS))
            return cls(version, features, fixed=fixed, named=None, recorded=None)
        inputs = version.signature.inputs
        # Either route may be refused (its reason is given to the record that takes it).
        named = _resolved(version, [s.name for s in inputs])
        recorded = None
        if len(inputs) == 1 and len(inputs[0].shape) == 2:
            order = recorded_features(version, inputs[0].name)
            if order:
                recorded = _resolved(version, order)
        return cls(version, None, fixed=None, named=named, recorded=recorded)

    @property
    def version(self) -> ModelVersion:
        """The version this mapping feeds."""
        return self._version

    def tensors(self, records: Record | Sequence[Record]) -> list[Tensor]:
        """The input tensors for one record (shape [1, ...]) or a list of n (shape [n, ...])."""
        if type(records) is dict or isinstance(records, Mapping):
            rows: Sequence[Record] = (records,)
            many = False
        elif isinstance(records, list | tuple):
            if not records:
                raise InvalidInput("no records to predict; give at least one")
            rows, many = records, True
            if not isinstance(rows[0], Mapping):
                raise self._fields_refusal(rows[0], 0, many)
        else:
            raise InvalidInput(
                f"records are objects of fields (or a list of them), not {type(records).__name__}"
            )
        feeds = self._feeds_for(rows[0], many)
        out: list[Tensor] = []
        for feed in feeds:
            array = self._array(feed, rows, many)
            out.append(Tensor(feed.name, feed.datatype, array.shape, array))
        return out

    def request(
        self,
        records: Record | Sequence[Record],
        *,
        id: str | None = None,
        parameters: Parameters | None = None,
    ) -> InferRequest:
        """An inference request for every output of the model, from `tensors(records)`."""
        return InferRequest(self.tensors(records), id, dict(parameters or {}))

    def records(
        self, outputs: InferResponse | Sequence[Tensor], *, native: bool = False
    ) -> list[dict[str, Any]]:
        """One record per row of the outputs: `output_records`."""
        return output_records(outputs, native=native)

    # -- inputs ----------------------------------------------------------------------------

    def _feeds_for(self, record: Record, many: bool) -> tuple[InputFeed, ...]:
        if self._fixed is not None:
            return self._fixed
        named = self._named
        if named is not None and self._inputs <= record.keys():
            return named
        if self._recorded is not None:
            return self._recorded
        raise self._fields_refusal(record, 0, many)

    def _fields_refusal(
        self, record: Any, index: int, many: bool, feed: InputFeed | None = None
    ) -> InvalidInput:
        """Why `record`'s fields do not feed the model (the rules' own refusal)."""
        where = f"record {index}: " if many else ""
        if not isinstance(record, Mapping):
            return InvalidInput(
                f"{where}a record is an object of fields, not {type(record).__name__}"
            )
        names = [str(k) for k in record]
        try:
            resolve_sources(self._version, names, self._features, FIELDS)
        except InvalidInput as exc:
            return InvalidInput(where + exc.message)
        # Its own fields would do, by another rule than the first record's (or than the
        # fields declared ahead): the records of one request take one route.
        fields = feed.fields if feed is not None else ()
        missing = ", ".join(repr(f) for f in fields if f not in record)
        takes = f" for input {feed.spec_text}" if feed is not None else ""
        return InvalidInput(
            f"{where}missing field(s) {missing}{takes}, which the other records have; "
            f"{found(names, FIELDS)}"
        )

    def _array(self, feed: InputFeed, rows: Sequence[Record], many: bool) -> Array:
        try:
            if feed.stacked:
                values: list[Any] = [[r[f] for f in feed.fields] for r in rows]
            else:
                field = feed.fields[0]
                values = [r[field] for r in rows]
        except (KeyError, TypeError):
            for index, record in enumerate(rows):
                if not isinstance(record, Mapping) or any(f not in record for f in feed.fields):
                    raise self._fields_refusal(record, index, many, feed) from None
            raise InternalError(f"the fields of input {feed.name!r} could not be read") from None
        return feed.array(values, many)


def output_records(
    outputs: InferResponse | Sequence[Tensor], *, native: bool = False
) -> list[dict[str, Any]]:
    """One record per row of the outputs (see the module docstring); any mapping's `records`.

    `native`: float32 and float16 values stay numpy scalars and rows numpy arrays (for
    orjson, which writes them at their own precision: 0.1, not 0.10000000149011612) instead
    of Python floats and lists.
    """
    tensors = outputs.outputs if isinstance(outputs, InferResponse) else outputs
    rows: int | None = None
    columns: list[tuple[str, Sequence[Any]]] = []
    for tensor in tensors:
        data = np.asarray(tensor.data)
        if data.ndim == 0:
            raise InternalError(f"output {tensor.name!r} has no rows (a scalar)")
        if rows is None:
            rows = data.shape[0]
        elif data.shape[0] != rows:
            raise InternalError(f"output {tensor.name!r} has {data.shape[0]} rows, others {rows}")
        if tensor.datatype == "BYTES":
            values: Sequence[Any] = [_text(v) for v in data.tolist()]
        elif native and data.dtype.kind == "f" and data.dtype.itemsize < 8:
            # Float32 and float16 only: orjson writes them at their own precision; integers
            # become Python ints, since orjson knows numpy's int64 but not its twin longlong.
            values = list(np.ascontiguousarray(data))
        else:
            values = data.tolist()
        columns.append((tensor.name, values))
    if rows == 1:
        return [{name: values[0] for name, values in columns}]
    return [{name: values[i] for name, values in columns} for i in range(rows or 0)]


def _resolved(version: ModelVersion, names: Sequence[str]) -> tuple[InputFeed, ...] | None:
    try:
        return _feeds(resolve_sources(version, names, None, FIELDS))
    except InvalidInput:
        return None


def _feeds(sources: tuple[InputSource, ...]) -> tuple[InputFeed, ...]:
    return tuple(InputFeed.of(s) for s in sources)


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value
