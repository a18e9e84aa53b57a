"""The models loaded in this process, by name and version, ready to predict."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np

from modelport.config import DEFAULT_MAX_QUEUE
from modelport.errors import InvalidInput, ModelportError, NotFound
from modelport.protocol.datatypes import numpy_dtype
from modelport.protocol.signature import RequestValidator
from modelport.registry.manifest import (
    LATEST,
    CompiledArtifact,
    ModelVersion,
    version_number,
)
from modelport.registry.store import PRODUCTION
from modelport.runtimes.base import Runtime
from modelport.serving.batching import Batcher, BatchPolicy
from modelport.serving.executor import Executor
from modelport.serving.in_flight import InFlightTable

_MAX_MODEL_MESSAGE = 400
_NO_COLUMN = memoryview(b"")
"""The column of a model counted by this process alone (never written)."""


@dataclass(frozen=True, slots=True)
class Batched:
    """Served: predictions go through a batcher on `executor`, shed past `max_queue` in flight."""

    executor: Executor
    policy: BatchPolicy
    max_queue: int = DEFAULT_MAX_QUEUE
    on_call: Callable[[int, int], None] | None = None
    """Told each model call's rows and how many requests still wait (for metrics)."""
    counts: InFlightTable | None = None
    """Where the server's processes count requests in flight together, so that `max_queue`
    bounds the server; None: this process counts alone."""


@dataclass(frozen=True, slots=True)
class Direct:
    """Embedded: the caller runs `predict` itself, synchronously; nothing is batched or shed."""


Dispatch = Batched | Direct
"""How a loaded model's predictions run: the server's batcher, or the embedding caller."""

DIRECT = Direct()


