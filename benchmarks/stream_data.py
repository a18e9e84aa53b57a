"""The stream benchmark's messages, and the check of the answers a run left in its sink.

Messages are iris-like rows (batch_data.iris_chunks, seeded), rounded to 3 decimals as a
record would be written, keyed by their index (`b"0"`, `b"1"`, ...):

- json: the record itself, `{"sepal_length": 5.123, "sepal_width": ..., "petal_length": ...,
  "petal_width": ...}` (what `modelport stream --format json` reads);
- oip: an OIP inference request of one row, as MLServer's Kafka server reads it and
  `--format oip` does: `{"id": "I", "inputs": [{"name": "input-0", "shape": [1, 4],
  "datatype": "FP32", "data": [...]}], "outputs": [{"name": "predict"}, {"name":
  "predict_proba"}]}` (both outputs, so both servers compute class and probabilities), with
  the header `mlserver-model: iris` that MLServer needs to route it (modelport ignores it).

An answer is matched to its input by its key (MLServer's Kafka server answers with the
request's id as the key, which it takes from the input's key). The rate of a run is taken
from the sink's own clock: answers divided by the time from the first answer's timestamp to
the last one's (a Redis entry id's milliseconds; a Kafka record's timestamp, which the
producer sets when the answer is sent), so a consumer's start-up and a group's join are not
counted, and neither is the time the runner takes to notice the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from batch_data import IRIS_FEATURES, iris_chunks

MODEL_HEADER = {"mlserver-model": b"iris"}
"""The header MLServer's Kafka server routes a message by (mlserver/kafka/handlers.py)."""
OUTPUTS = [{"name": "predict"}, {"name": "predict_proba"}]


@dataclass(frozen=True)
class Message:
    """One message to produce: value, key, headers."""

    value: bytes
    key: bytes
    headers: dict[str, bytes]


@dataclass(frozen=True)
class Answer:
    """One entry or record found in a sink: its key, value and timestamp (ms)."""

    key: bytes | None
    value: bytes
    ms: int


def iris_rows(count: int) -> np.ndarray[Any, Any]:
    """`count` iris-like rows (seeded), rounded to 3 decimals, float32 as the model reads them."""
    chunks = [
        np.column_stack([t[name].to_numpy() for name in IRIS_FEATURES]) for t in iris_chunks(count)
    ]
    rows = np.concatenate(chunks) if chunks else np.zeros((0, 4), dtype=np.float32)
    return np.round(rows.astype(np.float64), 3).astype(np.float32)


def json_messages(rows: np.ndarray[Any, Any]) -> list[Message]:
    """One JSON record per row, keyed by its index."""
    out = []
    for i, row in enumerate(rows.tolist()):
        record = {name: round(v, 3) for name, v in zip(IRIS_FEATURES, row, strict=True)}
        out.append(Message(orjson.dumps(record), b"%d" % i, {}))
    return out


def oip_messages(rows: np.ndarray[Any, Any]) -> list[Message]:
    """One OIP request per row, keyed by its index, with MLServer's routing header."""
    out = []
    for i, row in enumerate(rows.tolist()):
        data = [round(v, 3) for v in row]
        request = {
            "id": str(i),
            "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": data}],
            "outputs": OUTPUTS,
        }
        out.append(Message(orjson.dumps(request), b"%d" % i, dict(MODEL_HEADER)))
    return out


def expected_labels(iris_artifact: Path, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The demo iris's classes for `rows` (its skops file, loaded with scikit-learn)."""
    import skops.io

    trusted = skops.io.get_untrusted_types(file=iris_artifact)
    model = skops.io.load(iris_artifact, trusted=trusted)
    labels: np.ndarray[Any, Any] = model.predict(rows)
    return labels


def answer_label(value: bytes, kind: str) -> int | None:
    """The class an answer gives: a JSON answer's `predict`, an OIP response's `predict`."""
    try:
        body = orjson.loads(value)
        if kind == "json":
            return int(body["predict"])
        output = next(o for o in body["outputs"] if o["name"] == "predict")
        return int(output["data"][0])
    except (orjson.JSONDecodeError, KeyError, StopIteration, TypeError, ValueError, IndexError):
        return None


def check(
    answers: Iterable[Answer],
    count: int,
    kind: str,
    expected: np.ndarray[Any, Any] | None = None,
) -> dict[str, Any]:
    """What a sink holds against the `count` messages given: answers, missing, duplicated,
    foreign (keys that are no input's index: a warm-up probe), labels equal to the model's
    (when `expected` is given and the answers are `kind` json or oip), and the rate.
    """
    seen = np.zeros(count, dtype=np.int64)
    foreign = agree = 0
    first = last = None
    for answer in answers:
        index = _index(answer.key)
        if index is None or not 0 <= index < count:
            foreign += 1
            continue
        seen[index] += 1
        first = answer.ms if first is None else min(first, answer.ms)
        last = answer.ms if last is None else max(last, answer.ms)
        if expected is not None and seen[index] == 1:
            agree += int(answer_label(answer.value, kind) == expected[index])
    answered = int(seen.sum())
    span = (last - first) / 1000 if first is not None and last is not None else 0.0
    return {
        "answers": answered,
        "missing": int(np.sum(seen == 0)),
        "duplicated": int(np.sum(seen > 1)),
        "foreign": foreign,
        "labels_equal": agree if expected is not None else None,
        "span_s": span,
        "messages_per_s": answered / span if span > 0 else None,
    }


def _index(key: bytes | None) -> int | None:
    if key is None or not key.isdigit():
        return None
    return int(key)
