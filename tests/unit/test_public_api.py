"""The public API of `modelport`: exactly the names in `__all__`, and importing it does nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import modelport

PUBLIC = {"Model", "__version__", "load"}

HEAVY = (
    "sklearn", "numpy", "onnxruntime", "xgboost", "lightgbm", "torch", "mlflow", "pyarrow",
    "sqlalchemy", "psycopg", "grpc", "uvicorn", "starlette", "opentelemetry", "skops",
    "cloudpickle", "httpx", "click", "rich",
)  # fmt: skip
"""Libraries that `import modelport` must leave unimported (it imports only its version)."""


def test_all_is_the_public_api() -> None:
    assert set(modelport.__all__) == PUBLIC
    assert len(modelport.__all__) == len(PUBLIC)


def test_every_public_name_is_importable() -> None:
    for name in modelport.__all__:
        assert getattr(modelport, name) is not None, name
    from modelport import Model, __version__, load

    assert callable(load)
    assert isinstance(Model, type)
    assert isinstance(__version__, str)
    assert __version__


def test_importing_modelport_loads_nothing_heavy_and_starts_no_thread() -> None:
    # A fresh interpreter: this one has imported everything already.
    probe = textwrap.dedent(
        f"""
        import json, sys, threading
        before = set(sys.modules)
        import modelport
        new = set(sys.modules) - before
        heavy = sorted(m for m in new if m.split(".")[0] in {HEAVY!r})
        ours = sorted(m for m in new if m.startswith("modelport."))
        print(json.dumps({{"heavy": heavy, "ours": ours, "threads": threading.active_count()}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == {
        "heavy": [],
        "ours": ["modelport._version"],
        "threads": 1,
    }, done.stderr