@dataclass(slots=True)
class LoadedModel:
    """A registered version with its runtime and everything precomputed for the hot path.

    Built whole here, batcher and queue limit included, from the `dispatch` the caller picks.
    """

    version: ModelVersion
    runtime: Runtime
    compiled: CompiledArtifact | None
    """The compiled artifact the runtime was loaded from, or None for the original."""
    dispatch: InitVar[Dispatch]
    validator: RequestValidator = field(init=False)
    output_names: tuple[str, ...] = field(init=False)
    output_types: dict[str, tuple[str, Any]] = field(init=False)
    """Output name -> (OIP datatype, numpy dtype)."""
    provenance: dict[str, Any] = field(init=False)
    batcher: Batcher = field(init=False)
    """Runs this model's predictions, batching concurrent ones."""
    max_queue: int = field(init=False)
    """Past this many requests in flight in the whole server, new ones are shed."""
    in_flight: int = field(init=False, default=0)
    """Requests inside this process's dataplane for this version right now (it retires at
    zero)."""
    _counts: InFlightTable | None = field(init=False, default=None)
    """Where the server's processes count together; None: `in_flight` is the count."""
    _column: memoryview = field(init=False, default=_NO_COLUMN)
    """This version's column of `_counts`: one cell per process, this one's at its `row`."""
    _idle: asyncio.Event | None = field(init=False, default=None)
    """Made by the first `idle` call; set when the last request in flight leaves."""

    def __post_init__(self, dispatch: Dispatch) -> None:
        signature = self.version.signature
        self.validator = RequestValidator(signature)
        self.output_names = signature.output_names
        self.output_types = {
            s.name: (s.datatype, numpy_dtype(s.datatype)) for s in signature.outputs
        }
        self.provenance = {"modelport.sha256": self.version.digest}
        if self.compiled is not None:
            self.provenance["modelport.compiled_sha256"] = self.compiled.digest
            self.provenance["modelport.runtime"] = self.compiled.format
        if isinstance(dispatch, Batched):
            self.batcher = Batcher(
                self.predict,
                self.output_names,
                dispatch.executor,
                dispatch.policy,
                on_call=dispatch.on_call,
                inline=self.runtime.steady,
            )
            self.max_queue = dispatch.max_queue
            if dispatch.counts is not None:
                self._counts = dispatch.counts
                self._column = dispatch.counts.column(self.name, self.number)
        else:
            # No executor: were it awaited, the batcher would call the model in place.
            self.batcher = Batcher(self.predict, self.output_names, None, BatchPolicy(1))
            self.max_queue = DEFAULT_MAX_QUEUE

    # enter, leave and waiting run on every inference: the column is written in place here,
    # by the table's contract, rather than through a further call.

    def enter(self) -> None:
        """Count one more request in flight."""
        self.in_flight += 1
        counts = self._counts
        if counts is not None:
            try:
                self._column[counts.row] += 1
            except IndexError:  # this process has no row yet
                self._column[counts.claim()] += 1

    def leave(self) -> None:
        """Count one request out; the last one out wakes whoever waits in `idle`."""
        self.in_flight -= 1
        counts = self._counts
        if counts is not None:
            self._column[counts.row] -= 1
        if not self.in_flight and self._idle is not None:
            self._idle.set()

    def waiting(self) -> int:
        """Requests in flight for this version in the whole server (all its workers)."""
        return self.in_flight if self._counts is None else sum(self._column)

    def recount(self) -> int:
        """`waiting`, after forgetting the requests of server processes that died."""
        if self._counts is not None:
            self._counts.sweep()
        return self.waiting()

    async def idle(self) -> None:
        """Return once no request is in flight (at once if none is)."""
        if not self.in_flight:
            return
        if self._idle is None:
            self._idle = asyncio.Event()
        self._idle.clear()
        await self._idle.wait()

    def predict(
        self, inputs: dict[str, np.ndarray[Any, Any]], wanted: Sequence[str]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run the runtime on validated inputs; a model refusing the values is InvalidInput."""
        try:
            return self.runtime.predict(inputs, wanted)
        except ModelportError:
            raise
        except (ValueError, TypeError) as exc:
            # Inputs already match the signature, so what remains is the model refusing the
            # values themselves (NaN, unseen category, ...): the caller's to fix, not a fault.
            message = str(exc)[:_MAX_MODEL_MESSAGE]
            raise InvalidInput(f"model {self.name!r} rejected the input: {message}") from exc

    @property
    def name(self) -> str:
        """The model's name."""
        return self.version.name

    @property
    def number(self) -> int:
        """The version number."""
        return self.version.version


class Catalog:
    """Loaded models by name, then version number, and the routes that pick a version.

    A model's default route (`/v2/models/NAME/...`) is its `production` alias when that names
    a loaded version, else what it was (while the alias names a version not loaded), else its
    newest loaded version; `/versions/N/` names a number and
    `/versions/ALIAS/` any alias whose version is loaded.
    """

    def __init__(self) -> None:
        self._models: dict[str, dict[int, LoadedModel]] = {}
        self._aliases: dict[str, dict[str, int]] = {}
        self._default: dict[str, LoadedModel] = {}

    def get(self, name: str, version: str | None = None) -> LoadedModel | None:
        """The loaded model a route names (None: the default route), or None."""
        if version is None:
            return self._default.get(name)
        versions = self._models.get(name)
        if versions is None:
            return None
        number = version_number(version)
        if number is None:
            number = (
                max(versions) if version == LATEST else self._aliases.get(name, {}).get(version)
            )
        return None if number is None else versions.get(number)

    def add(self, model: LoadedModel) -> None:
        """Make `model` servable by number; the default route moves only by `_route` rules."""
        self._models.setdefault(model.name, {})[model.number] = model
        self._route(model.name)

    def set_aliases(self, name: str, aliases: dict[str, int]) -> None:
        """Replace the aliases of `name` (alias -> version number) and re-route at once."""
        self._aliases[name] = dict(aliases)
        if name in self._models:
            self._route(name)

    def aliases_of(self, model: LoadedModel) -> list[str]:
        """The aliases that name `model`'s version, sorted."""
        names = self._aliases.get(model.name, {})
        return sorted(alias for alias, number in names.items() if number == model.number)

    def remove(self, name: str, number: int) -> LoadedModel:
        """Stop serving one version and return it; NotFound if it is not loaded."""
        versions = self._models.get(name, {})
        model = versions.pop(number, None)
        if model is None:
            raise NotFound(f"version {number} of model {name!r} is not loaded")
        if versions:
            self._route(name)
        else:
            del self._models[name]
            del self._default[name]
        return model

    def _route(self, name: str) -> None:
        versions = self._models[name]
        production = self._aliases.get(name, {}).get(PRODUCTION)
        if production is None:
            self._default[name] = versions[max(versions)]
        elif production in versions:
            self._default[name] = versions[production]
        else:
            # production names a version that is not loaded (yet, or it failed to load):
            # what served keeps serving.
            current = self._default.get(name)
            if current is None or versions.get(current.number) is not current:
                current = versions[max(versions)]
            self._default[name] = current

    def state(self) -> tuple[object, ...]:
        """What is served, as a value: equal states serve the same versions by the same routes."""
        return (
            sorted((m.name, m.number) for m in self),
            sorted((name, sorted(aliases.items())) for name, aliases in self._aliases.items()),
            sorted((name, model.number) for name, model in self._default.items()),
        )

    def versions(self, name: str) -> list[LoadedModel]:
        """Loaded versions of `name`, oldest first."""
        return [m for _, m in sorted(self._models.get(name, {}).items())]

    def __iter__(self) -> Iterator[LoadedModel]:
        for name in sorted(self._models):
            yield from self.versions(name)
