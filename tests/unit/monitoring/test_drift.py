"""Reference profiles and drift: building a profile, PSI, KS, and the live window."""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from modelport.errors import InvalidInput, Unsupported
from modelport.monitoring import drift
from modelport.monitoring.drift import DriftMonitor, ReferenceProfile, ks_statistic, psi
from modelport.monitoring.reference_profile import (
    SAMPLE_SIZE,
    TOP_CATEGORIES,
    as_text,
    build_profile,
    map_features,
)
from modelport.protocol.signature import TensorSpec
from modelport.serving.shared_memory import shared_array

from ...conftest import in_child

MATRIX = TensorSpec("input-0", "FP32", (-1, 3))
NAMES = ("a", "b", "c")


def _normal(seed: int, rows: int, shift: float = 0.0) -> np.ndarray[Any, Any]:
    """`rows` x 3 draws: column j is normal with mean j + shift and scale j + 1."""
    rng = np.random.default_rng(seed)
    return rng.normal([0.0 + shift, 1.0 + shift, 2.0 + shift], [1.0, 2.0, 3.0], (rows, 3))


def _matrix_profile(rows: int = 5000, seed: int = 1) -> dict[str, Any]:
    data = _normal(seed, rows)
    return build_profile({n: data[:, j] for j, n in enumerate(NAMES)}, [MATRIX])


def _monitor(profile: dict[str, Any], window: int = 1000, min_rows: int = 30) -> DriftMonitor:
    return DriftMonitor(ReferenceProfile.from_dict(profile), window=window, min_rows=min_rows)


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in report["features"]}


# -- building a profile --------------------------------------------------------------------


def test_a_numeric_profile_holds_deciles_proportions_and_a_sorted_sample() -> None:
    # The input is FP32: the profile holds the values as the model would receive them.
    data = _normal(1, 5000).astype(np.float32).astype(np.float64)
    profile = _matrix_profile()
    assert (profile["format"], profile["rows"], profile["source_rows"]) == (1, 5000, 5000)
    assert [(f["name"], f["input"], f["column"], f["kind"]) for f in profile["features"]] == [
        ("a", "input-0", 0, "numeric"),
        ("b", "input-0", 1, "numeric"),
        ("c", "input-0", 2, "numeric"),
    ]
    for j, feature in enumerate(profile["features"]):
        np.testing.assert_allclose(
            feature["edges"], np.quantile(data[:, j], np.arange(1, 10) / 10, method="lower")
        )
        np.testing.assert_allclose(feature["proportions"], [0.1] * 10, atol=1e-3)
        sample = feature["sample"]
        assert len(sample) == SAMPLE_SIZE
        assert sample == sorted(sample)
        assert (sample[0], sample[-1]) == (data[:, j].min(), data[:, j].max())
    # JSON through and through: what the registry stores is what it reads back.
    assert json.loads(json.dumps(profile, allow_nan=False)) == profile


def test_missing_numbers_are_left_out_and_repeated_deciles_merge_into_one_bin() -> None:
    values = np.array(["0", "0", "0", "0", "0", "0", "1", "1", "", " ", "nan", "1"], dtype=object)
    (feature,) = build_profile({"x": values}, [TensorSpec("x", "FP64", (-1,))])["features"]
    # Deciles of [0]*6 + [1]*3 repeat; the bins are (-inf, 0), [0, 1), [1, inf).
    assert feature["edges"] == [0.0, 1.0]
    assert feature["proportions"] == pytest.approx([0.0, 6 / 9, 3 / 9])
    assert feature["sample"] == [0.0] * 6 + [1.0] * 3
    assert feature["column"] is None


def test_a_categorical_profile_keeps_the_top_categories_and_an_other_share() -> None:
    # Category k appears 30 - k times (k = 0..24); ties cannot occur.
    values = np.array([f"cat{k}" for k in range(25) for _ in range(30 - k)], dtype=object)
    spec = TensorSpec("text", "BYTES", (-1,))
    (feature,) = build_profile({"text": values}, [spec])["features"]
    assert feature["kind"] == "categorical"
    assert feature["categories"] == [f"cat{k}" for k in range(TOP_CATEGORIES)]
    total = len(values)
    assert feature["shares"] == pytest.approx([(30 - k) / total for k in range(20)])
    assert feature["other"] == pytest.approx(sum(30 - k for k in range(20, 25)) / total)


