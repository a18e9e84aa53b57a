"""`models push --reference-data`: CSV and Parquet files profiled and stored with the version."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_iris

from modelport.cli.reference_data import read_reference_data
from modelport.demo import build_greeting_language
from modelport.errors import InvalidInput
from modelport.monitoring.drift import DriftMonitor, ReferenceProfile
from modelport.monitoring.reference_profile import build_profile
from modelport.protocol.signature import TensorSpec
from modelport.registry.store import Registry

from .conftest import fails, ok, run

IRIS_COLUMNS = ["sepal length", "sepal width", "petal length", "petal width"]


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The iris table: four feature columns and the label, `species`."""
    data = load_iris()
    rows = [[*x, y] for x, y in zip(data.data.tolist(), data.target.tolist(), strict=True)]
    path = tmp_path_factory.mktemp("data") / "iris.csv"
    return write_csv(path, [*IRIS_COLUMNS, "species"], rows)


# -- reading files ---------------------------------------------------------------------------


def _table(rows: int) -> tuple[list[str], list[list[Any]], pa.Table]:
    """The same table as CSV rows and as Arrow: a float (some missing), an int, a text column."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=rows).round(6)
    n = rng.integers(0, 50, rows)
    city = rng.choice(["paris", "rome", "oslo", ""], rows)
    missing = rng.random(rows) < 0.05
    csv_rows = [
        ["" if gone else repr(float(v)), int(k), c]
        for v, k, c, gone in zip(x, n, city, missing, strict=True)
    ]
    table = pa.table(
        {
            "x": pa.array(x, mask=missing),
            "n": pa.array(n),
            "city": pa.array([c or None for c in city]).dictionary_encode(),
        }
    )
    return ["x", "n", "city"], csv_rows, table


INPUTS = [
    TensorSpec("x", "FP32", (-1, 1)),
    TensorSpec("n", "INT64", (-1,)),
    TensorSpec("city", "BYTES", (-1,)),
]


@pytest.mark.parametrize(("rows", "max_rows"), [(300, 1000), (70_000, 1000)])
def test_csv_and_parquet_give_the_same_profile(tmp_path: Path, rows: int, max_rows: int) -> None:
    header, csv_rows, table = _table(rows)
    as_csv = read_reference_data(
        write_csv(tmp_path / "data.csv", header, csv_rows), max_rows=max_rows
    )
    parquet = tmp_path / "data.parquet"
    # Small row groups: a sample spans several of them and several read batches.
    pq.write_table(table, parquet, row_group_size=20_000)
    as_parquet = read_reference_data(parquet, max_rows=max_rows)

    assert list(as_csv.columns) == list(as_parquet.columns) == header
    assert as_csv.source_rows == as_parquet.source_rows == rows
    assert {len(c) for c in as_csv.columns.values()} == {min(rows, max_rows)}
    from_csv = build_profile(as_csv.columns, INPUTS, source_rows=as_csv.source_rows)
    from_parquet = build_profile(as_parquet.columns, INPUTS, source_rows=as_parquet.source_rows)
    assert from_csv == from_parquet
    assert (from_csv["rows"], from_csv["source_rows"]) == (min(rows, max_rows), rows)
    city = from_csv["features"][2]
    assert sorted(city["categories"]) == ["", "oslo", "paris", "rome"]


def test_a_sample_is_the_same_every_time(tmp_path: Path) -> None:
    header, csv_rows, _ = _table(5000)
    path = write_csv(tmp_path / "data.csv", header, csv_rows)
    first = read_reference_data(path, max_rows=100)
    again = read_reference_data(path, max_rows=100)
    assert first.columns["x"].tolist() == again.columns["x"].tolist()
    # Spread over the file, not its first rows.
    assert first.columns["x"].tolist() != [row[0] for row in csv_rows[:100]]


def test_the_label_column_is_dropped(iris_csv: Path) -> None:
    data = read_reference_data(iris_csv, label="species")
    assert list(data.columns) == IRIS_COLUMNS
    with pytest.raises(InvalidInput, match="no column 'kind' to drop as the label"):
        read_reference_data(iris_csv, label="kind")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("data.json", b"{}", "give a .csv file"),
        ("data.csv", b"", "is empty; its first line must name the columns"),
        ("data.csv", b"a,b\n", "has a header but no rows"),
        ("data.csv", b"a,b\n1,2\n3\n", "line 3 has 1 fields, the header names 2"),
        ("data.csv", b"a,a\n1,2\n", "twice"),
        ("data.csv", b"a,\n1,2\n", "every column needs a name"),
        ("data.csv", b"a\n\xff\xfe\n", "not a readable UTF-8 CSV"),
        ("data.parquet", b"PAR1 not really", "not a readable Parquet file"),
    ],
)
def test_unreadable_files_are_refused(
    tmp_path: Path, name: str, content: bytes, match: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidInput, match=match) as caught:
        read_reference_data(path)
    assert str(tmp_path) not in caught.value.message


def test_a_parquet_column_of_lists_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"x": [[1.0, 2.0], [3.0]]}), path)
    with pytest.raises(InvalidInput, match="column 'x' holds list"):
        read_reference_data(path)


# -- the command -----------------------------------------------------------------------------


def test_push_with_reference_data_and_show_it(
    tmp_path: Path, iris_file: Path, iris_csv: Path
) -> None:
    registry = str(tmp_path / "registry")
    push = ["models", "push", str(iris_file), "--name", "iris", "--registry", registry]
    # The label column makes five columns for four features: refused, nothing registered.
    fails(run(*push, "--reference-data", str(iris_csv)), "does not fit", "exactly F columns")
    fails(run(*push, "--reference-label", "species"), "--reference-data")
    with Registry.open(registry) as store:
        assert store.models() == []

    out = ok(run(*push, "--reference-data", str(iris_csv), "--reference-label", "species"))
    assert out == "1\n"
    shown = ok(run("models", "show", "iris", "--registry", registry))
    assert "150 rows; 4 features: sepal length, sepal width, petal length, petal width" in shown

    profile = json.loads(ok(run("models", "show", "iris", "--json", "--registry", registry)))[
        "reference_profile"
    ]
    assert [f["name"] for f in profile["features"]] == IRIS_COLUMNS
    assert [f["column"] for f in profile["features"]] == [0, 1, 2, 3]
    listed = json.loads(ok(run("models", "list", "--json", "--registry", registry)))
    assert listed[0]["reference_profile"]["features"][0] == {
        "name": "sepal length",
        "input": "input-0",
        "column": 0,
        "kind": "numeric",
    }

    # The iris rows themselves do not drift from their own profile.
    monitor = DriftMonitor(ReferenceProfile.from_dict(profile), window=150)
    monitor.observe({"input-0": load_iris().data.astype(np.float32)})
    assert all(f["psi"] < 1e-9 and f["ks"] < 1e-6 for f in monitor.report()["features"])


def test_push_a_text_model_with_parquet_reference_data(tmp_path: Path) -> None:
    model, _, _ = build_greeting_language(tmp_path)
    data = tmp_path / "greetings.parquet"
    pq.write_table(pa.table({"text": ["hello", "bonjour", "hello", "hola"]}), data)
    registry = str(tmp_path / "registry")
    ok(run("models", "push", str(model), "--name", "greet", "--registry", registry,
           "--reference-data", str(data)))  # fmt: skip
    with Registry.open(registry) as store:
        profile = store.get("greet").reference_profile
    assert profile is not None
    (feature,) = profile["features"]
    assert (feature["name"], feature["input"], feature["kind"]) == ("text", "text", "categorical")
    assert feature["categories"] == ["hello", "bonjour", "hola"]
    assert feature["shares"] == [0.5, 0.25, 0.25]
    shown = ok(run("models", "show", "greet", "--registry", registry))
    assert "4 rows; 1 features: text" in shown
