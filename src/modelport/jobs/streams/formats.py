"""Message formats of `modelport stream` (`--format`): a message's bytes to an inference request
for the loaded model, and the model's response back to bytes.

- `oip`: the message is exactly an OIP REST inference request body, and the answer exactly the
  REST response body (protocol.codec_json).
- `json`: the message is one JSON object of fields (one record), mapped onto the model's
  inputs by serving.record_mapping (inputs by field name, or the F feature fields of a single
  `[-1, F]` input in the order `--features` or the version's reference data gives). The
  answer is a JSON object of the outputs (a `[-1, K]` output as a list) and the provenance
  fields `_model`, `_version`, `_sha256` and `_request_id`, named as in batch outputs.
- `avro`: the message is an Avro record, schemaless with `--schema FILE` or in the Confluent
  wire format with `--schema-dir DIR` (writer schemas in `DIR/ID.avsc`), mapped as `json`.
  The answer is an Avro record of `output_schema` (serving.avro_records; print it with
  `--print-output-schema`): schemaless by default; in the Confluent wire format with
  `--output-schema-id N`, the id under which that schema is registered, which Confluent
  input demands (its consumers expect framed values); or JSON with `--output-format json`.
  The answer schema is pinned by the first version a format answers for: a version whose
  signature gives another schema is refused (register the new schema, then restart).

Records map once per model version and writer schema (kept by the version's digest), so a
format object serves on across alias moves. Every message that does not decode is InvalidInput,
which the consumer dead-letters (stage "decode").
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar

import orjson

from modelport.errors import InternalError, InvalidInput
from modelport.protocol.codec_json import decode_request, encode_response
from modelport.protocol.types import InferRequest, InferResponse
from modelport.registry.manifest import ModelVersion
from modelport.serving.avro_records import (
    PROVENANCE,
    AvroSchema,
    SchemaDirectory,
    check_schema_id,
    load_schema,
    output_fields,
    output_schema,
    parse_schema,
    read_schemaless,
    write_confluent,
    write_schemaless,
)
from modelport.serving.avro_records import output_schema_json as output_schema_json
from modelport.serving.catalog import LoadedModel
from modelport.serving.record_mapping import RecordMapping, output_records

FORMATS: Final = ("oip", "json", "avro")
"""The `--format` choices."""
OUTPUT_FORMATS: Final = ("avro", "json")
"""The `--output-format` choices of `--format avro`."""
JSON: Final = "application/json"
AVRO: Final = "avro/binary"
"""The content type the Avro specification gives binary-encoded values."""

_KEEP: Final = 16
"""Versions (or version and schema pairs) a format keeps what it built for."""
_T = TypeVar("_T")


class MessageFormat(Protocol):
    """How one stream's messages become inference requests and responses become messages."""

    @property
    def content_type(self) -> str:
        """The media type of the answers `encode` makes."""
        ...

    def prepare(self, model: LoadedModel) -> None:
        """Resolve now what `model`'s messages will need; InvalidInput for a misconfiguration
        (wrong features, a writer schema whose fields do not feed the model)."""
        ...

    def decode(self, value: bytes, model: LoadedModel) -> InferRequest:
        """The inference request a message's value holds; InvalidInput when it holds none."""
        ...

    def encode(self, response: InferResponse, model: LoadedModel) -> bytes:
        """The answer to produce for `response`; InvalidInput when it cannot be encoded."""
        ...

    def decode_many(self, values: Sequence[bytes], model: LoadedModel) -> InferRequest | None:
        """All of `values` as one request of one row each, when every one decodes (and in
        one way); None otherwise, and the caller decodes them one by one. A shortcut for
        the common case: it never refuses."""
        ...

    def encode_many(
        self, response: InferResponse, model: LoadedModel, request_ids: Sequence[str]
    ) -> list[bytes] | None:
        """One answer per row of `response` (a `decode_many` request's), with its request
        id; None when one of them cannot be encoded (the caller encodes them one by one)."""
        ...