def test_columns_named_like_the_inputs_feed_them_and_other_columns_are_ignored() -> None:
    inputs = [TensorSpec("age", "INT64", (-1, 1)), TensorSpec("city", "BYTES", (-1,))]
    columns = {
        "city": np.array(["paris", "rome", "paris"], dtype=object),
        "label": np.array([1, 0, 1]),
        "age": np.array([31, 45, 27]),
    }
    profile = build_profile(columns, inputs)
    assert [(f["name"], f["input"], f["column"], f["kind"]) for f in profile["features"]] == [
        ("age", "age", 0, "numeric"),
        ("city", "city", None, "categorical"),
    ]
    assert profile["features"][1]["categories"] == ["paris", "rome"]


def test_one_matrix_input_takes_every_column_in_order() -> None:
    mapping = map_features(["x", "y"], [TensorSpec("input-0", "FP32", (-1, -1))])
    assert [(name, spec.name, column) for name, spec, column in mapping] == [
        ("x", "input-0", 0),
        ("y", "input-0", 1),
    ]
    # One scalar input takes one column, whatever its name.
    ((name, spec, column),) = map_features(["phrase"], [TensorSpec("text", "BYTES", (-1,))])
    assert (name, spec.name, column) == ("phrase", "text", None)


@pytest.mark.parametrize(
    ("columns", "inputs"),
    [
        # Four columns for three features (a label left in).
        (["a", "b", "c", "label"], [MATRIX]),
        # Two columns for three features.
        (["a", "b"], [MATRIX]),
        # Two matrix inputs: which column feeds which is ambiguous.
        (["a", "b"], [TensorSpec("p", "FP32", (-1, 1)), TensorSpec("q", "FP32", (-1, 2))]),
        # Named inputs, but one is missing from the data.
        (["p"], [TensorSpec("p", "FP32", (-1,)), TensorSpec("q", "FP32", (-1,))]),
        # A model that declares no inputs.
        (["a"], []),
    ],
)
def test_data_that_does_not_fit_the_inputs_is_refused_with_what_it_must_look_like(
    columns: list[str], inputs: list[TensorSpec]
) -> None:
    with pytest.raises(InvalidInput) as caught:
        map_features(columns, inputs)
    message = caught.value.message
    assert "named like each input" in message
    assert "exactly F columns" in message
    assert f"It has {len(columns)} column(s)" in message
    for column in columns:
        assert repr(column) in message


def test_text_in_a_numeric_column_is_refused_naming_the_column_and_value() -> None:
    columns = {"a": np.array(["1.5", "oops"], dtype=object)}
    with pytest.raises(InvalidInput, match=r"column 'a' feeds a numeric input but holds 'oops'"):
        build_profile(columns, [TensorSpec("a", "FP32", (-1,))])
    with pytest.raises(InvalidInput, match="no finite numbers"):
        build_profile({"a": np.array(["", "nan"], dtype=object)}, [TensorSpec("a", "FP32", (-1,))])
    with pytest.raises(InvalidInput, match="no rows"):
        build_profile({"a": np.array([], dtype=object)}, [TensorSpec("a", "FP32", (-1,))])


# -- the profile's JSON form ----------------------------------------------------------------


def test_a_profile_round_trips_through_its_json_form() -> None:
    profile = _matrix_profile()
    parsed = ReferenceProfile.from_dict(json.loads(json.dumps(profile)))
    assert parsed.to_dict() == profile
    assert [f.name for f in parsed.features] == list(NAMES)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda p: p.update(features=[]), "non-empty list"),
        (lambda p: p.update(rows=0), "positive integer"),
        (lambda p: p.update(format="1"), "unknown format"),
        (lambda p: p["features"][0].pop("edges"), "malformed"),
        (lambda p: p["features"][0].update(kind="ordinal"), "numeric or categorical"),
        (lambda p: p["features"][0]["proportions"].pop(), "inconsistent"),
        (lambda p: p["features"][0].update(sample=[2.0, 1.0]), "inconsistent"),
        (lambda p: p["features"][1].update(name="a"), "unique"),
        (lambda p: p["features"][1].update(column=0), "distinct columns"),
        (lambda p: p["features"][1].update(column=None), "distinct columns"),
    ],
)
def test_a_malformed_profile_is_refused(change: Any, match: str) -> None:
    profile = _matrix_profile(rows=200)
    change(profile)
    with pytest.raises(InvalidInput, match=match):
        ReferenceProfile.from_dict(profile)


