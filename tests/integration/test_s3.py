"""The S3 fixtures: moto's server on 127.0.0.1 answers s3fs, pyarrow and a subprocess alike."""

from __future__ import annotations

import subprocess
import sys

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from ..conftest import S3

pytestmark = pytest.mark.integration


def _table() -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "sepal_length": rng.random(1000, dtype=np.float32),
            "label": pa.array([f"row-{i}" for i in range(1000)]),
        }
    )


def test_parquet_round_trip_through_fsspec_storage_options(s3: S3) -> None:
    table = _table()
    url = s3.url("in/part-0.parquet")
    with fsspec.open(url, "wb", **s3.storage_options) as out:
        pq.write_table(table, out, row_group_size=300)
    with fsspec.open(url, "rb", **s3.storage_options) as src:
        parquet = pq.ParquetFile(src)
        assert parquet.metadata.num_row_groups == 4
        assert parquet.read().equals(table)


def test_each_test_gets_an_empty_bucket_of_its_own(s3: S3, s3_endpoint: str) -> None:
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3.storage_options)
    assert s3.endpoint_url == s3_endpoint
    assert fs.ls(s3.bucket) == []


def test_environment_reaches_fsspec_and_pyarrow_in_process(s3_env: S3) -> None:
    table = _table()
    with fsspec.open(s3_env.url("env.parquet"), "wb") as out:
        pq.write_table(table, out)
    # pyarrow's own S3 client, which knows nothing of fsspec, finds the server the same way.
    filesystem, path = pafs.FileSystem.from_uri(s3_env.url("env.parquet"))
    assert pq.read_table(path, filesystem=filesystem).equals(table)


def test_environment_reaches_a_subprocess(s3: S3) -> None:
    """What a `modelport batch s3://...` subprocess gets: plain URLs, settings from env."""
    with fsspec.open(s3.url("sub/in.parquet"), "wb", **s3.storage_options) as out:
        pq.write_table(_table(), out)
    script = (
        "import sys, fsspec, pyarrow.parquet as pq\n"
        "with fsspec.open(sys.argv[1], 'rb') as src:\n"
        "    table = pq.read_table(src)\n"
        "with fsspec.open(sys.argv[2], 'wb') as out:\n"
        "    pq.write_table(table.slice(0, 10), out)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, s3.url("sub/in.parquet"), s3.url("sub/out.parquet")],
        env=s3.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with fsspec.open(s3.url("sub/out.parquet"), "rb", **s3.storage_options) as src:
        assert pq.read_table(src).equals(_table().slice(0, 10))


def test_env_replaces_the_callers_aws_settings() -> None:
    env = S3("http://127.0.0.1:1", "bucket").env(
        {"AWS_PROFILE": "prod", "AWS_SESSION_TOKEN": "x", "FSSPEC_S3_ANON": "1", "HOME": "/h"}
    )
    assert env["HOME"] == "/h"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
    assert not {"AWS_PROFILE", "AWS_SESSION_TOKEN", "FSSPEC_S3_ANON"} & set(env)
