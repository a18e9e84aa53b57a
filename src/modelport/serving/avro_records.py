"""Avro records: schemaless values, the Confluent wire format, container files, answer schemas.

Transport-free, for stream messages and HTTP bodies alike. A schemaless value is one record's
binary encoding, readable only with the schema it was written with; the Confluent wire format
frames it as a zero magic byte, the writer schema's id (4 bytes, big-endian) and the value, and
the schemas are read here from a directory of `ID.avsc` files; an object container file holds
its schema and many records. `output_schema` is the published schema of a model's answers.

fastavro (the `avro` extra) is imported when first used, so that this module imports without
it; using it without fastavro is InvalidInput naming the install command. Every value that
does not match its schema is InvalidInput, never fastavro's own exception.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from modelport.errors import InvalidInput
from modelport.protocol.signature import TensorSpec
from modelport.registry.manifest import ModelVersion

AVRO_EXTRA: Final = "pip install 'modelport[avro]'"
CONFLUENT_MAGIC: Final = 0
"""The first byte of a value in the Confluent wire format."""
CONFLUENT_HEADER: Final = 5
"""Magic byte and 4-byte schema id."""
MAX_SCHEMA_ID: Final = 2**31 - 1
"""Confluent schema ids are positive 32-bit integers."""
ANSWER_NAMESPACE: Final = "modelport.answers"
PROVENANCE: Final = ("_model", "_version", "_sha256", "_request_id")
"""The provenance fields of an answer, after the outputs (the batch output's naming)."""

_AVRO_TYPES: Final[dict[str, str]] = {
    "BOOL": "boolean",
    "UINT8": "int",
    "UINT16": "int",
    "INT8": "int",
    "INT16": "int",
    "INT32": "int",
    "UINT32": "long",
    "INT64": "long",
    "UINT64": "long",
    "FP16": "float",
    "FP32": "float",
    "FP64": "double",
    "BYTES": "string",
}
"""The Avro type of each OIP datatype's values (UINT64 beyond a long's range is refused)."""
_PROVENANCE_FIELDS: Final = (
    ("_model", "string", "The model's name."),
    ("_version", "long", "The version number that answered."),
    ("_sha256", "string", "The sha256 digest of that version's artifact."),
    ("_request_id", "string", "The request id, as the inference log records it."),
)
_NOT_NAME: Final = re.compile(r"[^A-Za-z0-9_]")
_ADDRESS: Final = re.compile(r"\s*<[^>]*object at 0x[0-9a-f]+>")
# What fastavro's readers and writers raise on a value that does not match its schema.
_CODEC_ERRORS: Final = (
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    OverflowError,
    RecursionError,
    struct.error,
)


@dataclass(frozen=True, slots=True)
class AvroSchema:
    """A parsed Avro schema, ready for fastavro, with the names refusals and mappings need."""

    parsed: Any
    """fastavro's parsed form."""
    name: str
    """The full name of a named type, else the type's own name."""
    fields: tuple[str, ...] | None
    """A record's field names, in order; None when the schema is not a record."""


@dataclass(frozen=True, slots=True)
class ContainerFile:
    """The records of an Avro object container file and the schema they were written with."""

    schema: Any
    """The writer schema, as JSON."""
    records: list[Any]


def parse_schema(schema: Any, what: str = "the Avro schema") -> AvroSchema:
    """Parse a schema given as JSON (a dict, list or type name, or its JSON text)."""
    fastavro = _fastavro()
    if isinstance(schema, str) and schema.lstrip()[:1] in ("{", "[", '"'):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise InvalidInput(f"{what} is not valid JSON: {exc}") from None
    try:
        parsed = fastavro.parse_schema(schema)
    except (*_CODEC_ERRORS, fastavro.schema.SchemaParseException) as exc:
        raise InvalidInput(f"{what} is not a valid Avro schema: {_why(exc)}") from None
    fields = None
    if isinstance(parsed, Mapping) and parsed.get("type") == "record":
        fields = tuple(str(f["name"]) for f in parsed["fields"])
    if isinstance(parsed, Mapping):
        name = str(parsed.get("name") or parsed.get("type"))
    else:
        name = parsed if isinstance(parsed, str) else "union"
    return AvroSchema(parsed, name, fields)


def load_schema(path: Path) -> AvroSchema:
    """Read a schema file (`.avsc`); a schema registry's `{"schema": "..."}` answer also does."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"Avro schema file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"cannot read Avro schema file {path}: {exc.__class__.__name__}"
        ) from None
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"Avro schema file {path} is not valid JSON: {exc}") from None
    if isinstance(schema, dict) and "type" not in schema and isinstance(schema.get("schema"), str):
        return parse_schema(schema["schema"], f"the schema in {path}")
    return parse_schema(schema, f"Avro schema file {path}")


def read_schemaless(data: bytes | memoryview, schema: AvroSchema, what: str = "the value") -> Any:
    """Decode one schemaless value written with `schema`; InvalidInput when it is not one.

    Every byte must belong to the value: bytes left over mean another schema wrote it.
    """
    fastavro = _fastavro()
    stream = io.BytesIO(data)
    try:
        datum = fastavro.schemaless_reader(stream, schema.parsed)
    except _CODEC_ERRORS as exc:
        raise InvalidInput(
            f"{what} does not decode as Avro schema {schema.name!r}: {_why(exc)}; check that "
            "it was written with this schema"
        ) from None
    left = len(data) - stream.tell()
    if left:
        hint = ""
        if len(data) >= CONFLUENT_HEADER and data[0] == CONFLUENT_MAGIC:
            hint = (
                " (it starts with a zero byte, as the Confluent wire format does: read it "
                "with the schema its id names)"
            )
        raise InvalidInput(
            f"{what} holds {left} byte(s) past the end of a record of Avro schema "
            f"{schema.name!r}: it was written with another schema{hint}"
        )
    return datum


def write_schemaless(datum: Any, schema: AvroSchema, *, validate: bool = True) -> bytes:
    """Encode `datum` schemaless with `schema`; InvalidInput names the field that does not fit.

    `validate` checks every value's type first (fastavro would write 1.5 as the long 1 and
    text into a double); pass False only for data built from the schema's own types.
    """
    stream = io.BytesIO()
    _write(datum, schema, validate, lambda f, d: f.schemaless_writer(stream, schema.parsed, d))
    return stream.getvalue()


def confluent_schema_id(data: bytes | memoryview) -> int:
    """The schema id of a value in the Confluent wire format; InvalidInput when it is not one."""
    if len(data) < CONFLUENT_HEADER:
        raise InvalidInput(
            f"the value is {len(data)} byte(s), shorter than the Confluent wire format's "
            "header (a zero magic byte and a 4-byte schema id)"
        )
    if data[0] != CONFLUENT_MAGIC:
        raise InvalidInput(
            f"the value starts with byte 0x{data[0]:02x}, not the Confluent wire format's "
            "magic byte 0x00 (is it schemaless Avro, or JSON?)"
        )
    schema_id: int = struct.unpack_from(">I", data, 1)[0]
    return schema_id


def write_confluent(
    datum: Any, schema: AvroSchema, schema_id: int, *, validate: bool = True
) -> bytes:
    """Encode `datum` in the Confluent wire format: magic byte, `schema_id`, schemaless value."""
    check_schema_id(schema_id)
    header = struct.pack(">BI", CONFLUENT_MAGIC, schema_id)
    return header + write_schemaless(datum, schema, validate=validate)


def check_schema_id(schema_id: int) -> int:
    """`schema_id` if it is one the Confluent wire format can carry; InvalidInput otherwise."""
    if isinstance(schema_id, bool) or not isinstance(schema_id, int):
        raise InvalidInput(f"a schema id is a whole number, not {schema_id!r}")
    if not 0 <= schema_id <= MAX_SCHEMA_ID:
        raise InvalidInput(f"a schema id is from 0 to {MAX_SCHEMA_ID}, not {schema_id}")
    return schema_id


class SchemaDirectory:
    """Writer schemas by Confluent schema id, from the files `DIR/ID.avsc` (each read once).

    A file added while a consumer runs is found by the first value that names its id.
    """

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise InvalidInput(
                f"Avro schema directory {directory} does not exist or is not a directory; "
                "give a directory of ID.avsc files"
            )
        self._directory = directory
        self._schemas: dict[int, AvroSchema] = {}

    @property
    def directory(self) -> Path:
        """Where the schemas are read from."""
        return self._directory

    def schema(self, schema_id: int) -> AvroSchema:
        """The schema of `schema_id`; InvalidInput naming the id and the directory if unknown."""
        found = self._schemas.get(schema_id)
        if found is None:
            path = self._directory / f"{schema_id}.avsc"
            if not path.is_file():
                raise InvalidInput(
                    f"unknown Avro schema id {schema_id}: {self._directory} has no "
                    f"{schema_id}.avsc; save the writer schema there (a schema registry "
                    f"gives it at GET /schemas/ids/{schema_id})"
                )
            found = self._schemas[schema_id] = load_schema(path)
        return found

    def read(self, data: bytes | memoryview) -> tuple[int, Any]:
        """Decode a value in the Confluent wire format: its schema id and its datum."""
        schema_id = confluent_schema_id(data)
        schema = self.schema(schema_id)
        body = memoryview(data)[CONFLUENT_HEADER:]
        return schema_id, read_schemaless(body, schema, f"the value of schema id {schema_id}")


def read_container(data: bytes | memoryview) -> ContainerFile:
    """The records of an Avro object container file; InvalidInput when it is not one."""
    fastavro = _fastavro()
    try:
        reader = fastavro.reader(io.BytesIO(data))
        records = list(reader)
    except _CODEC_ERRORS as exc:
        raise InvalidInput(f"the body is not an Avro object container file: {_why(exc)}") from None
    return ContainerFile(reader.writer_schema, records)


def write_container(
    records: Iterable[Any], schema: AvroSchema, *, codec: str = "null", validate: bool = True
) -> bytes:
    """An Avro object container file of `records` (codec "null" or "deflate")."""
    if codec not in ("null", "deflate"):
        raise InvalidInput(f"Avro container codec {codec!r} is not offered; use null or deflate")
    stream = io.BytesIO()
    rows = records if isinstance(records, list) else list(records)

    def write(fastavro: ModuleType, _: Any) -> None:
        fastavro.writer(stream, schema.parsed, rows, codec=codec, validator=False)

    if validate:
        for row in rows:
            _validated(row, schema)
    _write(rows, schema, False, write)
    return stream.getvalue()


def avro_name(name: str) -> str:
    """`name` as an Avro name: letters, digits and `_`, not starting with a digit."""
    cleaned = _NOT_NAME.sub("_", name) or "_"
    return "_" + cleaned if cleaned[0].isdigit() else cleaned


def output_fields(version: ModelVersion) -> dict[str, str]:
    """Output name -> its field name in the answer schema; InvalidInput if two would clash."""
    fields: dict[str, str] = {}
    taken = set(PROVENANCE)
    for spec in version.signature.outputs:
        field = avro_name(spec.name)
        if field in taken:
            raise InvalidInput(
                f"output {spec.name!r} of model {version.name!r} would be the answer field "
                f"{field!r}, which another output or a provenance field already is"
            )
        taken.add(field)
        fields[spec.name] = field
    return fields


def output_schema(version: ModelVersion) -> dict[str, Any]:
    """The Avro schema of the model's answers: one field per output, then the provenance.

    A record named after the model; a `[-1]` output is its datatype's Avro type, a `[-1, K]`
    output an array of them; BYTES outputs are strings. It depends on the model's name and
    signature only, so versions with one signature share one schema.
    """
    fields: list[dict[str, Any]] = []
    names = output_fields(version)
    for spec in version.signature.outputs:
        fields.append(
            {
                "name": names[spec.name],
                "type": _avro_type(spec),
                "doc": f"Output {spec.name!r}, {spec.datatype} {list(spec.shape)}.",
            }
        )
    for name, kind, doc in _PROVENANCE_FIELDS:
        fields.append({"name": name, "type": kind, "doc": doc})
    return {
        "type": "record",
        "name": avro_name(version.name),
        "namespace": ANSWER_NAMESPACE,
        "doc": f"An answer of model {version.name!r}: its outputs for one message, and which "
        "version gave them.",
        "fields": fields,
    }


def output_schema_json(version: ModelVersion) -> str:
    """`output_schema` as JSON text, to register with a schema registry or save as `.avsc`."""
    return json.dumps(output_schema(version), indent=2) + "\n"


def _avro_type(spec: TensorSpec) -> Any:
    kind: Any = _AVRO_TYPES[spec.datatype]
    for _ in spec.shape[1:]:
        kind = {"type": "array", "items": kind}
    return kind


def _fastavro() -> ModuleType:
    try:
        import fastavro
    except ImportError:
        raise InvalidInput(f"Avro needs the fastavro library: {AVRO_EXTRA}") from None
    return fastavro


def _write(datum: Any, schema: AvroSchema, validate: bool, write: Any) -> None:
    fastavro = _fastavro()
    if validate:
        _validated(datum, schema)
    try:
        write(fastavro, datum)
    except _CODEC_ERRORS as exc:
        raise InvalidInput(
            f"the record does not fit Avro schema {schema.name!r}: {_why(exc)}"
        ) from None


def _validated(datum: Any, schema: AvroSchema) -> None:
    _fastavro()
    from fastavro.validation import ValidationError, validate

    try:
        validate(datum, schema.parsed, raise_errors=True)
    except ValidationError as exc:
        first = exc.errors[0] if exc.errors else None
        if first is None:
            raise InvalidInput(f"the record does not fit Avro schema {schema.name!r}") from None
        if first.datum is None:
            found = "missing or null"
        else:
            shown = repr(first.datum)
            shown = shown if len(shown) <= 60 else shown[:60] + "..."
            found = f"{shown} ({type(first.datum).__name__})"
        raise InvalidInput(
            f"the record does not fit Avro schema {schema.name!r}: {first.field} is {found} "
            f"where the schema has {first.schema}"
        ) from None
    except _CODEC_ERRORS as exc:
        raise InvalidInput(
            f"the record does not fit Avro schema {schema.name!r}: {_why(exc)}"
        ) from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "it ends before the record does"
    if isinstance(exc, UnicodeDecodeError):
        return "a string in it is not UTF-8"
    if isinstance(exc, IndexError):
        return "a union branch or enum symbol in it is out of range"
    text = _ADDRESS.sub("", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
