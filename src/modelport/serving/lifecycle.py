"""Which versions this process serves: start-up loading, following the registry, retiring.

The lifecycle owns what changes while the server runs: the catalog's contents and routes, why a
model failed to load, which versions were given up on, which are loading, which an operator
unloaded (they stay unloaded until loaded again), and the versions being retired. The
dataplane reads the catalog on the request path and asks the lifecycle to load and unload.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from modelport.config import ModelsSettings
from modelport.errors import InternalError, ModelportError, NotFound
from modelport.intake.compilation import verification_sample
from modelport.model_policy import model_policy
from modelport.registry.manifest import ModelVersion, version_number
from modelport.registry.store import Registry
from modelport.serving.artifacts import load_artifact
from modelport.serving.batching import policy_for
from modelport.serving.catalog import Batched, Catalog, LoadedModel
from modelport.serving.executor import Executor
from modelport.serving.in_flight import InFlightTable
from modelport.serving.telemetry import NoTelemetry, Telemetry

# The server has always logged loads and unloads under this name; log filters select on it.
log = logging.getLogger("modelport.dataplane")

FOLLOW_SECONDS = 1.0
"""How often each server process checks the registry for new versions and alias moves."""

Plan = dict[str, tuple[set[int], dict[str, int]]]
"""Model name -> (versions to serve, aliases), as the registry says."""


class Lifecycle:
    """Loads, warms up, follows and retires the versions this process serves."""

    def __init__(
        self,
        registry: Registry,
        catalog: Catalog,
        executor: Executor,
        models: ModelsSettings | None = None,
        telemetry: Telemetry | None = None,
        in_flight: InFlightTable | None = None,
    ) -> None:
        self._registry = registry
        self._in_flight = in_flight
        """Where the server's processes count each version's requests in flight together."""
        self._catalog = catalog
        self._executor = executor
        self._models = models if models is not None else ModelsSettings()
        self._telemetry: Telemetry = telemetry if telemetry is not None else NoTelemetry()
        self._ready = False
        self._failures: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._selection: dict[str, str] = {}
        """Start-up selection: model name -> pinned version ("" follows the registry)."""
        self._counter = 0
        self._given_up: set[tuple[str, int]] = set()
        """Versions that failed to load or warm up: not retried (push a new version)."""
        self._failed: dict[tuple[str, int], str] = {}
        """(name, version) -> why its last load failed (cleared by a load that succeeds)."""
        self._loading: set[tuple[str, int]] = set()
        """Versions being loaded right now, at start-up, by a load request or by `sync`."""
        self._unloaded: set[tuple[str, int]] = set()
        """Versions an operator unloaded: `sync` leaves them out until a load asks for them."""
        self._requested: set[tuple[str, int]] = set()
        """Versions an operator loaded by name: `sync` keeps them, planned or not, until an
        unload asks for them (the load's own history event changes the registry, so the
        next sync would otherwise retire what was just asked for)."""
        self._retiring: set[asyncio.Future[None]] = set()

    @property
    def registry(self) -> Registry:
        """The registry the served versions come from."""
        return self._registry

    @property
    def catalog(self) -> Catalog:
        """The versions loaded now, and the routes to them."""
        return self._catalog

    @property
    def executor(self) -> Executor:
        """Where blocking work (registry reads, model loads) runs, off the event loop."""
        return self._executor

    @property
    def telemetry(self) -> Telemetry:
        """What loads, batches and requests are reported to."""
        return self._telemetry

    @property
    def ready(self) -> bool:
        """Start-up loading has finished."""
        return self._ready

    @property
    def failures(self) -> Mapping[str, str]:
        """Model name -> why its last load failed (cleared by a load that succeeds)."""
        return self._failures

    def loading(self, name: str, number: int) -> bool:
        """True while the version is being loaded (start-up, a load request, or `sync`)."""
        return not self._ready or (name, number) in self._loading

    def unloaded(self, name: str, number: int) -> bool:
        """True when an operator unloaded the version and nothing has loaded it since."""
        return (name, number) in self._unloaded

    def failure(self, name: str, number: int) -> str | None:
        """Why the version's last load failed, or None (never failed, or loaded since)."""
        return self._failed.get((name, number))

    def preload(self, selection: Sequence[str] = ()) -> None:
        """Load the start-up models synchronously (before any event loop or fork), then be ready.

        `selection` holds NAME or NAME:VERSION items; empty means every model. Each model
        loads its newest version and every version an alias names (NAME:VERSION pins one
        version). A version that fails to load or warm up is logged, recorded in the model's
        history and left out; the rest still load.
        """
        try:
            self._selection = {name: version for name, _, version in map(_split, selection)}
            self._counter = self._registry.change_counter()
            for name, (versions, aliases) in self._plan().items():
                for number in sorted(versions):
                    model = self._load_version(name, number, warm_up=False)
                    if model is not None:
                        self._catalog.add(model)
                self._catalog.set_aliases(name, aliases)
        finally:
            self._ready = True

    async def follow(self, interval: float = FOLLOW_SECONDS) -> None:
        """Follow the registry until cancelled: new versions load, alias moves switch traffic.

        Calls `check` every `interval` seconds.
        """
        while True:
            await asyncio.sleep(interval)
            await self.check()

    async def check(self) -> bool:
        """`sync` if the registry changed since the last sync; True when it did.

        Reads the registry's change counter. A registry that cannot be reached is logged and
        tried again next time; loaded models keep serving.
        """
        try:
            counter = await self._executor.run(self._registry.change_counter)
            if counter == self._counter:
                return False
            await self.sync()
            # Only once synced: a sync that failed is tried again next time.
            self._counter = counter
        except Exception:
            log.warning("cannot read the registry; serving what is loaded", exc_info=True)
            return False
        return True

    async def sync(self) -> None:
        """Bring what is served in line with the registry, one model at a time.

        For each model: load (and warm up) the versions it should serve that are not loaded,
        then switch its routes to the registry's aliases, then retire the versions no longer
        wanted once their in-flight requests are done. Never unload before load: a version
        that fails to load never takes traffic, and what served before keeps serving.
        """
        plan = await self._executor.run(self._plan)
        for name, (versions, aliases) in plan.items():
            loaded = {m.number for m in self._catalog.versions(name)}
            before = self._catalog.get(name)
            for number in sorted(versions - loaded):
                if (name, number) in self._given_up or (name, number) in self._unloaded:
                    continue
                model = await self._executor.run(self._load_version, name, number, True)
                if model is not None:
                    self._catalog.add(model)
            # Routes switch here, between two requests: each is served by one version.
            self._catalog.set_aliases(name, aliases)
            serving = self._catalog.get(name)
            if serving is not None and serving is not before:
                log.info("%s: requests now go to version %d", name, serving.number)
            for number in sorted(loaded - versions):
                if (name, number) in self._requested:
                    continue
                # Kept while it serves the default route (its replacement failed to load).
                if serving is not None and number != serving.number:
                    retired = self._catalog.remove(name, number)
                    task = asyncio.ensure_future(self._retire(retired))
                    self._retiring.add(task)  # held until done, so it is not collected
                    task.add_done_callback(self._retiring.discard)

    async def retired(self) -> None:
        """Return once every version taken out of the routes so far has been closed."""
        await asyncio.gather(*self._retiring)

    def _plan(self) -> Plan:
        """What each selected model should serve, as the registry says now."""
        newest = {mv.name: mv.version for mv in self._registry.latest()}
        names = list(self._selection) if self._selection else sorted(newest)
        plan: Plan = {}
        for name in names:
            try:
                if name not in newest:
                    self._registry.get(name)  # NotFound, with the advice it carries
                aliases = self._registry.aliases(name)
                pinned = self._selection.get(name)
                if pinned:
                    number = _number(name, pinned)
                    plan[name] = ({number}, {a: v for a, v in aliases.items() if v == number})
                else:
                    plan[name] = ({newest[name], *aliases.values()}, aliases)
            except ModelportError as exc:
                self._failures[name] = exc.message
                log.error("cannot serve %s: %s", name, exc.message)
        return plan

    async def _retire(self, model: LoadedModel) -> None:
        """Close a version taken out of the routes once its last request has left."""
        await model.idle()
        await model.batcher.close()
        await self._executor.run(model.runtime.close)
        await self._executor.run(self._event, model.name, "unload", model.number)
        log.info("unloaded %s version %d", model.name, model.number)

    def _load_version(self, name: str, number: int, warm_up: bool) -> LoadedModel | None:
        """Load one version and record the load in its history (blocking).

        None when it failed to load or warm up: that is logged, recorded as load_failed and
        not tried again.
        """
        self._loading.add((name, number))
        try:
            mv = self._registry.get(name, number)
            model = self._build(mv, warm_up)
        except ModelportError as exc:
            log.error("could not load %s:%d: %s", name, number, exc.message)
            self._given_up.add((name, number))
            self._event(name, "load_failed", number, detail={"error": exc.message})
            return None
        finally:
            self._loading.discard((name, number))
        self._event(name, "load", number)
        return model

    def _event(
        self,
        name: str,
        kind: str,
        number: int,
        actor: str = "server",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record what this server did in the model's history; a failure only logs."""
        try:
            self._registry.record_event(
                name,
                kind,
                actor=actor,
                version=number,
                detail={**(detail or {}), "pid": os.getpid()},
            )
        except Exception:
            log.warning("could not record %s of %s:%d in the registry", kind, name, number)

    async def load(self, mv: ModelVersion, actor: str) -> LoadedModel:
        """Serve a registered version unless it is already loaded; `actor` goes to its history."""
        lock = self._locks.setdefault(mv.name, asyncio.Lock())
        async with lock:
            existing = self._catalog.get(mv.name, str(mv.version))
            if existing is not None:
                return existing
            key = (mv.name, mv.version)
            self._loading.add(key)
            try:
                model = await self._executor.run(self._build, mv)
            finally:
                self._loading.discard(key)
            # Asked for by name: the follower may load it again, whatever came before.
            self._unloaded.discard(key)
            self._given_up.discard(key)
            self._requested.add(key)
            self._catalog.add(model)
            await self._executor.run(self._event, mv.name, "load", mv.version, actor)
        return model

    async def unload(self, models: Sequence[LoadedModel], actor: str) -> None:
        """Stop serving `models` at once and close them; `actor` goes to their history."""
        for model in models:
            self._catalog.remove(model.name, model.number)
            self._unloaded.add((model.name, model.number))
            self._requested.discard((model.name, model.number))
            await self._executor.run(model.runtime.close)
            await self._executor.run(self._event, model.name, "unload", model.number, actor)

    def _build(self, mv: ModelVersion, warm_up: bool = False) -> LoadedModel:
        """Load a version's runtime and wrap it for serving; failures are remembered by name.

        The telemetry hears of the load, its time and the model's policy once it succeeded.
        """
        name = mv.name
        started = time.perf_counter()
        try:
            chosen = model_policy(self._models, name, mv.metadata)
            loaded = load_artifact(self._registry, mv, prefer_compiled=chosen.compiled)
            runtime = loaded.runtime
            policy = policy_for(mv.signature, runtime.row_independent, chosen)
        except ModelportError as exc:
            self._failed_to_load(mv, exc.message)
            raise
        except Exception as exc:
            # A third-party runtime may raise anything; the server must stay up.
            log.exception("runtime %r failed to load %s:%d", mv.format, name, mv.version)
            message = (
                f"the {mv.format} runtime failed to load version {mv.version} "
                f"({type(exc).__name__}); the server log has details"
            )
            self._failed_to_load(mv, message)
            raise InternalError(message) from exc
        dispatch = Batched(
            self._executor,
            policy,
            max_queue=chosen.max_queue,
            on_call=partial(self._telemetry.batch, name, mv.version),
            counts=self._in_flight,
        )
        model = LoadedModel(mv, runtime, mv.compiled if loaded.compiled else None, dispatch)
        try:
            if warm_up:
                _warm_up(model)
        except ModelportError as exc:
            self._failed_to_load(mv, exc.message)
            raise
        self._failures.pop(name, None)
        self._failed.pop((name, mv.version), None)
        batching = f"up to {policy.max_batch_size} rows" if policy.enabled else "off"
        log.info(
            "loaded %s version %d (sha256 %s; batching %s)",
            name,
            mv.version,
            mv.digest[:12],
            batching,
        )
        self._telemetry.loaded(mv, time.perf_counter() - started, chosen)
        return model

    def _failed_to_load(self, mv: ModelVersion, message: str) -> None:
        self._failures[mv.name] = message
        self._failed[(mv.name, mv.version)] = message

    async def close(self) -> None:
        """Unload every model."""
        for model in list(self._catalog):
            self._catalog.remove(model.name, model.number)
            model.runtime.close()


def _split(item: str) -> tuple[str, str, str]:
    return item.partition(":")


def _number(name: str, version: str) -> int:
    """The version number a selection names; NotFound if it is not one."""
    number = version_number(version)
    if number is None:
        raise NotFound(f"model {name!r} has no version {version!r}; versions are numbers from 1")
    return number


def _warm_up(model: LoadedModel) -> None:
    """One predict on a sample built from the signature; InternalError if the model fails it."""
    signature = model.version.signature
    first = signature.inputs[0].shape[:1] if signature.inputs else ()
    rows = first[0] if first and first[0] > 0 else 1
    try:
        sample, _ = verification_sample(signature, rows=rows)
    except ModelportError as exc:
        log.info("no warm-up for %s:%d: %s", model.name, model.number, exc.message)
        return
    try:
        model.predict(sample, model.output_names)
    except Exception as exc:
        model.runtime.close()
        detail = exc.message if isinstance(exc, ModelportError) else f"{type(exc).__name__}: {exc}"
        raise InternalError(
            f"version {model.number} failed its warm-up predict on a sample built from its "
            f"signature, so it takes no traffic: {detail[:300]}"
        ) from exc
