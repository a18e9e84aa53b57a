"""How the JSON `data` of one input tensor becomes an array, by the element rules of its datatype.

The rules themselves are stated in `codec_json`, which decodes the rest of a request; this
module holds the per-datatype decoders and messages (built once) and the flat and nested forms.
"""

from __future__ import annotations

import functools
import math
import types
from typing import Annotated, Any, Final, cast

import msgspec
import numpy as np

from modelport.errors import InvalidInput
from modelport.protocol.datatypes import DATATYPES, numpy_dtype

MAX_DIM: Final = 2**63 - 1
"""The largest dimension a shape may claim (numpy's own limit)."""


def _int_range(bits: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _fp_bound(datatype: str) -> float:
    # Exclusive bound: everything below max + half an ulp rounds to a finite value, so the
    # shortest text of the largest float (e.g. 3.4028235e38 for FP32) still decodes.
    info = np.finfo(cast("np.dtype[np.floating[Any]]", numpy_dtype(datatype)))
    return float(info.max) + 2.0 ** (int(info.maxexp) - int(info.nmant) - 2)


def _element_type(datatype: str) -> Any:
    if datatype == "BOOL":
        return bool
    if datatype == "BYTES":
        return str
    dtype = numpy_dtype(datatype)
    if dtype.kind in "iu":
        lo, hi = _int_range(dtype.itemsize * 8, dtype.kind == "i")
        if hi > MAX_DIM:
            # msgspec bounds must fit an int64; numpy rejects UINT64 overflow instead.
            return Annotated[int, msgspec.Meta(ge=lo)]
        return Annotated[int, msgspec.Meta(ge=lo, le=hi)]
    if datatype == "FP64":
        return float | None
    bound = _fp_bound(datatype)
    return Annotated[float, msgspec.Meta(gt=-bound, lt=bound)] | None


def _hint(datatype: str) -> str:
    if datatype == "BOOL":
        return "BOOL data are JSON true/false"
    if datatype == "BYTES":
        return "BYTES data are JSON strings (send other bytes with the binary tensor extension)"
    dtype = numpy_dtype(datatype)
    if dtype.kind in "iu":
        lo, hi = _int_range(dtype.itemsize * 8, dtype.kind == "i")
        return f"{datatype} data are JSON integers from {lo} to {hi}"
    return f"{datatype} data are JSON numbers within the {datatype} range (null for NaN)"


_ELEMENT: Final[dict[str, Any]] = {dt: _element_type(dt) for dt in DATATYPES}
_HINT: Final[dict[str, str]] = {dt: _hint(dt) for dt in DATATYPES}
DTYPES: Final[dict[str, np.dtype[np.generic]]] = {dt: numpy_dtype(dt) for dt in DATATYPES}
"""Each OIP datatype's numpy dtype."""
_FLAT: Final[dict[str, msgspec.json.Decoder[list[Any]]]] = {
    dt: msgspec.json.Decoder(types.GenericAlias(list, (elem,))) for dt, elem in _ELEMENT.items()
}


@functools.cache
def _nested_decoder(datatype: str, depth: int) -> msgspec.json.Decoder[list[Any]]:
    element = _ELEMENT[datatype]
    for _ in range(depth):
        element = types.GenericAlias(list, (element,))
    return msgspec.json.Decoder(element)


def decode_data(
    index: int, name: str, datatype: str, shape: tuple[int, ...], data: msgspec.Raw
) -> np.ndarray[Any, Any]:
    """Input `index` (`name`) of a request: its JSON `data`, flat or nested, as an array.

    `datatype` is one of DTYPES. InvalidInput says what is wrong, where, and what the datatype
    takes.
    """
    count = math.prod(shape)
    try:
        values = _FLAT[datatype].decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return _nested(index, name, datatype, bytes(data), shape, count, exc)
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} needs {count} elements, data has {len(values)}"
        )
    return _flat_array(name, values, datatype, shape)


