"""Request bodies of rows (CSV, Avro container files, JSON row lists) and the answers back.

Framework-free, shared by the HTTP protocols that take tables (`/invocations`, and later
TF Serving's `:predict`). Rows become records (field -> value) and records a request through
`serving.record_mapping`, as batch jobs and stream consumers do; so a body feeds a model by
the same rules everywhere.

Rows with a header (a CSV header line, a `dataframe_split` with `columns`) name their fields.
Rows without one are positional: the model's inputs in signature order, one value each for a
`[-1]` or `[-1, 1]` input and K values for a `[-1, K]` input (any number when it is the only
input and its width is -1). A row of the wrong length, or a cell that is not a number where
the input takes numbers, is InvalidInput naming the row (1 is the first line of the body).
"""

from __future__ import annotations

import csv
import importlib.util
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

from modelport.errors import InvalidInput, Unsupported
from modelport.protocol.signature import TensorSpec
from modelport.protocol.types import InferRequest, InferResponse, Parameters
from modelport.registry.manifest import ModelVersion
from modelport.serving.avro_records import (
    AVRO_EXTRA,
    output_fields,
    output_schema,
    parse_schema,
    read_container,
    write_container,
)
from modelport.serving.input_sources import describe, recorded_features, resolve_sources
from modelport.serving.record_mapping import RecordMapping, output_records

JSON_TYPE: Final = "application/json"
CSV_TYPE: Final = "text/csv"
AVRO_TYPE: Final = "application/avro"
_FLOATS: Final = frozenset({"FP16", "FP32", "FP64"})
_MAPPINGS_KEPT: Final = 64
"""How many resolved mappings a `Tables` keeps (per version and header)."""


@dataclass(frozen=True, slots=True)
class _Column:
    """Where a positional row's cells go: `width` cells (None: one value) of an input."""

    spec: TensorSpec
    width: int | None


def media_type(header: bytes | None) -> tuple[str, dict[str, str]]:
    """The media type of a Content-Type value, lowercased, and its parameters."""
    if header is None:
        return "", {}
    kind, _, rest = header.decode("latin-1").partition(";")
    params: dict[str, str] = {}
    for pair in rest.split(";"):
        key, _, value = pair.partition("=")
        if key.strip():
            params[key.strip().lower()] = value.strip().strip('"').lower()
    return kind.strip().lower(), params


def accepted(header: bytes | None, offered: Sequence[str]) -> str | None:
    """The first of `offered` the Accept value names, by the client's order; None: any will do."""
    if header is None:
        return None
    for item in header.decode("latin-1").split(","):
        kind = item.partition(";")[0].strip().lower()
        if kind in offered:
            return kind
    return None


class Tables:
    """Turns row bodies into inference requests for a version, and answers into bodies.

    Mappings are resolved once per version and header and kept (the last few).
    """

    def __init__(self) -> None:
        self._mappings: dict[tuple[str, int, str, tuple[str, ...] | None], RecordMapping] = {}

    # -- requests --------------------------------------------------------------------------

    def csv_request(
        self, body: bytes, version: ModelVersion, parameters: Parameters | None = None
    ) -> InferRequest:
        """The request for a CSV body (UTF-8, with or without a header line)."""
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"the CSV body is not UTF-8 text: {exc.reason}") from None
        try:
            rows = [row for row in csv.reader(io.StringIO(text)) if row]
        except csv.Error as exc:
            raise InvalidInput(f"the CSV body cannot be read: {exc}") from None
        if not rows:
            raise InvalidInput("the CSV body has no rows; send one line per row of features")
        header: list[str] | None = None
        first = 1
        if _is_header(rows[0], version):
            header, rows, first = [c.strip() for c in rows[0]], rows[1:], 2
            if not rows:
                raise InvalidInput("the CSV body has a header line but no rows under it")
        return self.rows_request(rows, header, version, parameters, cells=True, first=first)

    def rows_request(
        self,
        rows: Sequence[Any],
        header: Sequence[str] | None,
        version: ModelVersion,
        parameters: Parameters | None = None,
        *,
        cells: bool = False,
        first: int = 1,
        what: str = "CSV row",
    ) -> InferRequest:
        """The request for `rows` (lists of values), named by `header` or positional.

        `cells`: the values are text, as CSV cells are, and read by each input's datatype;
        `first` is the number refusals give the first row, `what` what they call a row.
        """
        if not rows:
            raise InvalidInput("no rows to predict; give at least one")
        if header is not None:
            records = _named(rows, list(header), version, cells, first, what)
            fields: tuple[str, ...] = tuple(header)
        else:
            columns = _positional(version)
            records = _placed(rows, columns, cells, first, what)
            fields = tuple(c.spec.name for c in columns)
        return self._mapping(version, fields).request(records, parameters=parameters)

    def records_request(
        self, records: Any, version: ModelVersion, parameters: Parameters | None = None
    ) -> InferRequest:
        """The request for a list of JSON objects (`dataframe_records`)."""
        if not isinstance(records, list) or not records:
            raise InvalidInput("dataframe_records must be a non-empty list of objects")
        if not isinstance(records[0], dict):
            raise InvalidInput(
                f"dataframe_records holds objects, one per row; row 1 is "
                f"{type(records[0]).__name__}"
            )
        return self._mapping(version, None).request(records, parameters=parameters)

    def avro_request(
        self, body: bytes, version: ModelVersion, parameters: Parameters | None = None
    ) -> InferRequest:
        """The request for an Avro object container file of records."""
        require_avro()
        container = read_container(body)
        fields = parse_schema(container.schema, "the body's writer schema").fields
        if fields is None:
            raise InvalidInput(
                "the Avro body holds values that are not records; write records whose fields "
                "name the model's inputs"
            )
        if not container.records:
            raise InvalidInput("the Avro body holds no records; write at least one")
        return self._mapping(version, fields).request(container.records, parameters=parameters)

    def _mapping(self, version: ModelVersion, fields: tuple[str, ...] | None) -> RecordMapping:
        key = (version.name, version.version, version.digest, fields)
        mapping = self._mappings.get(key)
        if mapping is None:
            mapping = RecordMapping.for_model(version, fields)
            if len(self._mappings) >= _MAPPINGS_KEPT:
                self._mappings.clear()
            self._mappings[key] = mapping
        return mapping


