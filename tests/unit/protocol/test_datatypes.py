"""OIP datatype names and their numpy dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.errors import InvalidInput
from modelport.protocol.datatypes import DATATYPES, itemsize, numpy_dtype, oip_datatype

# The OIP datatype table: name -> bytes per element in the raw layout (0 = variable).
TABLE = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
    "BYTES": 0,
}


def test_the_names_are_the_oip_table() -> None:
    assert set(TABLE) == DATATYPES


@pytest.mark.parametrize(("datatype", "size"), sorted(TABLE.items()))
def test_itemsize_follows_the_table(datatype: str, size: int) -> None:
    assert itemsize(datatype) == size


@pytest.mark.parametrize("datatype", sorted(DATATYPES - {"BYTES"}))
def test_numeric_dtypes_are_little_endian_and_round_trip(datatype: str) -> None:
    dtype = numpy_dtype(datatype)
    assert dtype.byteorder in "<|="
    assert dtype.newbyteorder("<") == dtype
    assert dtype.itemsize == TABLE[datatype]
    assert oip_datatype(dtype) == datatype


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [
        (np.dtype(bool), "BOOL"),
        (np.dtype("u1"), "UINT8"),
        (np.dtype("i8"), "INT64"),
        (np.dtype(">f4"), "FP32"),  # byte order does not change the datatype
        (np.dtype("f2"), "FP16"),
        (np.dtype(object), "BYTES"),
        (np.dtype("S5"), "BYTES"),
        (np.dtype("U3"), "BYTES"),
    ],
)
def test_oip_datatype_of_numpy_dtypes(dtype: np.dtype[np.generic], datatype: str) -> None:
    assert oip_datatype(dtype) == datatype


def test_bytes_is_an_object_array() -> None:
    assert numpy_dtype("BYTES") == np.dtype(object)


@pytest.mark.parametrize("name", ["BF16", "fp32", "FLOAT", "", "STRING"])
def test_unknown_names_list_the_valid_ones(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        numpy_dtype(name)
    message = info.value.message
    assert message.startswith(f"unknown datatype {name!r}; use one of ")
    assert set(message.rpartition("use one of ")[2].split(", ")) == DATATYPES
    with pytest.raises(InvalidInput):
        itemsize(name)


@pytest.mark.parametrize("dtype", [np.dtype("c8"), np.dtype("M8[s]"), np.dtype("V4")])
def test_numpy_dtypes_without_an_oip_name(dtype: np.dtype[np.generic]) -> None:
    with pytest.raises(InvalidInput, match="has no Open Inference Protocol datatype"):
        oip_datatype(dtype)
