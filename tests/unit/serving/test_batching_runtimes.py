"""For every built-in runtime, batched answers equal the runtime's own answer on each request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from modelport.demo import COMPILED_DEMO_MODELS, DEMO_MODELS, build_demo
from modelport.registry.store import Registry
from modelport.runtimes.base import Runtime
from modelport.serving.artifacts import load_artifact
from modelport.serving.batching import Batcher, BatchPolicy
from modelport.serving.executor import Executor

from ...conftest import assert_close_float32

# Greetings the demo's text model knows, and words it answers "unknown" for.
WORDS = ["bonjour", "hello", "hola", "salut", "guten morgen", "danke", "thanks", "gracias", ""]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("batching-demo")
    for _ in build_demo(str(root), created_by="tests"):
        pass
    store = Registry.open(root)
    yield store
    store.close()


@pytest.fixture(scope="module", params=[True, False], ids=["compiled", "original"])
def runtimes(registry: Registry, request: pytest.FixtureRequest) -> Iterator[dict[str, Runtime]]:
    """Each demo model's runtime, from its compiled artifact where it has one, or its original."""
    prefer_compiled: bool = request.param
    loaded = {}
    for mv in registry.latest():
        artifact = load_artifact(registry, mv, prefer_compiled=prefer_compiled)
        assert artifact.compiled == (prefer_compiled and mv.name in COMPILED_DEMO_MODELS)
        loaded[mv.name] = artifact.runtime
    yield loaded
    for runtime in loaded.values():
        runtime.close()


def sample(runtime: Runtime, n: int, seed: int) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    (spec,) = runtime.signature.inputs
    if spec.datatype == "BYTES":
        text = [WORDS[i].encode() for i in rng.integers(0, len(WORDS), n)]
        data = np.empty(n, dtype=object)
        data[:] = text
        return {spec.name: data}
    return {spec.name: rng.normal(3, 2, (n, spec.shape[1])).astype(np.float32)}


@pytest.mark.parametrize("name", [name for name, _ in DEMO_MODELS])
def test_batched_equals_unbatched(runtimes: dict[str, Runtime], name: str) -> None:
    runtime = runtimes[name]
    outputs = runtime.signature.output_names
    calls: list[int] = []

    def predict(inputs: Any, wanted: Any) -> Any:
        calls.append(len(next(iter(inputs.values()))))
        return runtime.predict(inputs, wanted)

    requests = [sample(runtime, n, seed) for seed, n in enumerate([1, 3, 1, 7, 2, 1, 5, 1])]
    executor = Executor(threads=1)
    batcher = Batcher(predict, outputs, executor, BatchPolicy(max_batch_size=64))

    async def main() -> list[Any]:
        return await asyncio.gather(*(batcher.predict(r, outputs) for r in requests))

    try:
        results = asyncio.run(main())
    finally:
        executor.shutdown()
    assert len(calls) < len(requests), calls  # the requests really were combined
    for request, got in zip(requests, results, strict=True):
        own = runtime.predict(request, outputs)
        for out in outputs:
            assert got[out].dtype == own[out].dtype
            if got[out].dtype.kind == "f":
                # BLAS may sum in another order for another batch size. Float32 rule for FP64
                # outputs too: a compiled graph computes them in float32.
                assert_close_float32(got[out], own[out], err_msg=out)
            else:
                np.testing.assert_array_equal(got[out], own[out])