def _flat_array(
    name: str, values: list[Any], datatype: str, shape: tuple[int, ...]
) -> np.ndarray[Any, Any]:
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = _utf8(name, values)
    else:
        try:
            array = np.array(values, dtype=DTYPES[datatype])
        except OverflowError:
            raise InvalidInput(f"input {name!r}: {_HINT[datatype]}") from None
    return shaped_input(array, shape, name)


def shaped_input(
    array: np.ndarray[Any, Any], shape: tuple[int, ...], name: str
) -> np.ndarray[Any, Any]:
    """Input `name`'s flat elements in `shape`; InvalidInput when the shape cannot be allocated.

    The caller has checked that `array` holds as many elements as `shape` does.
    """
    try:
        return array.reshape(shape)
    except ValueError:
        # Only a zero-element tensor with absurd dimensions gets here.
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} is too large to allocate"
        ) from None


def _utf8(name: str, values: list[str]) -> list[bytes]:
    try:
        return [v.encode() for v in values]
    except UnicodeEncodeError:
        raise InvalidInput(f"input {name!r}: a BYTES string is not valid Unicode") from None


def _data_error(
    index: int, name: str, datatype: str, exc: Exception, prefix: str = ""
) -> InvalidInput:
    if isinstance(exc, UnicodeDecodeError):
        detail = f"a string is not valid UTF-8 ({exc.reason}) - at `$.inputs[{index}].data`"
    elif not isinstance(exc, msgspec.ValidationError) and "UTF-8" in str(exc):
        # msgspec 0.23 reports bad UTF-8 as a decode error rather than UnicodeDecodeError.
        detail = f"a string is not valid UTF-8 ({exc}) - at `$.inputs[{index}].data`"
    else:
        detail = str(exc)
        where = f"`$.inputs[{index}].data"
        # msgspec names no path when the data value itself is wrong.
        detail = (
            detail.replace("`$", where, 1) if " - at `$" in detail else f"{detail} - at {where}`"
        )
    return InvalidInput(f"input {name!r}: {prefix}{detail}; {_HINT[datatype]}")


def _nested(
    index: int,
    name: str,
    datatype: str,
    raw: bytes,
    shape: tuple[int, ...],
    count: int,
    flat_error: Exception,
) -> np.ndarray[Any, Any]:
    """Decode data given as nested lists; they must follow `shape` exactly."""
    text = raw.lstrip()
    looks_nested = text[:1] == b"[" and text[1:].lstrip()[:1] == b"["
    if len(shape) < 2 or not looks_nested:
        raise _data_error(index, name, datatype, flat_error)
    mismatch = f"nested data must follow shape {list(shape)} exactly (or send a flat list): "
    try:
        nested = _nested_decoder(datatype, len(shape)).decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _data_error(index, name, datatype, exc, mismatch) from None
    dtype = DTYPES[datatype]
    try:
        array = np.array(nested, dtype=dtype)
    except ValueError:
        raise InvalidInput(f"input {name!r}: {mismatch}got ragged lists") from None
    except OverflowError:
        raise InvalidInput(f"input {name!r}: {_HINT[datatype]}") from None
    # A zero-element tensor may stop nesting early ([[], []] for shape [2, 0, 3]).
    empty_prefix = count == 0 and array.shape == shape[: array.ndim]
    if array.shape != shape and not empty_prefix:
        # numpy keeps ragged lists of strings as an object array of lists instead of failing.
        ragged = array.size > 0 and isinstance(array.flat[0], list)
        got = "ragged lists" if ragged else f"shape {list(array.shape)}"
        raise InvalidInput(f"input {name!r}: {mismatch}got {got}")
    if datatype == "BYTES":
        return _flat_array(name, array.ravel().tolist(), "BYTES", shape)
    # Not a plain reshape: an empty prefix such as [[], []] may claim dimensions too large
    # for numpy ([2, 0, 2**63 - 1]), which must be the client's error rather than a crash.
    return shaped_input(array, shape, name)