def message_format(
    name: str,
    *,
    schema: Path | None = None,
    schema_dir: Path | None = None,
    output: str | None = None,
    output_schema_id: int | None = None,
    features: Sequence[str] | None = None,
) -> MessageFormat:
    """The format `--format name` selects with its options; InvalidInput for bad combinations.

    `schema`/`schema_dir` (exactly one, with `avro` only) give the writer schema of
    schemaless values or the directory of Confluent schema ids; `output` is `avro` (the
    default for `avro`) or `json`; `output_schema_id` frames Avro answers in the Confluent
    wire format; `features` orders the fields of a single `[-1, F]` input (`json`, `avro`).
    """
    if name not in FORMATS:
        raise InvalidInput(f"unknown --format {name!r}; use one of {', '.join(FORMATS)}")
    if name != "avro":
        given = [
            flag
            for flag, value in (
                ("--schema", schema),
                ("--schema-dir", schema_dir),
                ("--output-schema-id", output_schema_id),
            )
            if value is not None
        ]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise InvalidInput(f"{' and '.join(given)} {verb} to --format avro, not {name}")
        if output not in (None, "json"):
            raise InvalidInput(
                f"--format {name} answers in JSON; --output-format applies to --format avro"
            )
    if name == "oip":
        if features is not None:
            raise InvalidInput(
                "--features applies to --format json and avro: an OIP request names its "
                "input tensors itself"
            )
        return OipFormat()
    if name == "json":
        return JsonFormat(features)
    return _avro_format(schema, schema_dir, output, output_schema_id, features)


def _avro_format(
    schema: Path | None,
    schema_dir: Path | None,
    output: str | None,
    output_schema_id: int | None,
    features: Sequence[str] | None,
) -> AvroFormat:
    if (schema is None) == (schema_dir is None):
        raise InvalidInput(
            "--format avro needs exactly one of --schema FILE (schemaless values written "
            "with that schema) and --schema-dir DIR (the Confluent wire format, with the "
            "writer schemas in DIR/ID.avsc)"
        )
    answer = output if output is not None else "avro"
    if answer not in OUTPUT_FORMATS:
        raise InvalidInput(
            f"unknown --output-format {output!r}; use one of {', '.join(OUTPUT_FORMATS)}"
        )
    if output_schema_id is not None:
        if answer != "avro":
            raise InvalidInput(
                "--output-schema-id frames Avro answers; drop it, or --output-format json"
            )
        check_schema_id(output_schema_id)
    elif schema_dir is not None and answer == "avro":
        raise InvalidInput(
            "values in the Confluent wire format are answered in it: give --output-schema-id "
            "N, the id under which the answer schema (--print-output-schema) is registered, "
            "or answer in JSON with --output-format json"
        )
    writer = None
    if schema is not None:
        writer = load_schema(schema)
        if writer.fields is None:
            raise InvalidInput(
                f"--schema {schema} is an Avro {writer.name}, not a record: a message is "
                "one record of fields"
            )
    directory = SchemaDirectory(schema_dir) if schema_dir is not None else None
    return AvroFormat(writer, directory, answer == "json", output_schema_id, features)


class OipFormat:
    """`--format oip`: OIP REST inference request bodies in, REST response bodies out."""

    def decode_many(self, values: Sequence[bytes], model: LoadedModel) -> InferRequest | None:
        """None: an OIP request may hold several rows, outputs and parameters of its own."""
        return None

    def encode_many(
        self, response: InferResponse, model: LoadedModel, request_ids: Sequence[str]
    ) -> list[bytes] | None:
        """None (see decode_many)."""
        return None

    content_type: Final = JSON

    def prepare(self, model: LoadedModel) -> None:
        """Nothing to resolve: each request names its tensors."""

    def decode(self, value: bytes, model: LoadedModel) -> InferRequest:
        """The request body decoded as the REST endpoint decodes it."""
        return decode_request(value)

    def encode(self, response: InferResponse, model: LoadedModel) -> bytes:
        """The response body the REST endpoint would send."""
        return encode_response(response)


class JsonFormat:
    """`--format json`: one JSON object of fields in, a JSON object of outputs out."""

    content_type: Final = JSON

    def __init__(self, features: Sequence[str] | None = None) -> None:
        chosen = None if features is None else tuple(features)
        self._mappings: _PerVersion[RecordMapping] = _PerVersion(
            lambda version, _: _record_mapping(version, None, chosen)
        )

    def prepare(self, model: LoadedModel) -> None:
        """Resolve the record mapping (InvalidInput for features that do not fit)."""
        self._mappings.get(model.version)

    def decode(self, value: bytes, model: LoadedModel) -> InferRequest:
        """The request for the one record the message holds."""
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            if not value.strip():
                raise InvalidInput("the message is empty; send a JSON object of fields") from None
            raise InvalidInput(f"the message is not valid JSON: {exc}") from None
        if type(record) is not dict:
            raise InvalidInput(
                f"the message must be a JSON object of fields (one record), not {_kind(record)}"
            )
        return self._mappings.get(model.version).request(record)

    def encode(self, response: InferResponse, model: LoadedModel) -> bytes:
        """The outputs and provenance as one JSON object."""
        return json_answer(response)

    def decode_many(self, values: Sequence[bytes], model: LoadedModel) -> InferRequest | None:
        """Every value's record, mapped at once (None when one does not parse or map)."""
        try:
            records = [orjson.loads(value) for value in values]
        except orjson.JSONDecodeError:
            return None
        if any(type(record) is not dict for record in records):
            return None
        try:
            return self._mappings.get(model.version).request(records)
        except InvalidInput:
            return None

    def encode_many(
        self, response: InferResponse, model: LoadedModel, request_ids: Sequence[str]
    ) -> list[bytes] | None:
        """Each row's outputs and provenance as a JSON object."""
        return json_answers(response, request_ids)


