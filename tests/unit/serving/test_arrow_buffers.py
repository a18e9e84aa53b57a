"""Numpy <-> Arrow through buffers: the same values as pyarrow's conversions, without pandas."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

from modelport.serving.arrow_buffers import from_numpy, repeated, to_numpy

NUMERIC = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"]


@pytest.mark.parametrize("code", NUMERIC)
def test_numeric_columns_round_trip_with_their_type(code: str) -> None:
    values = (np.arange(7) * 3).astype(code)
    array = from_numpy(values)
    assert array.type == pa.from_numpy_dtype(np.dtype(code))
    assert array.to_pylist() == values.tolist()
    back = to_numpy(array)
    assert back.dtype == np.dtype(code)
    np.testing.assert_array_equal(back, values)


def test_a_slice_reads_from_its_offset() -> None:
    array = from_numpy(np.arange(10, dtype=np.int64)).slice(3, 4)
    np.testing.assert_array_equal(to_numpy(array), [3, 4, 5, 6])


def test_chunks_are_joined_in_order() -> None:
    chunked = pa.chunked_array([from_numpy(np.array([1.5, 2.5])), from_numpy(np.array([3.5]))])
    np.testing.assert_array_equal(to_numpy(chunked), [1.5, 2.5, 3.5])


def test_empty_columns() -> None:
    assert to_numpy(pa.array([], type=pa.float32())).shape == (0,)
    assert to_numpy(pa.chunked_array([], type=pa.int64())).dtype == np.int64
    assert len(from_numpy(np.empty(0, dtype=np.float32))) == 0


def test_nulls_booleans_and_text_take_pyarrows_conversions() -> None:
    with_null = to_numpy(pa.array([1.0, None, 3.0]))
    assert np.isnan(with_null[1])
    assert with_null[2] == 3.0
    np.testing.assert_array_equal(to_numpy(pa.array([True, False])), [True, False])
    assert from_numpy(np.array([True, False])).type == pa.bool_()
    assert to_numpy(pa.array(["a", "b"])).tolist() == ["a", "b"]


def test_a_strided_or_retyped_array_is_converted() -> None:
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert from_numpy(matrix[:, 1]).to_pylist() == [1.0, 4.0, 7.0, 10.0]
    assert from_numpy(np.array([1, 2], dtype=np.int64), pa.float64()).to_pylist() == [1.0, 2.0]


def test_repeated_values() -> None:
    text = repeated("iris", 3)
    assert pa.types.is_dictionary(text.type)
    assert len(text.dictionary) == 1
    assert text.to_pylist() == ["iris"] * 3
    number = repeated(7, 2)
    assert number.type == pa.int64()
    assert number.to_pylist() == [7, 7]
    assert repeated("", 0).to_pylist() == []


def test_scoring_a_table_does_not_import_pandas() -> None:
    """pyarrow imports pandas on its first numpy conversion, whenever pandas is installed."""
    pytest.importorskip("pandas")  # without it there is nothing this could catch
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import pyarrow as pa
        from modelport.serving.arrow_buffers import from_numpy, repeated, to_numpy

        column = from_numpy(np.arange(5, dtype=np.float32))
        table = pa.table({"x": column, "name": repeated("iris", 5), "n": repeated(1, 5)})
        to_numpy(table.column("x"))
        print("pandas" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
