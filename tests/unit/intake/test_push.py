"""push_artifact infers signatures and refuses untrusted pickles; load_runtime re-checks digests."""

from __future__ import annotations

import stat
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from modelport.errors import InvalidInput, UntrustedArtifact
from modelport.intake.push import push_artifact
from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry.store import Registry
from modelport.serving.artifacts import load_runtime


@pytest.fixture(scope="module")
def classifier() -> LogisticRegression:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    return LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))


def test_push_infers_the_signature(
    registry: Registry, classifier: LogisticRegression, tmp_path: Path
) -> None:
    path = tmp_path / "clf.skops"
    skops.io.dump(classifier, path)
    mv = push_artifact(registry, path, name="clf", created_by="tests", metadata={"k": "v"})
    assert mv.version == 1
    assert mv.format == "sklearn"
    assert mv.pickle is False
    assert mv.metadata == {"k": "v"}
    assert mv.signature.inputs == (TensorSpec("input-0", "FP32", (-1, 3)),)
    assert mv.signature.output_names == ("predict", "predict_proba")
    runtime = load_runtime(registry, mv)
    try:
        x = np.ones((2, 3), dtype=np.float32)
        out = runtime.predict({"input-0": x}, ["predict"])
        assert out["predict"].tolist() == classifier.predict(x).tolist()
    finally:
        runtime.close()


def test_pickles_need_trust(
    registry: Registry, classifier: LogisticRegression, tmp_path: Path
) -> None:
    path = tmp_path / "clf.joblib"
    joblib.dump(classifier, path)
    with pytest.raises(UntrustedArtifact) as caught:
        push_artifact(registry, path, name="clf", created_by="tests")
    assert "--trust-pickle" in caught.value.message
    assert str(tmp_path) not in caught.value.message
    assert registry.models() == []
    # The same bytes under a name that hides the suffix are still recognised.
    disguised = tmp_path / "clf.model"
    disguised.write_bytes(path.read_bytes())
    with pytest.raises(UntrustedArtifact):
        push_artifact(registry, disguised, name="clf", format="sklearn", created_by="tests")
    mv = push_artifact(registry, path, name="clf", created_by="tests", trust_pickle=True)
    assert mv.pickle
    assert mv.trusted_pickle
    load_runtime(registry, mv).close()


def test_load_runtime_refuses_a_changed_artifact(
    registry: Registry, classifier: LogisticRegression, tmp_path: Path
) -> None:
    path = tmp_path / "clf.skops"
    skops.io.dump(classifier, path)
    mv = push_artifact(registry, path, name="clf", created_by="tests")
    blob = registry.artifact_path(mv)
    blob.chmod(blob.stat().st_mode | stat.S_IWUSR)
    blob.write_bytes(b"PK\x03\x04 not the model any more")
    with pytest.raises(UntrustedArtifact) as caught:
        load_runtime(registry, mv)
    assert mv.digest in caught.value.message
    assert str(blob) not in caught.value.message


def test_a_signature_that_contradicts_the_model(
    registry: Registry, classifier: LogisticRegression, tmp_path: Path
) -> None:
    path = tmp_path / "clf.skops"
    skops.io.dump(classifier, path)
    wrong = Signature(
        (TensorSpec("input-0", "FP32", (-1, 5)),), (TensorSpec("predict", "INT64", (-1,)),)
    )
    with pytest.raises(InvalidInput):
        push_artifact(registry, path, name="clf", signature=wrong, created_by="tests")
    assert registry.models() == []


def test_missing_file(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"'gone\.skops'"):
        push_artifact(registry, tmp_path / "gone.skops", name="clf", created_by="tests")