def require_avro() -> None:
    """Unsupported, naming the extra to install, when fastavro is missing."""
    if importlib.util.find_spec("fastavro") is None:
        raise Unsupported(f"Avro bodies need the fastavro library: {AVRO_EXTRA}")


# -- answers -------------------------------------------------------------------------------


def predictions_json(response: InferResponse, extra: dict[str, Any] | None = None) -> bytes:
    """`{"predictions": ...}`: one output's values per row, else one object per row."""
    outputs = response.outputs
    predictions: Any
    if len(outputs) == 1:
        predictions = np.asarray(outputs[0].data)
        if outputs[0].datatype == "BYTES":
            predictions = [r[outputs[0].name] for r in output_records(response)]
    else:
        predictions = output_records(response, native=True)
    return orjson.dumps(
        {"predictions": predictions, **(extra or {})}, option=orjson.OPT_SERIALIZE_NUMPY
    )


def predictions_csv(response: InferResponse) -> bytes:
    """One CSV line per row: the outputs' values in order, a `[-1, K]` output as K cells."""
    quick = _csv_numbers(response)
    if quick is not None:
        return quick
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for record in output_records(response, native=True):
        line: list[str] = []
        for value in record.values():
            if isinstance(value, np.ndarray | list):
                line.extend(_cell(v) for v in value)
            else:
                line.append(_cell(value))
        writer.writerow(line)
    return out.getvalue().encode()


def _csv_numbers(response: InferResponse) -> bytes | None:
    """`predictions_csv` for finite numbers and booleans in 1-D or 2-D outputs, written by
    orjson a whole output at a time; None for anything else (the csv module writes it)."""
    lines: list[list[bytes]] = []
    for tensor in response.outputs:
        data = np.asarray(tensor.data)
        if data.dtype.kind not in "biuf" or data.ndim not in (1, 2) or len(data) == 0:
            return None
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            return None
        rows = data.reshape(len(data), -1)
        text = orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY)
        lines.append(text[2:-2].split(b"],["))
    return b"".join(b",".join(cells) + b"\n" for cells in zip(*lines, strict=True))


def predictions_avro(response: InferResponse, version: ModelVersion) -> bytes:
    """An Avro container file of one answer record per row (`avro_records.output_schema`)."""
    require_avro()
    schema = parse_schema(output_schema(version), f"the answer schema of {version.name!r}")
    fields = output_fields(version)
    provenance = {
        "_model": response.model_name,
        "_version": int(response.model_version or version.version),
        "_sha256": str(response.parameters.get("modelport.sha256", version.digest)),
        "_request_id": str(response.parameters.get("modelport.request_id", response.id or "")),
    }
    records = [
        {**{fields[k]: v for k, v in row.items()}, **provenance} for row in output_records(response)
    ]
    return write_container(records, schema, validate=False)


# -- rows ----------------------------------------------------------------------------------


def _is_header(row: list[str], version: ModelVersion) -> bool:
    """Whether a first CSV line names columns: every cell a name the model knows."""
    known = {s.name for s in version.signature.inputs}
    inputs = version.signature.inputs
    if len(inputs) == 1 and len(inputs[0].shape) == 2:
        known.update(recorded_features(version, inputs[0].name))
    return all(cell.strip() in known for cell in row)


def _positional(version: ModelVersion) -> list[_Column]:
    inputs = version.signature.inputs
    columns: list[_Column] = []
    for spec in inputs:
        if len(spec.shape) == 1 or (len(spec.shape) == 2 and spec.shape[1] == 1):
            columns.append(_Column(spec, None))
        elif len(spec.shape) == 2 and (spec.shape[1] > 0 or len(inputs) == 1):
            columns.append(_Column(spec, spec.shape[1]))
        else:
            raise InvalidInput(
                f"rows without a header cannot feed input {describe(spec)}; a row feeds inputs "
                "of shape [-1], [-1, 1] or [-1, K] (name the columns in a header instead)"
            )
    return columns


