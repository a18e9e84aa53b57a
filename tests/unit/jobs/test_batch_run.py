"""`modelport.batch.run` in-process, on the demo iris model: outputs, keys, bad rows, limits,
refusals and resume."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import modelport
from modelport import batch
from modelport.errors import InvalidInput, NotFound
from modelport.registry.store import Registry

from ...conftest import assert_close_float32
from .conftest import FEATURES, write

OUTPUTS = ["predict", "predict_proba_0", "predict_proba_1", "predict_proba_2"]
PROVENANCE = ["_model", "_version", "_sha256", "_job_id"]


@pytest.fixture(scope="module")
def registry(demo_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A copy of the demo registry (jobs write history events into it)."""
    copy = tmp_path_factory.mktemp("batch") / "registry"
    shutil.copytree(demo_registry, copy)
    return str(copy)


@pytest.fixture(scope="module")
def expected(registry: str, iris: pa.Table) -> pa.Table:
    """What the iris model answers for the 150 rows, through the embedding API."""
    model = modelport.load("iris", registry=registry)
    try:
        return model.predict_table(iris)
    finally:
        model.close()


def run(registry: str, inputs: list[Path | str], out: Path, **options: Any) -> batch.JobSummary:
    return batch.run("iris", [str(p) for p in inputs], str(out), registry=registry, **options)


def parts(out: Path) -> pa.Table:
    """Every committed part, in order, as one table."""
    manifest = json.loads((out / "_manifest.json").read_text())
    tables = [pq.read_table(out / p["part"]["file"]) for p in manifest["parts"]]
    return pa.concat_tables(tables)