class AvroFormat:
    """`--format avro`: Avro records in (schemaless or Confluent-framed), Avro or JSON out."""

    def __init__(
        self,
        schema: AvroSchema | None,
        directory: SchemaDirectory | None,
        answer_json: bool,
        output_schema_id: int | None,
        features: Sequence[str] | None,
    ) -> None:
        if (schema is None) == (directory is None):
            raise InternalError("an Avro format reads with a schema or a schema directory")
        self._schema = schema
        self._directory = directory
        self._answer_json = answer_json
        self._output_schema_id = output_schema_id
        self.content_type: Final = JSON if answer_json else AVRO
        chosen = None if features is None else tuple(features)
        self._mappings: _PerVersion[RecordMapping] = _PerVersion(
            lambda version, fields: _record_mapping(version, fields, chosen)
        )
        self._answers: _PerVersion[_AvroAnswer] = _PerVersion(
            lambda version, _: self._answer_for(version)
        )
        self._pinned: tuple[ModelVersion, dict[str, Any]] | None = None
        """The first version answered for, and its answer schema, which every answer keeps."""

    def prepare(self, model: LoadedModel) -> None:
        """Resolve the mapping of `--schema`'s fields and the answer schema for `model`."""
        if self._schema is not None:
            self._mappings.get(model.version, self._schema.fields)
        if not self._answer_json:
            self._answers.get(model.version)

    def decode(self, value: bytes, model: LoadedModel) -> InferRequest:
        """The request for the Avro record the message holds."""
        if self._schema is not None:
            writer = self._schema
            datum = read_schemaless(value, writer, "the message")
        elif self._directory is not None:
            schema_id, datum = self._directory.read(value)
            writer = self._directory.schema(schema_id)
        else:
            raise InternalError("an Avro format reads with a schema or a schema directory")
        if writer.fields is None or type(datum) is not dict:
            raise InvalidInput(
                f"the message is an Avro {writer.name}, not a record: a message is one "
                "record of fields"
            )
        return self._mappings.get(model.version, writer.fields).request(datum)

    def encode(self, response: InferResponse, model: LoadedModel) -> bytes:
        """The answer record, in Avro of the answer schema (or JSON)."""
        if self._answer_json:
            return json_answer(response)
        answer = self._answers.get(model.version)
        record = _one(output_records(response), response)
        fields = answer.fields
        datum = {fields.get(name, name): value for name, value in record.items()}
        for name in answer.texts:
            if _has_bytes(record.get(name)):
                raise InvalidInput(
                    f"output {name!r} holds bytes that are not UTF-8 text; the answer schema "
                    "carries BYTES outputs as Avro strings"
                )
        datum.update(provenance(response, model))
        # Built from the schema's own types: validating would only cost time.
        if self._output_schema_id is None:
            return write_schemaless(datum, answer.schema, validate=False)
        return write_confluent(datum, answer.schema, self._output_schema_id, validate=False)

    def decode_many(self, values: Sequence[bytes], model: LoadedModel) -> InferRequest | None:
        """Every value's record, mapped at once, when all share one writer schema."""
        try:
            if self._schema is not None:
                writer = self._schema
                data = [read_schemaless(value, writer, "the message") for value in values]
            elif self._directory is not None:
                read = [self._directory.read(value) for value in values]
                if len({schema_id for schema_id, _ in read}) != 1:
                    return None
                writer = self._directory.schema(read[0][0])
                data = [datum for _, datum in read]
            else:
                return None
            if writer.fields is None or any(type(datum) is not dict for datum in data):
                return None
            return self._mappings.get(model.version, writer.fields).request(data)
        except InvalidInput:
            return None

    def encode_many(
        self, response: InferResponse, model: LoadedModel, request_ids: Sequence[str]
    ) -> list[bytes] | None:
        """Each row's answer record under its request id (JSON answers as `json`)."""
        if self._answer_json:
            return json_answers(response, request_ids)
        return None

    def _answer_for(self, version: ModelVersion) -> _AvroAnswer:
        schema = output_schema(version)
        if self._pinned is None:
            self._pinned = (version, schema)
        elif self._pinned[1] != schema:
            first = self._pinned[0]
            raise InvalidInput(
                f"model {version.name!r} version {version.version} answers with another Avro "
                f"schema than version {first.version}, the first this consumer answered for "
                "(their outputs differ); register the new schema (--print-output-schema) and "
                "restart with it"
            )
        texts = tuple(s.name for s in version.signature.outputs if s.datatype == "BYTES")
        return _AvroAnswer(
            parse_schema(schema, f"the answer schema of model {version.name!r}"),
            output_fields(version),
            texts,
        )