def _layout(columns: list[_Column]) -> str:
    return ", ".join(
        f"{c.spec.name} ({'1 value' if c.width is None else f'{c.width} values'})" for c in columns
    )


def _placed(
    rows: Sequence[Any], columns: list[_Column], cells: bool, first: int, what: str
) -> list[dict[str, Any]]:
    """Records from positional rows: each row's values cut into the inputs' columns."""
    fixed = sum(1 if c.width is None else c.width for c in columns)
    any_width = len(columns) == 1 and columns[0].width == -1
    if cells and all(c.spec.datatype in _FLOATS for c in columns):
        quick = _placed_floats(rows, columns, None if any_width else fixed)
        if quick is not None:
            return quick
    records: list[dict[str, Any]] = []
    width: int | None = None
    for index, row in enumerate(rows):
        number = first + index
        if not isinstance(row, list):
            raise InvalidInput(f"{what} {number} is {type(row).__name__}, not a list of values")
        if any_width:
            width = len(row) if width is None else width
            if len(row) != width or not row:
                raise InvalidInput(
                    f"{what} {number} has {len(row)} value(s); the rows before it have {width}"
                )
        elif len(row) != fixed:
            raise InvalidInput(
                f"{what} {number} has {len(row)} value(s); the model takes {fixed}: "
                f"{_layout(columns)}"
            )
        record: dict[str, Any] = {}
        at = 0
        for column in columns:
            spec = column.spec
            if column.width is None:
                record[spec.name] = _value(row[at], spec, cells, number, at, what)
                at += 1
            else:
                count = len(row) if column.width == -1 else column.width
                values = row[at : at + count]
                if cells:
                    values = [
                        _value(v, spec, True, number, at + k, what) for k, v in enumerate(values)
                    ]
                record[spec.name] = values
                at += count
        records.append(record)
    return records


def _placed_floats(
    rows: Sequence[Any], columns: list[_Column], width: int | None
) -> list[dict[str, Any]] | None:
    """`_placed` for text cells that all feed floating-point inputs, read by numpy in one go;
    None when a row or cell does not fit (the checked path then names it)."""
    try:
        values = np.array(rows, dtype=np.float64)
    except (ValueError, TypeError):
        return None
    if values.ndim != 2 or values.shape[1] == 0 or (width is not None and values.shape[1] != width):
        return None
    parts: list[list[Any]] = []
    at = 0
    for column in columns:
        if column.width is None:
            parts.append(values[:, at].tolist())
            at += 1
        else:
            count = values.shape[1] if column.width == -1 else column.width
            parts.append(values[:, at : at + count].tolist())
            at += count
    names = [c.spec.name for c in columns]
    return [dict(zip(names, row, strict=True)) for row in zip(*parts, strict=True)]


def _named(
    rows: Sequence[Any],
    header: list[str],
    version: ModelVersion,
    cells: bool,
    first: int,
    what: str,
) -> list[dict[str, Any]]:
    """Records from rows under a header; cells read by the datatype of the input they feed."""
    if len(set(header)) != len(header):
        raise InvalidInput(f"the header names a column twice: {', '.join(header)}")
    typed: dict[int, TensorSpec] = {}
    if cells:
        positions = {name: i for i, name in enumerate(header)}
        for source in resolve_sources(version, header):
            for column in source.columns:
                typed[positions[column]] = source.spec
    records: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        number = first + index
        if not isinstance(row, list):
            raise InvalidInput(f"{what} {number} is {type(row).__name__}, not a list of values")
        if len(row) != len(header):
            raise InvalidInput(
                f"{what} {number} has {len(row)} value(s); the header names {len(header)} "
                f"column(s): {', '.join(header)}"
            )
        if cells:
            row = [
                _value(v, typed[i], True, number, i, what) if i in typed else v
                for i, v in enumerate(row)
            ]
        records.append(dict(zip(header, row, strict=True)))
    return records


def _value(value: Any, spec: TensorSpec, cells: bool, row: int, column: int, what: str) -> Any:
    """A cell read for the input `spec` (numbers, true/false, text); JSON values unchanged."""
    if not cells or spec.datatype == "BYTES":
        return value
    text = value.strip()
    if spec.datatype == "BOOL":
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise _not_a(value, "true or false", spec, row, column, what)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise _not_a(value, "a number", spec, row, column, what) from None


def _not_a(value: str, kind: str, spec: TensorSpec, row: int, column: int, what: str) -> Exception:
    shown = value if len(value) <= 40 else value[:40] + "..."
    return InvalidInput(
        f"{what} {row}, column {column + 1}: {shown!r} is not {kind} (input {describe(spec)}); "
        "if the first line names the columns, name them after the model's inputs or features"
    )


def _cell(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