def test_a_profile_from_a_newer_modelport_is_refused() -> None:
    with pytest.raises(Unsupported, match="upgrade modelport"):
        ReferenceProfile.from_dict({**_matrix_profile(rows=200), "format": 2})


# -- PSI and KS ------------------------------------------------------------------------------


def test_psi_is_zero_for_equal_shares_and_finite_for_empty_bins() -> None:
    assert psi([0.25] * 4, [0.25] * 4) == 0.0
    moved = psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5])
    assert 0 < moved < 20
    assert moved == pytest.approx(2 * 0.4999 * np.log(0.5 / 1e-4))
    assert psi([0.5, 0.5], [0.4, 0.6]) == pytest.approx(
        0.1 * np.log(0.6 / 0.5) - 0.1 * np.log(0.4 / 0.5)
    )
    with pytest.raises(InvalidInput, match="as many"):
        psi([0.5, 0.5], [1.0])


@pytest.mark.parametrize("seed", range(4))
def test_ks_statistic_is_scipys(seed: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    reference = np.sort(rng.normal(size=300 + 100 * seed))
    live = rng.normal(loc=0.2 * seed, size=50 + 40 * seed)
    if seed % 2:
        live = np.round(live, 1)  # ties within and across the samples
        reference = np.sort(np.round(reference, 1))
    expected = stats.ks_2samp(reference, live).statistic
    assert ks_statistic(reference, live) == pytest.approx(expected, abs=1e-12)


def test_ks_statistic_extremes() -> None:
    assert ks_statistic([1.0, 2.0, 3.0], [3.0, 1.0, 2.0]) == 0.0
    assert ks_statistic([1.0, 2.0], [5.0, 6.0]) == 1.0
    with pytest.raises(InvalidInput, match="at least one value"):
        ks_statistic([1.0], [])


# -- the monitor -----------------------------------------------------------------------------


def test_a_window_like_the_reference_shows_no_drift_and_a_shifted_one_does() -> None:
    profile = _matrix_profile()
    same, shifted = _monitor(profile), _monitor(profile)
    for batch in np.split(_normal(2, 1000), 100):  # 100 requests of 10 rows
        same.observe({"input-0": batch.astype(np.float32)})
    for row in _normal(3, 1000, shift=2.0):  # 1,000 requests of one row
        shifted.observe({"input-0": row[None, :].astype(np.float32)})

    calm = same.report()
    assert (calm["status"], calm["window"], calm["observed"]) == ("ok", 1000, 1000)
    assert calm["reference_rows"] == 5000
    for feature in calm["features"]:
        assert feature["live_rows"] == 1000
        assert feature["psi"] < 0.05, feature
        assert feature["ks"] < 0.06, feature

    drifted = _by_name(shifted.report())
    # A shift of 2 standard deviations for a, 1 for b, 2/3 for c.
    assert drifted["a"]["psi"] > 1.0
    assert drifted["b"]["psi"] > 0.25
    assert drifted["c"]["psi"] > 0.25
    assert drifted["a"]["ks"] > drifted["b"]["ks"] > drifted["c"]["ks"] > 0.15


def test_drift_is_null_until_the_window_has_min_rows() -> None:
    monitor = _monitor(_matrix_profile(rows=500), min_rows=30)
    empty = monitor.report()
    assert (empty["status"], empty["window"], empty["observed"]) == ("collecting", 0, 0)
    monitor.observe({"input-0": _normal(4, 29).astype(np.float32)})
    report = monitor.report()
    assert (report["status"], report["window"]) == ("collecting", 29)
    assert all(f["psi"] is None and f["ks"] is None for f in report["features"])
    assert {f["status"] for f in report["features"]} == {"collecting"}
    monitor.observe({"input-0": _normal(5, 1).astype(np.float32)})
    report = monitor.report()
    assert report["status"] == "ok"
    assert all(f["psi"] is not None and f["ks"] is not None for f in report["features"])
    with pytest.raises(InvalidInput, match="min_rows"):
        _monitor(_matrix_profile(rows=500), window=10, min_rows=11)


def test_the_window_keeps_only_the_last_rows_in_order() -> None:
    monitor = _monitor(_matrix_profile(rows=500), window=7, min_rows=1)
    rows = np.arange(90, dtype=np.float32).reshape(30, 3)  # row i holds 3i, 3i+1, 3i+2
    # Batches that fill the ring exactly, wrap around it, and one larger than the window.
    sizes = [1, 2, 3, 1, 2, 9, 1, 5, 3]
    seen = 0
    for size in sizes:
        monitor.observe({"input-0": rows[seen : seen + size]})
        seen += size
        kept = rows[max(0, seen - 7) : seen]
        np.testing.assert_array_equal(monitor.live("a"), kept[:, 0])
        np.testing.assert_array_equal(monitor.live("c"), kept[:, 2])
    report = monitor.report()
    assert (report["window"], report["window_size"], report["observed"]) == (7, 7, sum(sizes))
    with pytest.raises(InvalidInput, match="no feature 'z'"):
        monitor.live("z")


def test_inputs_of_another_shape_or_missing_ones_are_skipped() -> None:
    monitor = _monitor(_matrix_profile(rows=500), min_rows=1)
    monitor.observe({"other": np.zeros((2, 3))})
    monitor.observe({"input-0": np.zeros(3)})
    monitor.observe({"input-0": np.zeros((2, 2))})
    assert monitor.report()["observed"] == 0
    # Values that are not numbers are skipped too: monitoring never fails a request.
    monitor.observe({"input-0": np.array([[b"x", b"y", b"z"]], dtype=object)})
    assert monitor.report()["observed"] == 0
    # A wider tensor still has the profiled columns.
    monitor.observe({"input-0": np.array([[1.0, 2.0, 3.0, 4.0]])})
    assert monitor.live("c").tolist() == [3.0]


def test_categorical_drift_over_category_shares() -> None:
    rng = np.random.default_rng(6)
    cities = np.array(["paris", "rome", "oslo", "lima"], dtype=object)
    weights = [0.4, 0.3, 0.2, 0.1]
    inputs = [TensorSpec("city", "BYTES", (-1,)), TensorSpec("age", "FP64", (-1, 1))]
    profile = build_profile(
        {"city": rng.choice(cities, 5000, p=weights), "age": rng.normal(40, 10, 5000)}, inputs
    )
    same, moved = _monitor(profile), _monitor(profile)
    for _ in range(1000):
        # BYTES tensors hold bytes; the profile was built from text.
        city = rng.choice(cities, 1, p=weights).astype("S").astype(object)
        same.observe({"city": city, "age": rng.normal(40, 10, (1, 1))})
    for _ in range(1000):
        city = rng.choice(np.array([b"paris", b"berlin"], dtype=object), 1, p=[0.3, 0.7])
        moved.observe({"city": city, "age": rng.normal(40, 10, (1, 1))})

    calm = _by_name(same.report())
    assert calm["city"]["psi"] < 0.02
    assert calm["city"]["ks"] is None
    assert calm["age"]["psi"] < 0.05
    drifted = _by_name(moved.report())
    assert drifted["city"]["psi"] > 1.0  # most rows fall in "other", rare in the reference
    assert drifted["age"]["psi"] < 0.05
    # The window keeps a categorical row's bin: its category as the profile spells it, None
    # for a value outside the profile's categories (berlin).
    assert moved.live("city")[-1] in ("paris", None)
    assert set(moved.live("city").tolist()) == {"paris", None}


def _old_categorical_psi(feature: dict[str, Any], values: list[Any]) -> float:
    """PSI as the monitor computed it when its window held the values themselves."""
    seen = Counter(as_text(v) for v in values)
    shares = [seen.pop(category, 0) / len(values) for category in feature["categories"]]
    other = sum(seen.values()) / len(values)
    return psi([*feature["shares"], feature["other"]], [*shares, other])


def test_categorical_psi_over_stored_bins_is_what_it_was_over_the_values() -> None:
    rng = np.random.default_rng(11)
    names = np.array([f"cat{k}" for k in range(25)] + ["café"], dtype=object)
    weights = np.r_[np.arange(30, 5, -1.0), 12.0]
    weights /= weights.sum()
    reference = {"first": rng.choice(names, 3000, p=weights), "second": rng.choice(names[:5], 3000)}
    profile = build_profile(reference, [TensorSpec("pair", "BYTES", (-1, 2))])
    # Known categories as bytes and as text, one beyond the top 20 ("other" in the reference),
    # unknown bytes, bytes that are not UTF-8, a number.
    live_names = [n.encode() for n in names[::2]] + [b"unseen", "caf\xe9".encode(), b"\xff\xfe"]
    live = rng.choice(np.array([*live_names, "cat1", 7], dtype=object), (400, 2))
    monitor = _monitor(profile, window=300)
    for chunk in np.array_split(live, 37):
        monitor.observe({"pair": chunk})

    report = monitor.report()
    assert report["observed"] == 400
    found = [f["psi"] for f in report["features"]]
    # The same integer counts through the same arithmetic: equal, not merely close.
    kept = live[-300:]
    assert found == [
        _old_categorical_psi(f, kept[:, j].tolist()) for j, f in enumerate(profile["features"])
    ]
    # What the object-array implementation answered on this example (np.log may differ by
    # an ulp between CPUs).
    assert found == pytest.approx([2.756310522702117, 9.688532257148477], rel=1e-12)
    assert monitor.live("first").tolist() == [
        None if as_text(v) not in profile["features"][0]["categories"] else as_text(v)
        for v in kept[:, 0].tolist()
    ]


# -- one window for every process -------------------------------------------------------------


def test_rows_a_forked_child_observes_are_in_the_parents_report() -> None:
    monitor = _monitor(_matrix_profile(rows=500), window=100, min_rows=1)
    rows = np.arange(60, dtype=np.float32).reshape(20, 3)
    monitor.observe({"input-0": rows[:5]})

    def observe() -> None:
        for row in rows[5:15]:
            monitor.observe({"input-0": row[None, :]})

    assert in_child(observe) == 0
    assert in_child(lambda: monitor.observe({"input-0": rows[15:]})) == 0
    report = monitor.report()
    assert (report["observed"], report["window"]) == (20, 20)
    np.testing.assert_array_equal(monitor.live("b"), rows[:, 1])
    # And a child's report covers the parent's rows.
    seen = shared_array(1, np.int64)

    def report_in_child() -> None:
        seen[0] = monitor.report()["observed"]

    assert in_child(report_in_child) == 0
    assert seen[0] == 20


def test_an_observation_is_skipped_when_the_lock_cannot_be_had() -> None:
    monitor = _monitor(_matrix_profile(rows=500), min_rows=1)
    with monitor._lock.hold() as held:  # as a stalled worker would
        assert held
        assert in_child(lambda: monitor.observe({"input-0": np.ones((2, 3))})) == 0
    assert monitor.report()["observed"] == 0
    monitor.observe({"input-0": np.ones((2, 3))})
    assert monitor.report()["observed"] == 2


def test_threads_and_processes_observing_at_once_lose_no_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Generous: this checks that the lock excludes, not how fast it is had.
    monkeypatch.setattr(drift, "OBSERVE_TIMEOUT", 60.0)
    monitor = _monitor(_matrix_profile(rows=500), window=50, min_rows=1)
    row = {"input-0": np.ones((1, 3))}

    def observe() -> None:
        with ThreadPoolExecutor(4) as pool:
            for _ in pool.map(lambda _: [monitor.observe(row) for _ in range(250)], range(4)):
                pass

    pid = os.fork()  # observes beside this process's threads
    if pid == 0:
        status = 1
        try:
            observe()
            status = 0
        finally:
            os._exit(status)
    observe()
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    report = monitor.report()
    assert (report["observed"], report["window"]) == (2000, 50)
