"""What `make bench` measures: loads (request body x connections) and the servers taking them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from models import HEAVY_FEATURES

MLSERVER = "MLServer 1.7.1"
MODELPORT = "modelport"
NO_BATCHING = "modelport --no-batching"
COMPILED = "modelport compiled"
NO_COMPILED = "modelport compiled --no-compiled"
GRPC_CEILING = "bare grpc.aio, fixed response"
OBS_ON = "modelport, metrics + inference log"
OBS_OFF = "modelport, metrics + inference log off"
OBS_ALL = "modelport, all on (+ JSON access log)"
COMPILED_OFF = "modelport compiled, metrics + inference log off"
OBS_ON_FLAGS = ("--metrics", "--no-access-log")
"""What the issue's cost target is about: metrics and every inference in the inference log
(the registry's SQLite file); the access log off, as in the baseline."""
OBS_OFF_FLAGS = ("--no-metrics", "--no-access-log", "--inference-log", "off")
OBS_ALL_FLAGS = ("--metrics", "--access-log", "--log-format", "json")
"""Everything on, as by default: also one JSON access record per request on stderr (which the
runner writes to the server's log file)."""


@dataclass(frozen=True)
class Load:
    """One load run: `rows` rows per request to model `model`, `connections` at once.

    REST loads are wrk runs (`connections` connections); gRPC loads are h2load runs, where
    `connections` counts concurrent streams (16 per HTTP/2 connection).
    """

    model: str
    rows: int
    connections: int
    grpc: bool = False
    tag: str = ""
    """Appended to the name, so the same load in another comparison gets its own rows."""

    @property
    def name(self) -> str:
        """The scenario's row label, e.g. "iris b1 c64", "iris b1 grpc s64", "iris b1 c64 obs"."""
        if self.grpc:
            label = f"{self.model} b{self.rows} grpc s{self.connections}"
        else:
            label = f"{self.model} b{self.rows} c{self.connections}"
        return f"{label} {self.tag}" if self.tag else label


@dataclass(frozen=True)
class Variant:
    """One way of serving a model group: which server, which registered name, which flags."""

    label: str
    server: str  # "mlserver", "modelport" or "grpc-ceiling"
    served_name: str = ""  # modelport's registered name; MLServer uses the group's name
    flags: tuple[str, ...] = field(default_factory=tuple)
    grpc_only: bool = False
    """Takes only a group's gRPC loads (the ceiling has no REST side; MLServer's REST is
    measured in the iris group)."""

    def takes(self, load: Load) -> bool:
        """Whether this variant runs `load`."""
        return load.grpc or not self.grpc_only


@dataclass(frozen=True)
class Group:
    """Loads that one server start takes in turn, and the variants that take them."""

    model: str
    loads: tuple[Load, ...]
    variants: tuple[Variant, ...]
    key: str = ""
    """What `--only` selects it by; default: the model."""
    alternate: bool = False
    """Reverse the variants' order every other round, so neither always runs first."""

    @property
    def selector(self) -> str:
        """The `--only` value that runs this group."""
        return self.key or self.model


IRIS_LOADS = (Load("iris", 1, 1), Load("iris", 1, 64), Load("iris", 64, 64))
HEAVY_LOADS = (Load("heavy", 1, 64),)
QUICK_IRIS_LOADS = (Load("iris", 1, 64),)
BESIDE_GRPC = "beside grpc"
"""The tag of the REST loads the gRPC group runs on the same server start as its gRPC load."""
GRPC_LOADS = (Load("iris", 1, 64, grpc=True), Load("iris", 1, 64, tag=BESIDE_GRPC))
GRPC_HEAVY_LOADS = (Load("heavy", 1, 64, grpc=True), Load("heavy", 1, 64, tag=BESIDE_GRPC))
OBS_LOADS = (Load("iris", 1, 64, tag="obs"),)
GROUP_KEYS = ("iris", "heavy", "grpc", "obs", "overload", "soak", "memory", "signal")
"""The values `--only` takes."""
STANDALONE = ("overload", "soak", "memory", "signal")
"""Groups with a procedure of their own (not loads taken in turn by variants)."""

OVERLOAD = "modelport --max-queue 64"
OVERLOAD_FLAGS = ("--max-queue", "64")
OVERLOAD_CLOSED = Load("iris", 1, 64, tag="closed loop")
"""The closed-loop wrk run whose req/s is taken as the sustainable rate."""
OVERLOAD_FACTORS = (0.5, 2.0, 0.5)
"""The open-loop phases, as multiples of the sustainable rate, DURATION seconds each."""
OVERLOAD_CONNECTIONS = 256
"""Keep-alive connections of the open-loop load: more than max_queue, so the server, not the
client, decides what waits; a request finding them all busy waits at the client (counted)."""

SOAK = "modelport, defaults (metrics, inference log, access log on)"
SOAK_LOAD = Load("iris", 1, 16, tag="soak")
SOAK_SECONDS = 600
"""Default soak length; SOAK_SECONDS= shortens it (a check, not a verdict)."""
SOAK_WARMUP = 60
"""Seconds of the soak counted as warm-up: growth is measured from the RSS sampled then."""
SOAK_SAMPLE = 10
"""Seconds between RSS samples."""


def groups(
    quick: bool,
    compiled: set[str],
    no_batching: bool,
    no_compiled: bool,
    grpc: bool = False,
    obs: bool = False,
) -> list[Group]:
    """The groups to run; `compiled` names the models that have an ONNX-compiled version.

    `grpc` adds the gRPC group (modelport serves gRPC and h2load is there); `obs` the
    observability-cost group (this modelport has the observability flags).
    """
    iris = [Variant(MLSERVER, "mlserver"), Variant(MODELPORT, "modelport", "iris")]
    if "iris" in compiled:
        iris.append(Variant(COMPILED, "modelport", "iris_onnx"))
    heavy = [Variant(MLSERVER, "mlserver"), Variant(MODELPORT, "modelport", "heavy")]
    if no_batching:
        heavy.append(Variant(NO_BATCHING, "modelport", "heavy", ("--no-batching",)))
    if "heavy" in compiled:
        heavy.append(Variant(COMPILED, "modelport", "heavy_onnx"))
        if no_compiled and not quick:
            heavy.append(Variant(NO_COMPILED, "modelport", "heavy_onnx", ("--no-compiled",)))
    plan = [
        Group("iris", QUICK_IRIS_LOADS if quick else IRIS_LOADS, tuple(iris)),
        Group("heavy", HEAVY_LOADS, tuple(heavy)),
    ]
    if grpc:
        # gRPC against REST on the same server start (wrk c64 right after h2load s64), like
        # with like: the ceiling logs nothing, so modelport runs with metrics, the access log
        # and the inference log off; then with metrics and the inference log on, and with its
        # defaults (the JSON access log too), for what they cost.
        # MLServer (its defaults) and the ceiling take only the gRPC load.
        variants = [
            Variant(MLSERVER, "mlserver", grpc_only=True),
            Variant(OBS_OFF, "modelport", "iris", OBS_OFF_FLAGS),
        ]
        if "iris" in compiled:
            variants.append(Variant(COMPILED_OFF, "modelport", "iris_onnx", OBS_OFF_FLAGS))
        variants += [
            Variant(OBS_ON, "modelport", "iris", OBS_ON_FLAGS),
            Variant(MODELPORT, "modelport", "iris"),
            Variant(GRPC_CEILING, "grpc-ceiling", grpc_only=True),
        ]
        plan.append(Group("iris", GRPC_LOADS, tuple(variants), key="grpc", alternate=True))
        # Batching on the heavy model over gRPC (defaults, as in the heavy group), REST beside.
        batching = [Variant(MODELPORT, "modelport", "heavy")]
        if no_batching:
            batching.append(Variant(NO_BATCHING, "modelport", "heavy", ("--no-batching",)))
        plan.append(Group("heavy", GRPC_HEAVY_LOADS, tuple(batching), key="grpc", alternate=True))
    if obs:
        # The cost of metrics and the inference log (and, for the record, the access log too):
        # the same server with and without.
        on = Variant(OBS_ON, "modelport", "iris", OBS_ON_FLAGS)
        off = Variant(OBS_OFF, "modelport", "iris", OBS_OFF_FLAGS)
        every = Variant(OBS_ALL, "modelport", "iris", OBS_ALL_FLAGS)
        plan.append(Group("iris", OBS_LOADS, (on, off, every), key="obs", alternate=True))
    return plan


def _rows(model: str, n: int) -> list[list[float]]:
    if model == "iris":
        # Real iris measurements, cycled to the wanted count.
        base = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
        return [base[i % len(base)] for i in range(n)]
    if model == "heavy":
        return [
            [round(((i * 7 + j * 13) % 29) / 7.0 - 2.0, 3) for j in range(HEAVY_FEATURES)]
            for i in range(n)
        ]
    if model == "big":
        return [[0.5, -1.0, 0.25, 2.0] for _ in range(n)]
    raise ValueError(f"no request rows for model {model!r}")


def request_rows(model: str, n: int) -> list[list[float]]:
    """The request rows of `model`, n of them (the same for REST and gRPC bodies)."""
    return _rows(model, n)


def body(model: str, rows: int) -> bytes:
    """An OIP JSON request: input `input-0` FP32 [rows, features], asking only for `predict`.

    Naming the output makes both servers compute the same thing (MLServer's default too).
    """
    data = _rows(model, rows)
    request = {
        "inputs": [
            {
                "name": "input-0",
                "datatype": "FP32",
                "shape": [rows, len(data[0])],
                "data": [x for row in data for x in row],
            }
        ],
        "outputs": [{"name": "predict"}],
    }
    return json.dumps(request).encode()
