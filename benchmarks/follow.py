"""How long a running server takes to move traffic after `models alias` (registry following).

Usage: python benchmarks/follow.py [--moves N]   (with the project venv's Python)

Builds a registry with two iris versions (the demo's model and a second fit), serves it, then
moves the `production` alias back and forth N times, timing each move from the registry write
to the moment `/v2/models/iris` reports the new version. Each move back also reloads the
version the previous move retired. Prints every time, the median and the maximum.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from servers import HOST, free_port

from modelport.demo import build_iris
from modelport.intake.push import push_artifact
from modelport.registry.store import PRODUCTION, Registry

READY_SECONDS = 60.0
MOVE_SECONDS = 30.0


def second_iris(folder: Path) -> Path:
    """Another iris model (strong regularisation), saved with skops."""
    import numpy as np
    import skops.io
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    path = folder / "iris-c005.skops"
    skops.io.dump(LogisticRegression(C=0.05, max_iter=1000).fit(x.astype(np.float32), y), path)
    return path


def served_version(http: httpx.Client) -> str:
    return str(http.get("/v2/models/iris").json()["parameters"]["modelport.version"])


def wait_until(check: Callable[[], bool], deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            sys.exit(f"follow: {what} did not happen within {deadline:.0f} s")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=10)
    moves = parser.parse_args().moves
    with tempfile.TemporaryDirectory(prefix="follow-") as tmp:
        folder = Path(tmp)
        location = folder / "registry"
        with Registry.open(location) as registry:
            path, fmt, meta = build_iris(folder)
            push_artifact(
                registry, path, name="iris", format=fmt, metadata=meta, created_by="bench"
            )
            push_artifact(registry, second_iris(folder), name="iris", created_by="bench")
            registry.set_alias("iris", PRODUCTION, 1, actor="bench")
        port = free_port()
        argv = [str(Path(sys.executable).parent / "modelport"), "serve", "--registry"]
        argv += [str(location), "--http-port", str(port), "--grpc-port", "0"]
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=10) as http:

                def ready() -> bool:
                    try:
                        return http.get("/v2/health/ready").status_code == 200
                    except httpx.TransportError:
                        return False

                wait_until(ready, READY_SECONDS, "the server start")
                times = []
                for move in range(moves):
                    target = 2 if move % 2 == 0 else 1
                    with Registry.open(location) as registry:
                        start = time.monotonic()
                        registry.set_alias("iris", PRODUCTION, target, actor="bench")
                    wait_until(
                        lambda t=target: served_version(http) == str(t),
                        MOVE_SECONDS,
                        f"the move to version {target}",
                    )
                    times.append(time.monotonic() - start)
        finally:
            server.terminate()
            server.wait(timeout=30)
    shown = ", ".join(f"{t:.2f}" for t in times)
    print(f"alias move -> traffic switched, seconds: {shown}")
    print(f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over {moves} moves")


if __name__ == "__main__":
    main()
