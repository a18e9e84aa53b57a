"""Embedding: load a registered model into this process and predict on numpy arrays."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.config import registry_location
from modelport.errors import InvalidInput
from modelport.protocol.datatypes import numpy_dtype
from modelport.protocol.signature import Signature
from modelport.protocol.types import InferRequest, RequestedOutput, Tensor
from modelport.registry.manifest import MAX_VERSION, ModelVersion
from modelport.registry.store import Registry
from modelport.serving.artifacts import load_artifact
from modelport.serving.catalog import DIRECT, LoadedModel

if TYPE_CHECKING:
    import pyarrow as pa

    from modelport.serving.table_mapping import OutputsAs


class Model:
    """A registered model version loaded in-process, with the server's runtime and validation."""

    def __init__(self, loaded: LoadedModel) -> None:
        self._loaded = loaded

    @property
    def version(self) -> ModelVersion:
        """The registered version and its provenance."""
        return self._loaded.version

    @property
    def signature(self) -> Signature:
        """Inputs and outputs, as the server's model metadata gives them."""
        return self._loaded.version.signature

    def predict(
        self,
        inputs: Mapping[str, Any] | np.ndarray[Any, Any],
        outputs: list[str] | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Predict from arrays by input name (a bare array for a one-input model).

        Values are converted to each input's datatype; names, shapes and requested outputs are
        checked exactly as the server checks them (InvalidInput says what was expected).
        """
        if not isinstance(inputs, Mapping):
            specs = self.signature.inputs
            if len(specs) != 1:
                names = ", ".join(s.name for s in specs)
                raise InvalidInput(f"this model takes several inputs ({names}); pass a dict")
            inputs = {specs[0].name: inputs}
        datatypes = {s.name: s.datatype for s in self.signature.inputs}
        tensors = []
        for name, value in inputs.items():
            datatype = datatypes.get(name, "FP32")
            array = _as_array(value, datatype)
            tensors.append(Tensor(name, datatype, array.shape, array))
        request = InferRequest(
            tensors, outputs=None if outputs is None else [RequestedOutput(n) for n in outputs]
        )
        loaded = self._loaded
        checked = loaded.validator.inputs(request)
        wanted = loaded.validator.outputs(request) or loaded.output_names
        return loaded.predict(checked, wanted)

    def predict_table(
        self,
        table: Any,
        *,
        features: Sequence[str] | None = None,
        outputs_as: OutputsAs = "columns",
    ) -> pa.Table:
        """Predict every row of a pyarrow Table or pandas DataFrame; a Table of the outputs.

        Columns map to the inputs as `modelport batch` maps them (serving.table_mapping):
        inputs by column name, or a single [-1, F] input from the `features` columns (default:
        the order the version's reference data recorded). The result has one row per input
        row, in order, and exactly the output columns `modelport batch` writes (a 2-D output
        as NAME_0..NAME_{K-1}, or one list column with `outputs_as="lists"`), without its
        key and provenance columns: the caller holds the table, and `version` says which
        model answered. A row the model or validation refuses raises InvalidInput for the
        whole table (`modelport batch` isolates such rows instead).
        """
        # Deferred: pyarrow costs an embedder that never predicts on tables its import time.
        import pyarrow as pa

        from modelport.serving.table_mapping import TableMapping

        if not isinstance(table, pa.Table | pa.RecordBatch):
            try:
                table = pa.Table.from_pandas(table, preserve_index=False)
            except (TypeError, AttributeError, pa.ArrowException) as exc:
                raise InvalidInput(
                    f"predict_table takes a pyarrow Table or a pandas DataFrame, not "
                    f"{type(table).__name__} ({exc})"
                ) from None
        mapping = TableMapping.for_model(
            self.version, table.column_names, features, outputs_as=outputs_as
        )
        loaded = self._loaded
        datatypes = {s.name: s.datatype for s in self.signature.inputs}
        tensors = [
            Tensor(name, datatypes[name], array.shape, array)
            for name, array in mapping.inputs(table).items()
        ]
        checked = loaded.validator.inputs(InferRequest(tensors))
        columns = mapping.output_columns(loaded.predict(checked, loaded.output_names))
        return pa.table(dict(columns))

    def close(self) -> None:
        """Release the model."""
        self._loaded.runtime.close()

    def __repr__(self) -> str:
        mv = self.version
        return f"<modelport.Model {mv.name}:{mv.version} {mv.format} sha256:{mv.digest[:12]}>"


def load(
    name: str,
    version: int | None = None,
    registry: str | Path | None = None,
    *,
    compiled: bool = True,
) -> Model:
    """Load `name` (newest version unless `version`) from `registry` (default as the CLI's).

    With `compiled` (the default, as `modelport serve`) a version pushed with a compiled
    artifact runs from that artifact, which was checked at push to match the original; pass
    `compiled=False` to run the original artifact with its own library instead (as
    `modelport serve --no-compiled`). A version without a compiled artifact loads the same
    either way.
    """
    if version is not None:
        # True would pass as 1; numpy integers (not int subclasses) are fine.
        if isinstance(version, bool) or not isinstance(version, numbers.Integral):
            raise InvalidInput(f"version must be a whole number, got {version!r}")
        version = int(version)
        if not 1 <= version <= MAX_VERSION:
            raise InvalidInput(f"version must be from 1 to {MAX_VERSION}, got {version}")
    location = str(registry) if registry is not None else registry_location(None)
    store = Registry.open(location, create=False)
    try:
        mv = store.get(name, version)
        loaded = load_artifact(store, mv, prefer_compiled=compiled)
        compiled_artifact = mv.compiled if loaded.compiled else None
        # DIRECT: `Model.predict` calls the runtime synchronously, on the caller's thread.
        return Model(LoadedModel(mv, loaded.runtime, compiled_artifact, DIRECT))
    finally:
        store.close()


def _as_array(value: Any, datatype: str) -> np.ndarray[Any, Any]:
    if datatype == "BYTES":
        items = np.asarray(value, dtype=object)
        out = np.empty(items.size, dtype=object)
        out[:] = [_element_bytes(v) for v in items.ravel()]
        return out.reshape(items.shape)
    try:
        return np.asarray(value, dtype=numpy_dtype(datatype))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"cannot convert input to {datatype}: {exc}") from None


def _element_bytes(value: Any) -> bytes:
    # Only text and bytes-like values: bytes(5) would be five zero bytes, not b"5".
    if isinstance(value, str):
        try:
            return value.encode()
        except UnicodeEncodeError:
            raise InvalidInput("a BYTES string is not valid Unicode") from None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise InvalidInput(f"BYTES elements must be str or bytes, got {type(value).__name__}")