@dataclass(frozen=True, slots=True)
class _AvroAnswer:
    """What Avro answers for one version need: the schema and the output -> field names."""

    schema: AvroSchema
    fields: dict[str, str]
    texts: tuple[str, ...]
    """The BYTES outputs, which must be UTF-8 text."""


class _PerVersion(Generic[_T]):
    """What a format builds once per model version (and writer schema): the last few kept.

    Keyed by the version's digest, name and number, so that a format serves every version an
    alias moves to; the newest entry is checked first (consecutive messages share it).
    """

    def __init__(self, build: Callable[[ModelVersion, Any], _T]) -> None:
        # `build` may refuse (InvalidInput): nothing is kept then, and the next call asks again.
        self._build = build
        self._items: dict[Hashable, _T] = {}
        self._last: tuple[ModelVersion, Hashable, _T] | None = None

    def get(self, version: ModelVersion, extra: Hashable = None) -> _T:
        """What `build(version, extra)` gives, built on the first call for them."""
        last = self._last
        if last is not None and last[0] is version and last[1] is extra:
            return last[2]
        key = (version.digest, version.name, version.version, extra)
        item = self._items.get(key)
        if item is None:
            item = self._build(version, extra)
            if len(self._items) >= _KEEP:
                del self._items[next(iter(self._items))]
            self._items[key] = item
        self._last = (version, extra, item)
        return item


def json_answers(response: InferResponse, request_ids: Sequence[str]) -> list[bytes] | None:
    """`json_answer` for each row of `response`, under its request id (None: a row that a
    JSON answer cannot carry)."""
    base = provenance(response, None)
    records = output_records(response, native=True)
    if len(records) != len(request_ids):
        raise InternalError(
            f"model {response.model_name!r} answered {len(records)} rows for "
            f"{len(request_ids)} messages"
        )
    answers = []
    try:
        for record, request_id in zip(records, request_ids, strict=True):
            record.update(base)
            record["_request_id"] = request_id
            answers.append(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY))
    except orjson.JSONEncodeError:
        return None
    return answers


def json_answer(response: InferResponse) -> bytes:
    """The JSON answer: the outputs of the one row, then the provenance fields."""
    record = _one(output_records(response, native=True), response)
    record.update(provenance(response, None))
    try:
        return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:
        raw = [name for name, value in record.items() if _has_bytes(value)]
        if raw:
            raise InvalidInput(
                f"output(s) {', '.join(map(repr, raw))} hold bytes that are not UTF-8 text, "
                "which a JSON answer cannot carry"
            ) from None
        raise


def provenance(response: InferResponse, model: LoadedModel | None) -> dict[str, Any]:
    """The provenance fields of an answer: which model and version answered, which request."""
    parameters = response.parameters
    version: int | str = response.model_version
    if isinstance(version, str) and version.isdigit():
        version = int(version)
    elif model is not None:
        version = model.number
    return {
        "_model": response.model_name,
        "_version": version,
        "_sha256": str(parameters.get("modelport.sha256", "")),
        "_request_id": str(parameters.get("modelport.request_id", response.id)),
    }


def _record_mapping(
    version: ModelVersion, fields: Sequence[str] | None, features: Sequence[str] | None
) -> RecordMapping:
    clash = [s.name for s in version.signature.outputs if s.name in PROVENANCE]
    if clash:
        raise InvalidInput(
            f"model {version.name!r} has output(s) {', '.join(map(repr, clash))}, named like "
            "the provenance fields of an answer; a stream cannot answer for it"
        )
    return RecordMapping.for_model(version, fields, features)


def _one(records: list[dict[str, Any]], response: InferResponse) -> dict[str, Any]:
    if len(records) != 1:
        raise InternalError(
            f"model {response.model_name!r} answered {len(records)} rows for one message"
        )
    return records[0]


def _has_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    return isinstance(value, list) and any(_has_bytes(v) for v in value)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array (send one record per message)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return "text" if isinstance(value, str) else "a number"
