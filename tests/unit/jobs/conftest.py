"""Fixtures for the batch-job tests: sklearn's bundled iris rows as Parquet, CSV, JSON lines."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def iris_table() -> pa.Table:
    """The 150 iris rows: the four features, `target`, and a text `id`."""
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    columns = {name: x[:, j] for j, name in enumerate(FEATURES)}
    columns["target"] = y
    columns["id"] = [f"r{i:03d}" for i in range(len(y))]
    return pa.table(columns)


def write(table: pa.Table, path: Path, row_group_size: int | None = None) -> Path:
    """`table` as the file `path` names (.parquet, .csv or .jsonl)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(table, path, row_group_size=row_group_size)
    elif path.suffix == ".csv":
        table.to_pandas().to_csv(path, index=False)
    else:
        table.to_pandas().to_json(path, orient="records", lines=True)
    return path


@pytest.fixture(scope="session")
def iris() -> pa.Table:
    return iris_table()
