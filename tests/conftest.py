"""Fixtures every test directory may use, and what equal means for float model outputs."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pytest
import sqlalchemy as sa

from modelport.demo import build_demo
from modelport.intake.compilation import Tolerance
from modelport.registry import database

CREATED_BY = "tests@integration"
"""Who the tests' pushes name as their author."""
POSTGRES_ENV = "MODELPORT_TEST_POSTGRES"
POSTGRES_SERVER = os.environ.get(POSTGRES_ENV, "")
POSTGRES_SKIP_REASON = (
    f"{POSTGRES_ENV} is unset: set it to a PostgreSQL URL whose role may create databases "
    "(.ci/run sets postgresql://postgres@127.0.0.1:5432/test)"
)


# -- float model outputs ---------------------------------------------------------------------
# Two correct computations of one model differ in their last bits: BLAS and onnxruntime pick
# kernels by CPU and by batch size, and those sum in another order or fuse multiply-adds. So a
# model's float outputs are compared within the tolerances below, which hold on any CPU, and
# exactly only where exactness is guaranteed: values copied or round-tripped (codecs, echo
# models, logged inputs), arithmetic on small whole numbers or binary fractions, and class
# labels (on the tests' rows the top two probabilities are at least 7e-3 apart, far beyond
# any float error).

FP32_RTOL: Final = 1e-5
"""Relative tolerance for outputs computed in float32: a few float32 ulps of the logits.

A softmax or sigmoid turns an absolute error d in a logit into a relative error d in the
probability, and one float32 ulp at |logit| 16 is 2e-6: the demo iris model's probabilities of
random rows have been seen 3.9e-6 apart between batch sizes on one CPU.
"""
FP32_ATOL: Final = 1e-7
"""Absolute floor for outputs computed in float32, about one ulp at 1.0.

Near zero a relative difference says nothing: a probability of 8.7e-9 was seen 1.8e-6 apart
relatively on another CPU, which is 1.6e-14 absolutely.
"""
FP64_RTOL: Final = 1e-12
"""Relative tolerance for outputs computed in float64 throughout: about 5,000 ulps.

Far beyond any reordering of the few hundred terms these models sum, far below any real change.
"""
FP64_ATOL: Final = 1e-15
"""Absolute floor for outputs computed in float64 throughout, a few ulps at 1.0."""


def assert_close_float32(actual: npt.ArrayLike, expected: npt.ArrayLike, err_msg: str = "") -> None:
    """Float outputs computed in float32 agree within FP32_ATOL + FP32_RTOL * |expected|.

    For every output a float32 computation produced, whatever dtype carries it: an FP64 output
    of XGBoost, of a compiled ONNX graph or of a float32 model behind an FP64 signature is held
    to this rule too. NaN agrees with NaN.
    """
    np.testing.assert_allclose(actual, expected, rtol=FP32_RTOL, atol=FP32_ATOL, err_msg=err_msg)


def assert_close_float64(actual: npt.ArrayLike, expected: npt.ArrayLike, err_msg: str = "") -> None:
    """Float outputs computed in float64 throughout agree within FP64_ATOL + FP64_RTOL * |expected|.

    For LightGBM's own predictions and models fed float64 rows; NaN agrees with NaN.
    """
    np.testing.assert_allclose(actual, expected, rtol=FP64_RTOL, atol=FP64_ATOL, err_msg=err_msg)


def assert_close_compiled(compiled: npt.ArrayLike, original: npt.ArrayLike) -> None:
    """A compiled model's float outputs agree with its original's as the compile check verifies.

    That is `Tolerance()` of modelport.intake.compilation, |compiled - original| <= atol +
    rtol * |original|: looser than the float32 rule, because the compiled graph computes in
    float32 where the original may compute in float64, and no looser, so that a test never
    accepts what the compile check would refuse. NaN agrees with NaN.
    """
    tolerance = Tolerance()
    np.testing.assert_allclose(compiled, original, rtol=tolerance.rtol, atol=tolerance.atol)


@pytest.fixture
def database_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database; dropped afterwards (skips without one)."""
    if not POSTGRES_SERVER:
        pytest.skip(POSTGRES_SKIP_REASON)
    server = sa.make_url(POSTGRES_SERVER).set(drivername=database.POSTGRES_DRIVER)
    name = f"modelport_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(drivername="postgresql", database=name).render_as_string(
                hide_password=False
            )
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def write_iris_c001(out: Path) -> Path:
    """A second, different iris model (strong regularisation), saved with skops."""
    import skops.io
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(C=0.01, max_iter=1000).fit(x.astype(np.float32), y)
    path = out / "iris-c001.skops"
    skops.io.dump(model, path)
    return path


@pytest.fixture(scope="session")
def demo_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding the demo models, built once per session; treat it as read-only."""
    location = tmp_path_factory.mktemp("demo") / "registry"
    lines = list(build_demo(str(location), created_by=CREATED_BY))
    assert len(lines) == 5, lines
    return location
