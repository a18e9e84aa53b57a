"""OIP datatype names and their numpy equivalents."""

from __future__ import annotations

from typing import Final

import numpy as np

from modelport.errors import InvalidInput

# Little-endian numpy dtypes for every OIP datatype numpy can hold natively.
# BF16 needs a third-party dtype and is not offered; BYTES is an object array of `bytes`.
_NUMPY: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}

DATATYPES: Final[frozenset[str]] = frozenset(_NUMPY)

_BY_KIND: Final[dict[tuple[str, int], str]] = {
    (dt.kind, dt.itemsize): name for name, dt in _NUMPY.items() if name != "BYTES"
}


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype that holds `datatype`; InvalidInput for a name OIP does not define."""
    try:
        return _NUMPY[datatype]
    except KeyError:
        raise InvalidInput(
            f"unknown datatype {datatype!r}; use one of {', '.join(sorted(DATATYPES))}"
        ) from None


def oip_datatype(dtype: np.dtype[np.generic]) -> str:
    """The OIP datatype name for a numpy dtype (strings and objects map to BYTES)."""
    if dtype.kind in "OSU":
        return "BYTES"
    try:
        return _BY_KIND[(dtype.kind, dtype.itemsize)]
    except KeyError:
        raise InvalidInput(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


def itemsize(datatype: str) -> int:
    """Bytes per element in the raw layout; 0 for BYTES (variable length)."""
    if datatype == "BYTES":
        return 0
    return numpy_dtype(datatype).itemsize
