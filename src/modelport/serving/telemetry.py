"""What the serving core reports about its work, as a small contract the server fills in.

The core never imports a metrics, logging or tracing library: it calls a `Telemetry` handed to
it. `NoTelemetry` does nothing, so a dataplane built without one (the embedding API, unit
tests) pays nothing. The real one lives in `modelport.observability`.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from modelport.model_policy import ModelPolicy
from modelport.registry.manifest import ModelVersion
from modelport.serving.endpoint import Endpoint

Arrays = dict[str, np.ndarray[Any, Any]]


def new_request_id() -> str:
    """A fresh request id: 32 hex digits, time-ordered (nanoseconds, then 64 random bits).

    Time order keeps the inference log's request-id index appending instead of splitting
    pages all over (a third cheaper to write than random ids). An id names a request, it
    guards nothing, so the random part need not be cryptographic (and costs no system call).
    """
    return f"{time.time_ns():016x}{random.getrandbits(64):016x}"


@dataclass(slots=True)
class Timing:
    """When an inference queued, its batch left the queue, its model call started and ended.

    Times are `time.perf_counter()` seconds; 0 means "did not happen".
    """

    queued: float = 0.0
    batch_started: float = 0.0
    predict_started: float = 0.0
    predict_ended: float = 0.0
    rows: int = 0
    """Rows in the model call that answered it (its batch)."""


@dataclass(slots=True)
class Call:
    """One request as it goes through a transport and the dataplane.

    The transport creates it (protocol, request id, caller, start time); the dataplane fills
    in the model, version and the validated inputs and outputs of an inference; the
    transport hands it back to `Telemetry.finished` with the status it answered.
    """

    protocol: str
    """"rest" or "grpc"."""
    request_id: str
    caller: str = ""
    """Who asked: the client address (and, with authentication, the key's name)."""
    endpoint: Endpoint = Endpoint.UNKNOWN
    """What was asked, e.g. infer, metadata, health."""
    started: float = field(default_factory=time.perf_counter)
    at: float = field(default_factory=time.time)
    """Arrival, as Unix time (for records)."""
    model: str = ""
    version: int | None = None
    digest: str = ""
    inputs: Arrays | None = None
    outputs: Arrays | None = None
    error: str = ""
    """The message a failed request was answered with."""
    kind: str = "ok"
    """"ok", or the ErrorKind value of a failure."""
    timing: Timing | None = None
    """Filled in by the batcher when the telemetry traces (`Telemetry.traces`)."""
    time_left: float | None = None
    """Seconds the client gave the request (a gRPC deadline) at arrival; None: no deadline."""


@dataclass(slots=True)
class Answered:
    """Requests answered by one stacked inference (the messages of a stream consumer): what
    they share once, each one's request id and caller, and the stacked tensors, of which each
    request holds its `rows` (one row each when None)."""

    protocol: str
    model: str
    version: int
    digest: str
    started: float
    """`time.perf_counter()` when the inference began."""
    at: float
    """Unix time of the same moment."""
    request_ids: list[str]
    callers: list[str]
    inputs: Arrays
    outputs: Arrays
    rows: list[int] | None = None
    """Rows of each request; None: one each, or all of them when there is one request (of
    whatever shape)."""

    def spans(self) -> list[slice]:
        """Each request's part of the tensors' first dimension."""
        if self.rows is None and len(self.request_ids) == 1:
            return [slice(None)]
        counts = self.rows if self.rows is not None else [1] * len(self.request_ids)
        ends = list(itertools.accumulate(counts))
        return [slice(end - count, end) for count, end in zip(counts, ends, strict=True)]

    def subset(self, kept: list[int]) -> Answered:
        """Only the requests numbered `kept` (ascending)."""
        if len(kept) == len(self.request_ids):
            return self
        spans = self.spans()  # several requests: each span is a range of rows
        taken = [np.arange(spans[i].start, spans[i].stop) for i in kept]
        rows = np.concatenate(taken)
        return dataclasses.replace(
            self,
            request_ids=[self.request_ids[i] for i in kept],
            callers=[self.callers[i] for i in kept],
            inputs={name: a[rows] for name, a in self.inputs.items()},
            outputs={name: a[rows] for name, a in self.outputs.items()},
            rows=[len(t) for t in taken],
        )

    def calls(self) -> list[Call]:
        """Each request as an inference `Call` of its own (for the access log and traces)."""
        return [
            Call(
                self.protocol,
                request_id,
                caller=caller,
                endpoint=Endpoint.INFER,
                started=self.started,
                at=self.at,
                model=self.model,
                version=self.version,
                digest=self.digest,
                inputs=_part(self.inputs, span),
                outputs=_part(self.outputs, span),
            )
            for request_id, caller, span in zip(
                self.request_ids, self.callers, self.spans(), strict=True
            )
        ]


def _part(arrays: Arrays, span: slice) -> Arrays:
    """`span` of each of `arrays` (whole, of whatever shape, for `slice(None)`)."""
    if span == slice(None):
        return arrays
    return {name: a[span] for name, a in arrays.items()}


class Telemetry(Protocol):
    """Hooks the serving core and the transports call; each must be cheap and never raise.

    They only write: what the server can be asked about what it recorded (the metrics page,
    drift, feedback scores) is `serving.reports.Reports`, asked through the dataplane.
    """

    @property
    def traces(self) -> bool:
        """Whether inferences should carry a `Timing` for trace spans."""

    def admit(self, model: str) -> None:
        """Raise Overloaded when the server must shed this inference (inference log full)."""

    def finished(self, call: Call, code: str) -> None:
        """A request was answered with `code` (HTTP status or gRPC status name)."""

    def batch(self, model: str, version: int, rows: int, queued: int) -> None:
        """One runtime call of `rows` rows ran; `queued` requests were waiting behind it."""

    def loaded(self, version: ModelVersion, seconds: float, policy: ModelPolicy) -> None:
        """A version finished loading (and warming up) in `seconds`, served by `policy`."""


class NoTelemetry:
    """Telemetry that records nothing."""

    traces = False

    def admit(self, model: str) -> None:
        """Never sheds."""

    def finished(self, call: Call, code: str) -> None:
        """Ignores the call."""

    def batch(self, model: str, version: int, rows: int, queued: int) -> None:
        """Ignores the batch."""

    def loaded(self, version: ModelVersion, seconds: float, policy: ModelPolicy) -> None:
        """Ignores the load."""
