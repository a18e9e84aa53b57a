"""The demo registry: every model carries the reference profile of its training rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.demo import DEMO_MODELS
from modelport.monitoring.reference_profile import ReferenceProfile
from modelport.registry.store import Registry

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
NUMERIC = {
    "iris": (IRIS_FEATURES, 150),
    "iris-xgboost": (IRIS_FEATURES, 150),
    "iris-onnx": (IRIS_FEATURES, 150),
    "diabetes-lightgbm": (["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], 442),
}
"""Demo models with one numeric [-1, F] input: their features, in order, and training rows."""


@pytest.fixture(scope="module")
def demo(demo_registry: Path) -> Registry:
    return Registry.open(demo_registry)


def test_every_demo_model_is_listed_here() -> None:
    assert {name for name, _ in DEMO_MODELS} == {*NUMERIC, "greeting-language"}


@pytest.mark.parametrize("name", sorted(NUMERIC))
def test_numeric_demo_models_are_profiled_on_their_training_rows(demo: Registry, name: str) -> None:
    mv = demo.get(name)
    assert mv.reference_profile is not None, f"{name} was pushed without reference data"
    profile = ReferenceProfile.from_dict(mv.reference_profile)
    features, rows = NUMERIC[name]
    (spec,) = mv.signature.inputs
    assert spec.shape == (-1, len(features))
    assert [f.name for f in profile.features] == features
    assert [f.column for f in profile.features] == list(range(len(features)))
    assert {f.input for f in profile.features} == {spec.name}
    assert {f.kind for f in profile.features} == {"numeric"}
    assert profile.rows == profile.source_rows == rows


def test_the_text_model_is_profiled_on_its_greetings(demo: Registry) -> None:
    mv = demo.get("greeting-language")
    assert mv.reference_profile is not None
    (feature,) = ReferenceProfile.from_dict(mv.reference_profile).features
    assert (feature.name, feature.input, feature.kind) == ("text", "text", "categorical")
    assert "bonjour" in feature.categories
