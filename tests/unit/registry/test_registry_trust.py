"""is_pickle_family and sha256_file on real files written by the libraries that make them."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest

from modelport.registry.trust import is_pickle_family, sha256_file


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_is_recognised_by_its_header_whatever_the_name(
    tmp_path: Path, protocol: int
) -> None:
    path = _write(tmp_path / "model.bin", pickle.dumps({"w": [1.0, 2.0]}, protocol=protocol))
    assert is_pickle_family(path)


@pytest.mark.parametrize(
    "name", ["m.pkl", "m.pickle", "m.joblib", "m.cloudpickle", "m.pt", "m.pth", "m.sav", "M.PKL"]
)
def test_pickle_suffixes_count_even_without_a_pickle_header(tmp_path: Path, name: str) -> None:
    assert is_pickle_family(_write(tmp_path / name, b"not obviously a pickle"))


def test_plain_joblib(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    joblib.dump({"coef": np.arange(5.0)}, path)
    assert is_pickle_family(path)


@pytest.mark.parametrize("method", ["zlib", "gzip", "bz2", "xz", "lzma"])
def test_compressed_joblib(tmp_path: Path, method: str) -> None:
    path = tmp_path / "model.bin"
    joblib.dump({"coef": np.arange(5.0)}, path, compress=(method, 3))
    assert path.read_bytes()[:2] != b"\x80\x05"  # really compressed, not a bare pickle
    assert is_pickle_family(path)


def test_cloudpickle(tmp_path: Path) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    offset = 3
    path = _write(tmp_path / "fn.bin", cloudpickle.dumps(lambda x: x + offset))
    assert is_pickle_family(path)


def test_skops_file_is_not_pickle_family(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from skops.io import dump

    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    path = tmp_path / "model.skops"
    dump(model, path)
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    assert not is_pickle_family(path)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        # An ONNX ModelProto: ir_version (field 1), producer_name (field 2), ...
        ("model.onnx", b"\x08\x08\x12\x08skl2onnx\x1a\x041.17:\x02\x10\x01"),
        ("model.json", b'{"learner": {"attributes": {}}, "version": [2, 1, 0]}'),
        ("model.ubj", b"{L\x00\x00\x00\x00\x00\x00\x00\x07learner{"),
        ("model.txt", b"tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\n"),
        ("notes.txt", b"x^2 + y^2 = r^2\n"),  # a valid zlib header by accident
        ("empty.bin", b""),
    ],
)
def test_other_formats_are_not_pickle_family(tmp_path: Path, name: str, data: bytes) -> None:
    assert not is_pickle_family(_write(tmp_path / name, data))


def test_compressed_non_pickle_content_is_not_pickle_family(tmp_path: Path) -> None:
    path = _write(tmp_path / "model.json.gz", gzip.compress(b'{"learner": {}}'))
    assert not is_pickle_family(path)


@pytest.mark.parametrize(
    "data",
    [
        b"\x04\x22\x4d\x18" + b"\x00" * 32,  # lz4 frame: no standard-library decoder
        b"\x1f\x8b\x08\x00" + b"\xff" * 32,  # gzip magic, undecodable body
    ],
)
def test_compressed_content_that_cannot_be_inspected_counts(tmp_path: Path, data: bytes) -> None:
    assert is_pickle_family(_write(tmp_path / "model.bin", data))


def test_sha256_file_matches_hashlib_across_chunks(tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 12345)
    path = _write(tmp_path / "big.bin", data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(_write(tmp_path / "empty", b"")) == hashlib.sha256(b"").hexdigest()
