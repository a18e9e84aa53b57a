"""The benchmark's model files, trained once per spec and loaded by both servers.

Run with the project venv's Python: the artifacts are pickled by its scikit-learn, and the
MLServer venv is pinned to the same scikit-learn version so both sides load the same bytes.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

HEAVY_FEATURES = 20
"""Inputs of the heavy forest (and so the width of its request rows)."""

# Bumping a spec retrains that model on the next run; the files are reused otherwise.
SPECS: dict[str, dict[str, Any]] = {
    "iris": {"kind": "LogisticRegression", "data": "load_iris", "max_iter": 1000},
    "heavy": {
        "kind": "RandomForestClassifier",
        "data": "make_classification",
        "rows": 20_000,
        "features": HEAVY_FEATURES,
        "trees": 200,
        # Depth-capped so the artifact is tens of MB and a batch-1 predict costs ~10 ms.
        "max_depth": 14,
        "seed": 7,
    },
    "big": {"kind": "MLPRegressor", "inputs": 4, "hidden": 8000, "layers": 2, "seed": 7},
    # The next version of "big": same size, other weights (another digest).
    "big_next": {"kind": "MLPRegressor", "inputs": 4, "hidden": 8000, "layers": 2, "seed": 8},
}


def _iris(spec: dict[str, Any]) -> Any:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=spec["max_iter"]).fit(x, y)


def _heavy(spec: dict[str, Any]) -> Any:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(
        n_samples=spec["rows"],
        n_features=spec["features"],
        n_informative=spec["features"] // 2,
        random_state=spec["seed"],
    )
    model = RandomForestClassifier(
        n_estimators=spec["trees"],
        max_depth=spec["max_depth"],
        random_state=spec["seed"],
        n_jobs=-1,
    ).fit(x, y)
    # Predict on one thread, the way the server's single core will run it.
    model.n_jobs = None
    return model


def _big(spec: dict[str, Any]) -> Any:
    """An MLP whose hidden layers hold ~500 MB of float64 weights, built without training it.

    A tiny network is fitted so that every fitted attribute exists, then its layers are
    replaced by random ones of the wanted width: the memory figure needs size, not skill.
    """
    import numpy as np
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(spec["seed"])
    n_in, width, layers = spec["inputs"], spec["hidden"], spec["layers"]
    model = MLPRegressor(hidden_layer_sizes=(2,) * layers, max_iter=5, random_state=spec["seed"])
    x = rng.standard_normal((32, n_in))
    model.fit(x, x.sum(axis=1))
    sizes = [n_in, *(width,) * layers, 1]
    scale = 1.0 / np.sqrt(width)
    model.coefs_ = [rng.standard_normal((a, b)) * scale for a, b in itertools.pairwise(sizes)]
    model.intercepts_ = [np.zeros(b) for b in sizes[1:]]
    model.hidden_layer_sizes = (width,) * layers
    return model


_BUILDERS = {"iris": _iris, "heavy": _heavy, "big": _big, "big_next": _big}


def build(out_dir: Path, names: list[str]) -> dict[str, Path]:
    """Write `NAME.joblib` for each name into out_dir (reusing files whose spec is unchanged)."""
    import joblib
    import sklearn

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in names:
        path = out_dir / f"{name}.joblib"
        stamp = path.with_suffix(".spec.json")
        wanted = json.dumps({**SPECS[name], "sklearn": sklearn.__version__}, sort_keys=True)
        if not (path.exists() and stamp.exists() and stamp.read_text() == wanted):
            print(f"  training {name} ...", flush=True)
            joblib.dump(_BUILDERS[name](SPECS[name]), path)
            stamp.write_text(wanted)
        paths[name] = path
        print(f"  {name}: {path.stat().st_size / 1e6:.1f} MB", flush=True)
    return paths


def mlserver_folder(root: Path, name: str, artifact: Path) -> Path:
    """A folder MLServer serves with `mlserver start .`: the artifact plus model-settings.json.

    settings.json (ports) is written per start by the runner.
    """
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model.joblib"
    if target.exists() or target.is_symlink():
        target.unlink()
    target.symlink_to(artifact.resolve())
    settings = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }
    (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))
    return folder
