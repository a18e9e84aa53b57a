"""Fixtures every test directory may use, and what equal means for float model outputs."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

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


# -- S3 on moto's server ---------------------------------------------------------------------
# A real S3 endpoint on 127.0.0.1 (moto's server in a thread of the test process), so that
# s3:// URLs go through the very code paths they take against AWS: s3fs (fsspec), pyarrow's
# own S3 filesystem, and any subprocess given S3.env(). Nothing ever leaves the loopback.

S3_KEY: Final = "testing"
"""The access key id and secret the tests use; moto accepts any."""
S3_REGION: Final = "us-east-1"
_S3_ENV_PREFIXES: Final = ("AWS_", "FSSPEC_S3")
"""Variables dropped from a subprocess's environment: a developer's real profile, session
token or endpoint must never reach, or redirect, a test."""


@dataclass(frozen=True)
class S3:
    """moto's S3 server on 127.0.0.1 and one empty bucket on it, made for the calling test."""

    endpoint_url: str
    """`http://127.0.0.1:PORT`."""
    bucket: str

    def url(self, key: str = "") -> str:
        """`s3://BUCKET/KEY`."""
        return f"s3://{self.bucket}/{key}"

    @property
    def storage_options(self) -> dict[str, Any]:
        """What fsspec needs to reach the server in this process, as `storage_options=` or
        `fsspec.filesystem("s3", **options)` (no environment needed)."""
        # No region: botocore's default for S3 is us-east-1, where creating a bucket takes no
        # location constraint (s3fs would send the configured region as one, which moto, like
        # AWS, refuses for us-east-1).
        return {"key": S3_KEY, "secret": S3_KEY, "endpoint_url": self.endpoint_url}

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (default os.environ) without AWS_* / FSSPEC_S3*, plus the server's settings.

        For a subprocess (`modelport batch s3://...`): botocore (so s3fs) and pyarrow's
        S3FileSystem both take the endpoint from AWS_ENDPOINT_URL and the keys from
        AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. fsspec's own FSSPEC_S3_ENDPOINT_URL is not
        set: pyarrow ignores it, so a test passing with it would prove less.
        """
        source = os.environ if base is None else base
        env = {k: v for k, v in source.items() if not k.startswith(_S3_ENV_PREFIXES)}
        env.update(
            AWS_ACCESS_KEY_ID=S3_KEY,
            AWS_SECRET_ACCESS_KEY=S3_KEY,
            AWS_DEFAULT_REGION=S3_REGION,
            AWS_ENDPOINT_URL=self.endpoint_url,
            # Keys are given, but never let a lookup wander off to an instance-metadata address.
            AWS_EC2_METADATA_DISABLED="true",
        )
        return env


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of moto's S3 server on 127.0.0.1 and a free port, up for the whole session."""
    # Imported here: moto costs a second of start-up that tests without S3 should not pay.
    from moto.server import ThreadedMotoServer

    # werkzeug prints a line per request on stderr unless its logger has a level.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str) -> S3:
    """A new, empty bucket on moto's S3 server (a fresh one per test: no test sees another's)."""
    import s3fs

    bucket = f"modelport-test-{secrets.token_hex(6)}"
    store = S3(s3_endpoint, bucket)
    s3fs.S3FileSystem(skip_instance_cache=True, **store.storage_options).mkdir(bucket)
    return store


@pytest.fixture
def s3_env(s3: S3, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    """`s3`, with S3.env() in this process's environment for code that takes plain s3:// URLs.

    fsspec keeps one S3FileSystem per set of arguments, made with the environment of its
    time: the cache is cleared on the way in and out so none outlives the environment.
    """
    import s3fs

    for name in [k for k in os.environ if k.startswith(_S3_ENV_PREFIXES)]:
        monkeypatch.delenv(name)
    for name, value in s3.env({}).items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield s3
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def fork_child(work: Callable[[], object]) -> int:
    """Run `work()` in a forked child that exits 0 when it returns, 1 when it raises; its pid."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            work()
            status = 0
        finally:
            os._exit(status)
    return pid


def exit_code(pid: int) -> int:
    """Wait for the child `pid` and return its exit status."""
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def in_child(work: Callable[[], object]) -> int:
    """Run `work()` in a forked child and wait for it: its exit status (0 when it returned)."""
    return exit_code(fork_child(work))