def errors(out: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for f in sorted((out / "_errors").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def assert_predictions(table: pa.Table, expected: pa.Table) -> None:
    assert table.column("predict").to_pylist() == expected.column("predict").to_pylist()
    for name in OUTPUTS[1:]:
        assert_close_float32(table.column(name).to_numpy(), expected.column(name).to_numpy())


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_each_format_scores_every_row_in_order_with_provenance(
    registry: str, expected: pa.Table, iris: pa.Table, tmp_path: Path, suffix: str
) -> None:
    source = write(iris, tmp_path / f"iris{suffix}")
    summary = run(registry, [source], tmp_path / "out")
    assert summary.ok
    table = parts(tmp_path / "out")
    assert table.column_names == ["_file", "_row", *OUTPUTS, *PROVENANCE]
    assert set(table.column("_file").to_pylist()) == {str(source)}
    assert table.column("_row").to_pylist() == list(range(150))
    assert_predictions(table, expected)
    with Registry.open(registry) as store:
        mv = store.resolve("iris")
    assert set(table.column("_model").to_pylist()) == {"iris"}
    assert set(table.column("_version").to_pylist()) == {mv.version}
    assert set(table.column("_sha256").to_pylist()) == {mv.digest}
    assert set(table.column("_job_id").to_pylist()) == {summary.job_id}
    data = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert data == summary.data
    assert (data["rows_in"], data["rows_out"], data["error_rows"]) == (150, 150, 0)
    assert data["model"]["digest"] == mv.digest
    assert data["model"]["compiled"] is True
    assert data["status"] == "succeeded"
    assert data["rows_per_s"] > 0


def test_row_groups_are_parts_and_directories_and_globs_expand(
    registry: str, expected: pa.Table, iris: pa.Table, tmp_path: Path
) -> None:
    write(iris, tmp_path / "in" / "a.parquet", row_group_size=40)
    write(iris, tmp_path / "in" / "b.csv")
    summary = run(registry, [tmp_path / "in", tmp_path / "in" / "*.csv"], tmp_path / "out")
    assert summary.data["partitions"] == 5  # four row groups and the CSV file, once
    table = parts(tmp_path / "out")
    assert table.column("_row").to_pylist() == list(range(150)) * 2
    assert_predictions(table.slice(0, 150), expected)
    assert_predictions(table.slice(150), expected)


def test_id_column_passthrough_and_lists(
    registry: str, expected: pa.Table, iris: pa.Table, tmp_path: Path
) -> None:
    source = write(iris, tmp_path / "iris.parquet")
    run(registry, [source], tmp_path / "a", id_column="id", passthrough=["target"])
    table = parts(tmp_path / "a")
    assert table.column_names == ["id", "target", *OUTPUTS, *PROVENANCE]
    assert table.column("id").to_pylist() == iris.column("id").to_pylist()
    run(registry, [source], tmp_path / "b", passthrough="all", outputs_as="lists")
    table = parts(tmp_path / "b")
    assert table.column_names[:8] == ["_file", "_row", *FEATURES, "target", "id"]
    assert table.column("predict_proba").type == pa.list_(pa.float32(), 3)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_other_output_formats(registry: str, iris: pa.Table, tmp_path: Path, fmt: Any) -> None:
    source = write(iris, tmp_path / "iris.parquet")
    run(registry, [source], tmp_path / "out", output_format=fmt)
    path = tmp_path / "out" / f"part-00000.{fmt}"
    if fmt == "csv":
        rows = pcsv.read_csv(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 150
    assert rows[0]["_row"] == 0
    assert rows[0]["_model"] == "iris"


def bad_iris(iris: pa.Table, bad: dict[int, Any]) -> pa.Table:
    """iris with text cells, whose `sepal_length` at each of `bad`'s rows is its value."""
    cells = [str(v) for v in iris.column("sepal_length").to_pylist()]
    for row, value in bad.items():
        cells[row] = value
    return iris.set_column(0, "sepal_length", pa.array(cells))


def test_bad_rows_go_to_the_error_file_and_the_good_rows_stay_in_order(
    registry: str, expected: pa.Table, iris: pa.Table, tmp_path: Path
) -> None:
    source = write(bad_iris(iris, {3: "x", 77: "nan", 149: ""}), tmp_path / "bad.csv")
    summary = run(registry, [source], tmp_path / "out", max_errors=3, id_column="id")
    assert summary.ok
    table = parts(tmp_path / "out")
    good = [i for i in range(150) if i not in (3, 77, 149)]
    assert table.column("id").to_pylist() == [f"r{i:03d}" for i in good]
    assert_predictions(table, expected.take(good))
    found = errors(tmp_path / "out")
    assert [(e["id"], e["_row"], e["stage"]) for e in found] == [
        ("r003", 3, "validate"),
        ("r077", 77, "predict"),  # NaN converts, and the model refuses it
        ("r149", 149, "validate"),
    ]
    assert all(e["_file"] == str(source) and e["error"] for e in found)
    assert "'x'" in found[0]["error"]
    assert "NaN" in found[1]["error"]
    assert (summary.data["rows_in"], summary.data["rows_out"]) == (150, 147)
    assert summary.data["error_rows"] == 3
    # The directory reads as one table: dataset readers skip _errors/ and the _*.json files.
    assert pq.read_table(tmp_path / "out").equals(table)


def test_rows_around_a_refused_one_in_a_numeric_column_keep_their_own_values(
    registry: str, expected: pa.Table, iris: pa.Table, tmp_path: Path
) -> None:
    """A refused row splits its record batch; the halves are views at an offset in the
    column's buffer, and each row beside the refused one must still read its own values."""
    features = iris.select(FEATURES).cast(pa.schema([(f, pa.float32()) for f in FEATURES]))
    lengths = features.column("sepal_length").to_pylist()
    for row in (5, 90):
        lengths[row] = math.nan
    features = features.set_column(0, "sepal_length", pa.array(lengths, pa.float32()))
    source = write(features, tmp_path / "nan.parquet")  # FP32 like the input: no cast
    summary = run(registry, [source], tmp_path / "out", max_errors=2)
    assert summary.ok
    good = [i for i in range(150) if i not in (5, 90)]
    table = parts(tmp_path / "out")
    assert table.column("_row").to_pylist() == good
    assert_predictions(table, expected.take(good))
    assert [(e["_row"], e["stage"]) for e in errors(tmp_path / "out")] == [
        (5, "predict"),
        (90, "predict"),
    ]


def test_a_json_line_that_does_not_parse_is_a_read_error(
    registry: str, iris: pa.Table, tmp_path: Path
) -> None:
    source = write(iris.slice(0, 5), tmp_path / "rows.jsonl")
    lines = source.read_text().splitlines()
    lines[2] = lines[2][:20]
    source.write_text("\n".join(lines) + "\n")
    summary = run(registry, [source], tmp_path / "out", max_errors=1)
    assert summary.ok
    assert parts(tmp_path / "out").column("_row").to_pylist() == [0, 1, 3, 4]
    ((error,),) = [errors(tmp_path / "out")]
    assert (error["_row"], error["stage"]) == (2, "read")


@pytest.mark.parametrize(
    ("limit", "ok"), [(0, False), (2, False), (3, True), ("0.5%", False), ("1%", True)]
)
def test_max_errors_as_a_count_and_a_percentage(
    registry: str, iris: pa.Table, tmp_path: Path, limit: Any, ok: bool
) -> None:
    clean = write(iris, tmp_path / "a.csv")
    bad = write(bad_iris(iris, {1: "x", 2: "x", 3: "x"}), tmp_path / "b.csv")
    # 3 error rows in 300: 1% is not crossed (more than the limit crosses it), 0.5% is.
    summary = run(registry, [clean, bad], tmp_path / "out", max_errors=limit)
    assert summary.ok is ok
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    if ok:
        assert len(manifest["parts"]) == 2
        return
    # What was committed before the limit stays committed; the crossing part is not.
    assert [p["index"] for p in manifest["parts"]] == [0]
    assert summary.data["status"] == "failed"
    assert "--max-errors" in summary.data["reason"]
    assert not (tmp_path / "out" / "part-00001.parquet").exists()
    assert errors(tmp_path / "out")  # the refused rows are there to look at


def test_refusals_before_any_work(registry: str, iris: pa.Table, tmp_path: Path) -> None:
    source = write(iris, tmp_path / "iris.parquet")
    out = tmp_path / "out"
    no_petal = write(iris.drop_columns(["petal_width"]), tmp_path / "short.parquet")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"inputs": [source, no_petal]}, "missing column\\(s\\) 'petal_width'"),
        ({"features": ["a", "b", "c", "d"]}, "missing column\\(s\\) 'a', 'b', 'c', 'd'"),
        ({"id_column": "nope"}, "missing column\\(s\\) 'nope'"),
        ({"passthrough": ["predict"]}, "missing column"),
        ({"max_errors": "lots"}, "--max-errors takes a count"),
        ({"inputs": [tmp_path / "none.csv"]}, "does not exist"),
        ({"output_format": "csv", "outputs_as": "lists"}, "CSV has no list columns"),
    ]
    for options, match in cases:
        inputs = options.pop("inputs", [source])
        with pytest.raises(InvalidInput, match=match):
            run(registry, inputs, out, **options)
        assert not out.exists(), options
    with pytest.raises(NotFound):
        batch.run("iris:99", [str(source)], str(out), registry=registry)
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not empty; pass --resume"):
        run(registry, [source], out)
    with pytest.raises(InvalidInput, match="no batch job manifest"):
        run(registry, [source], out, resume=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_passthrough_all_clashing_with_an_output_is_refused(
    registry: str, iris: pa.Table, tmp_path: Path
) -> None:
    source = write(iris.append_column("predict", iris.column("target")), tmp_path / "x.parquet")
    with pytest.raises(InvalidInput, match="'predict' twice"):
        run(registry, [source], tmp_path / "out", passthrough="all")


def test_resume_continues_the_same_job_and_refuses_other_arguments(
    registry: str, iris: pa.Table, tmp_path: Path
) -> None:
    clean = write(iris, tmp_path / "a.parquet", row_group_size=50)
    bad = write(bad_iris(iris, {5: "x"}), tmp_path / "b.csv")
    last = write(iris, tmp_path / "c.jsonl")
    inputs = [clean, bad, last]
    whole = run(registry, inputs, tmp_path / "whole", max_errors=1)
    stopped = run(registry, inputs, tmp_path / "out")  # stops at the bad row
    assert not stopped.ok
    assert stopped.data["committed_parts"] == 3
    with pytest.raises(InvalidInput, match="batch_size: 65536 in the first run, now 10"):
        run(registry, inputs, tmp_path / "out", resume=True, batch_size=10)
    with pytest.raises(InvalidInput, match="inputs"):
        run(registry, inputs[:2], tmp_path / "out", resume=True)
    resumed = run(registry, inputs, tmp_path / "out", resume=True, max_errors=1)
    assert resumed.ok
    assert resumed.job_id == stopped.job_id
    assert resumed.data["this_run"]["parts"] == 2
    assert resumed.data["resumed"]
    for key in ("rows_in", "rows_out", "error_rows", "committed_parts"):
        assert resumed.data[key] == whole.data[key], key
    mine, theirs = parts(tmp_path / "out"), parts(tmp_path / "whole")
    assert set(mine.column("_job_id").to_pylist()) == {stopped.job_id}
    assert mine.drop_columns(["_job_id"]).equals(theirs.drop_columns(["_job_id"]))
    assert errors(tmp_path / "out") == errors(tmp_path / "whole")


def test_the_job_is_in_the_model_history(registry: str, iris: pa.Table, tmp_path: Path) -> None:
    source = write(iris, tmp_path / "iris.parquet")
    summary = run(registry, [source], tmp_path / "out", actor="analyst@example")
    with Registry.open(registry) as store:
        event = store.history("iris")[-1]
        mv = store.resolve("iris")
    assert (event.kind, event.actor, event.to_version) == ("batch", "analyst@example", mv.version)
    assert event.detail is not None
    assert event.detail["job_id"] == summary.job_id
    assert event.detail["inputs"] == [str(source)]
    assert event.detail["output"] == str(tmp_path / "out")
    assert (event.detail["rows_in"], event.detail["rows_out"]) == (150, 150)
    assert event.detail["digest"] == mv.digest


def test_fsspec_inputs_and_outputs(registry: str, expected: pa.Table, iris: pa.Table) -> None:
    import fsspec

    with fsspec.open("memory://batch-in/iris.parquet", "wb") as handle:
        pq.write_table(iris, handle)
    summary = batch.run("iris", ["memory://batch-in/"], "memory://batch-out", registry=registry)
    assert summary.ok
    fs = fsspec.filesystem("memory")
    with fs.open("/batch-out/part-00000.parquet", "rb") as handle:
        table = pq.read_table(handle)
    assert_predictions(table, expected)
    assert json.loads(fs.cat("/batch-out/_manifest.json"))["job_id"] == summary.job_id


def test_the_original_artifact_with_no_compiled(
    registry: str, expected: pa.Table, iris: pa.Table, tmp_path: Path
) -> None:
    source = write(iris, tmp_path / "iris.parquet")
    summary = run(registry, [source], tmp_path / "out", compiled=False)
    assert summary.data["model"]["compiled"] is False
    table = parts(tmp_path / "out")
    assert table.column("predict").to_pylist() == expected.column("predict").to_pylist()
    assert not any(math.isnan(v) for v in table.column("predict_proba_0").to_pylist())


def test_predict_table_gives_the_columns_the_command_writes(
    registry: str, iris: pa.Table, tmp_path: Path
) -> None:
    source = write(iris, tmp_path / "iris.parquet")
    run(registry, [source], tmp_path / "out")
    written = parts(tmp_path / "out")
    model = modelport.load("iris", registry=registry)
    try:
        from_frame = model.predict_table(iris.to_pandas())
        with pytest.raises(InvalidInput, match="missing column"):
            model.predict_table(iris.drop_columns(["petal_width"]).to_pandas())
        with pytest.raises(InvalidInput, match="pyarrow Table or a pandas DataFrame"):
            model.predict_table([[5.1, 3.5, 1.4, 0.2]])
    finally:
        model.close()
    assert from_frame.column_names == OUTPUTS
    assert from_frame.equals(written.select(OUTPUTS))


def test_a_csv_row_with_the_wrong_number_of_fields_is_a_read_error(
    registry: str, iris: pa.Table, tmp_path: Path
) -> None:
    header = ",".join(FEATURES)
    rows = ["5.1,3.5,1.4,0.2", "5.1,3.5", "6.3,3.3,6.0,2.5", "1,2,3,4,5", "5.9,3.0,5.1,1.8", "1"]
    source = tmp_path / "ragged.csv"
    source.write_text("\n".join([header, *rows]) + "\n")
    summary = run(registry, [source], tmp_path / "out", max_errors=3, batch_size=2)
    assert summary.ok
    assert parts(tmp_path / "out").column("_row").to_pylist() == [0, 2, 4]
    assert [(e["_row"], e["stage"]) for e in errors(tmp_path / "out")] == [
        (1, "read"),
        (3, "read"),
        (5, "read"),
    ]
