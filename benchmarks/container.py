"""The container image's size and start-to-ready, beside the same server started on the host.

Usage (after `make image`; with the project venv):
  python benchmarks/container.py [--engine podman] [--image modelport:0.1.0] [--repeats 5]

Start-to-ready is the wall time from launching the command (`ENGINE run` of the image's own CMD
with the demo registry on its volume, or `modelport serve` on the host with the same arguments)
to the first 200 from /v2/health/ready; both are pinned to CPU 0 and run in turn, `--repeats`
times each. Prints a markdown table and one `CONTAINER {...}` JSON line; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELPORT = Path(sys.executable).parent / "modelport"
POLL = 0.02
"""Seconds between readiness polls."""
TIMEOUT = 120.0


def engine_command(engine: str) -> list[str]:
    """The engine with the flags `make image` gives podman on these kernels."""
    if Path(engine).name == "podman":
        return [engine, "--cgroup-manager=cgroupfs", "--runtime", "runc"]
    return [engine]


def run_flags() -> list[str]:
    hard = subprocess.run(
        ["sh", "-c", "ulimit -Hn"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return ["--network", "host", "--ulimit", f"nofile={hard}:{hard}", "--ulimit", "nproc=4096:4096"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def time_to_ready(argv: list[str], port: int, stop: list[str] | None) -> float:
    """Launch argv, poll readiness, stop it (SIGTERM, or the `stop` command); the seconds."""
    started = time.perf_counter()
    process = subprocess.Popen(
        ["taskset", "-c", "0", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while not ready(port):
            if process.poll() is not None:
                raise SystemExit(f"exited with {process.returncode} before ready: {argv}")
            if time.perf_counter() - started > TIMEOUT:
                raise SystemExit(f"not ready after {TIMEOUT:.0f} s: {argv}")
            time.sleep(POLL)
        return time.perf_counter() - started
    finally:
        if stop:
            subprocess.run(stop, capture_output=True, check=False)
        else:
            process.terminate()
        process.wait(timeout=60)


def image_size_mb(engine: list[str], image: str) -> float:
    out = subprocess.run(
        [*engine, "image", "inspect", image], capture_output=True, text=True, check=True
    ).stdout
    [info] = json.loads(out)
    return float(info["Size"]) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default=shutil.which("podman") or "docker")
    parser.add_argument("--image", default="modelport:0.1.0")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    engine = engine_command(args.engine)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        subprocess.run(
            [str(MODELPORT), "demo", "--registry", str(data / "registry")],
            check=True,
            capture_output=True,
        )
        subprocess.run(["chown", "-R", "10001:10001", str(data)], check=True)
        out = subprocess.run(
            [*engine, "image", "inspect", args.image], capture_output=True, text=True, check=True
        ).stdout
        command = list(json.loads(out)[0]["Config"]["Cmd"])
        times: dict[str, list[float]] = {"container": [], "host": []}
        for i in range(args.repeats):
            ports = {"--http-port": free_port(), "--grpc-port": free_port()}
            ports["--metrics-port"] = free_port()
            argv = list(command)
            for flag, port in ports.items():
                argv[argv.index(flag) + 1] = str(port)
            http = ports["--http-port"]
            name = f"modelport-start-{i}"
            container = [
                *engine, "run", "--rm", "--name", name, *run_flags(), "--read-only",
                "--tmpfs", "/tmp", "-v", f"{data}:/var/lib/modelport", args.image, *argv,
            ]  # fmt: skip
            times["container"].append(
                time_to_ready(container, http, [*engine, "stop", "-t", "30", name])
            )
            host = [str(MODELPORT), *argv]
            host[host.index("--registry") + 1] = str(data / "registry")
            times["host"].append(time_to_ready(host, http, None))
            print(
                f"start {i + 1}/{args.repeats}: container {times['container'][-1]:.2f} s, "
                f"host {times['host'][-1]:.2f} s",
                flush=True,
            )
    result: dict[str, Any] = {
        "image": args.image,
        "engine": Path(args.engine).name,
        "size_mb": round(image_size_mb(engine, args.image), 1),
        "start_to_ready_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
    }
    print(f"\n| what | median | runs |\n|---|---|---|\n| image size ({args.image}) | "
          f"{result['size_mb']:.0f} MB | |")  # fmt: skip
    for key, label in (("container", "start-to-ready, container"), ("host", "same, on the host")):
        runs = ", ".join(f"{t:.2f}" for t in times[key])
        print(f"| {label} | {result['median_s'][key]:.2f} s | {runs} |")
    print("CONTAINER " + json.dumps(result))


if __name__ == "__main__":
    main()
