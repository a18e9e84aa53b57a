"""Input resolution: files, directories, globs, format checks, partitions."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from modelport.errors import InvalidInput
from modelport.jobs.sources import check_file, is_remote, partitions, resolve_inputs

from .conftest import FEATURES, write


def test_files_directories_and_globs_in_order_each_once(tmp_path: Path, iris: pa.Table) -> None:
    os.chdir(tmp_path)
    write(iris, Path("d/b.csv"))
    write(iris, Path("d/a.parquet"))
    write(iris, Path("d/sub/c.jsonl"))
    Path("d/_SUCCESS").write_text("")
    Path("d/.hidden.csv").write_text("x\n1\n")
    write(iris, Path("e.jsonl"))
    found = [f.path for f in resolve_inputs(["e.jsonl", "d", "d/*.csv"])]
    assert found == ["e.jsonl", "d/a.parquet", "d/b.csv", "d/sub/c.jsonl"]
    formats = {f.path: f.format for f in resolve_inputs(["d"])}
    assert formats == {"d/a.parquet": "parquet", "d/b.csv": "csv", "d/sub/c.jsonl": "jsonl"}


def test_columns_are_read_from_each_format(tmp_path: Path, iris: pa.Table) -> None:
    for name in ("a.parquet", "a.csv", "a.jsonl"):
        f = check_file(str(write(iris, tmp_path / name)))
        assert list(f.columns) == [*FEATURES, "target", "id"], name
        assert f.size == (tmp_path / name).stat().st_size


def test_a_parquet_file_with_several_row_groups_is_one_partition_per_group(
    tmp_path: Path, iris: pa.Table
) -> None:
    many = check_file(str(write(iris, tmp_path / "many.parquet", row_group_size=40)))
    one = check_file(str(write(iris, tmp_path / "one.parquet")))
    csv = check_file(str(write(iris, tmp_path / "a.csv")))
    parts = partitions([many, one, csv])
    assert [(p.row_group, p.first_row, p.rows) for p in parts] == [
        (0, 0, 40),
        (1, 40, 40),
        (2, 80, 40),
        (3, 120, 30),
        (None, 0, 150),
        (None, 0, None),
    ]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("notes.txt", b"hello", "not a Parquet, CSV or JSON-lines file"),
        ("fake.parquet", b"a,b\n1,2\n", "not a readable Parquet file"),
        ("binary.csv", b"\x00\x01\x02", "binary data"),
        ("latin.csv", "é,b\n1,2\n".encode("latin-1"), "not a UTF-8 CSV"),
        ("rows.jsonl", b"a,b\n1,2\n", "not a JSON-lines file"),
        ("list.jsonl", b"[1, 2]\n", "each line must be a JSON object"),
        ("twice.csv", b"a,a\n1,2\n", "twice"),
    ],
)
def test_files_that_are_not_what_they_say_are_refused(
    tmp_path: Path, name: str, content: bytes, match: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InvalidInput, match=match):
        resolve_inputs([str(tmp_path / name)])


def test_unreadable_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        resolve_inputs([str(tmp_path / "missing.parquet")])
    with pytest.raises(InvalidInput, match="no file matches"):
        resolve_inputs([str(tmp_path / "*.parquet")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="holds no files"):
        resolve_inputs([str(tmp_path / "empty")])
    with pytest.raises(InvalidInput, match="at least one input"):
        resolve_inputs([])


def test_fsspec_urls_are_remote_and_local_paths_are_not(tmp_path: Path, iris: pa.Table) -> None:
    assert is_remote("s3://bucket/key.parquet")
    assert is_remote("memory://x/y.csv")
    assert not is_remote("/data/x.csv")
    assert not is_remote("file:///data/x.csv")
    import fsspec

    with fsspec.open("memory://inputs/a.csv", "wb") as handle:
        handle.write(b"sepal_length,id\n1.0,a\n")
    (found,) = resolve_inputs(["memory://inputs/"])
    # As fsspec names it (the memory filesystem roots its paths at "/").
    assert found.path.startswith("memory://")
    assert found.path.endswith("/inputs/a.csv")
    assert found.columns == ("sepal_length", "id")
