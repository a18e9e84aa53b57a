"""The tests' float rule: CPU-to-CPU differences pass, differences a real change makes do not."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.intake.compilation import Tolerance

from ..conftest import assert_close_compiled, assert_close_float32, assert_close_float64


def test_a_tiny_probability_from_another_cpu_is_equal() -> None:
    # Seen on another CPU: 8.7e-9 batched and unbatched, 1.8e-6 apart relatively.
    unbatched = np.float32([[8.7e-9, 0.25, 0.75]])
    batched = (unbatched * np.float32([[1 + 1.8e-6, 1, 1]])).astype(np.float32)
    assert batched[0, 0] != unbatched[0, 0]
    assert_close_float32(batched, unbatched)


def test_a_value_flushed_to_zero_is_equal() -> None:
    # Kernels that flush subnormals to zero answer 0 where others answer 1e-39: no relative
    # tolerance covers that, the absolute floor does.
    assert_close_float32(np.float32([0.0, 0.5]), np.float32([1e-39, 0.5]))
    assert_close_float32(np.float32([3e-8]), np.float32([0.0]))


def test_a_logit_ulp_apart_is_equal_in_float32() -> None:
    # One float32 ulp at a logit of 16 moves every probability by about 2e-6 relatively.
    p = np.float32([0.3, 0.6, 0.1])
    assert_close_float32(p * np.float32(1 + 4e-6), p)


@pytest.mark.parametrize(
    ("actual", "expected"),
    [(0.5001, 0.5), (1.001e-3, 1e-3), (2e-6, 1e-6), (100.01, 100.0)],
    ids=["mid", "small", "near-zero", "large"],
)
def test_a_real_difference_is_refused(actual: float, expected: float) -> None:
    with pytest.raises(AssertionError):
        assert_close_float32(np.float32([actual]), np.float32([expected]))


def test_the_float64_rule_is_tighter_than_float32_rounding() -> None:
    exact = np.array([0.1, 0.7])
    assert_close_float64(exact * (1 + 1e-14), exact)
    with pytest.raises(AssertionError):
        assert_close_float64(exact.astype(np.float32).astype(np.float64), exact)


def test_the_compiled_rule_is_the_compile_check_s() -> None:
    original = np.array([0.0, 0.5, 1000.0])
    allowed = Tolerance().allows(original)
    assert_close_compiled(original + 0.99 * allowed, original)
    for i in range(len(original)):
        off = original.copy()
        off[i] += 1.01 * allowed[i]
        with pytest.raises(AssertionError):
            assert_close_compiled(off, original)
