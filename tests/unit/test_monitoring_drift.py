"""Drift of one window with Evidently, and the InfluxDB points written for it (no service needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fireman.common.influx import to_line
from fireman.common.schema import FEATURE_NAMES
from fireman.monitoring.alerts import Streak, drift_alert_point
from fireman.monitoring.drift import Reference, compute_drift, missing_shares
from fireman.monitoring.points import drift_points, performance_point
from fireman.monitoring.windows import Confusion, Window, WindowKey

ROWS = 400


def frame(seed: int, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, len(FEATURE_NAMES)))
    values[rng.random(values.shape) < 0.2] = np.nan
    return pd.DataFrame(values, columns=list(FEATURE_NAMES))


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference("m", "3", frame(0, 800), np.random.default_rng(1).random(800))


def test_missing_share_per_feature() -> None:
    window = np.array([[1.0, np.nan], [np.nan, np.nan]])
    assert missing_shares(window).tolist() == [0.5, 1.0]


def test_an_all_null_feature_is_left_out_and_a_shift_is_found(reference: Reference) -> None:
    window = frame(2, ROWS).to_numpy()
    window[:, 0] = np.nan  # Cont_1: every value missing (Evidently alone raises on this)
    window[:, 1] += 3.0  # Cont_2: shifted
    window[:5, 2] = np.nan
    window[5:, 2] = np.nan  # Cont_3: every value missing too
    probabilities = np.random.default_rng(3).random(ROWS)

    drift = compute_drift(reference, window, probabilities, drift_share=0.5, min_values=10)

    assert drift.untested == {
        "Cont_1": "0 value(s) in the window (all missing)",
        "Cont_3": "0 value(s) in the window (all missing)",
    }
    assert drift.tested_features == len(FEATURE_NAMES) - 2
    by_name = {f.feature: f for f in drift.features}
    assert by_name["Cont_1"].missing_share == 1.0 and by_name["Cont_1"].drift_score is None
    assert by_name["Cont_2"].drifted is True
    assert "Cont_2" in drift.drifted
    assert drift.drifted_features == len(drift.drifted)
    assert drift.share_drifted_features == pytest.approx(drift.drifted_features / drift.tested_features)
    assert not drift.dataset_drift
    assert drift.prediction_drift_score is not None
    assert 0.2 < drift.missing_share < 0.3


def test_dataset_drift_when_most_features_move(reference: Reference) -> None:
    window = frame(4, ROWS).to_numpy() + 3.0
    drift = compute_drift(reference, window, np.full(ROWS, 0.5), drift_share=0.5, min_values=10)
    assert drift.dataset_drift and drift.share_drifted_features == 1.0


def test_too_few_values_everywhere_tests_nothing(reference: Reference) -> None:
    window = np.full((20, len(FEATURE_NAMES)), np.nan)
    drift = compute_drift(reference, window, np.zeros(20), drift_share=0.5, min_values=10)
    assert drift.tested_features == 0 and not drift.dataset_drift
    assert drift.missing_share == 1.0 and len(drift.untested) == len(FEATURE_NAMES)


def test_points_share_the_window_time_and_carry_the_schema(reference: Reference) -> None:
    window = frame(5, ROWS).to_numpy()
    window[:, 0] = np.nan
    drift = compute_drift(reference, window, np.random.default_rng(6).random(ROWS), 0.5, 10)
    key = WindowKey("m", "3", 1_767_225_600_000_123_456)

    points = drift_points(key, drift, events=ROWS * 3, windows=3)
    assert len(points) == 1 + len(FEATURE_NAMES)
    assert {p.time_ns for p in points} == {key.start_ns}
    head = points[0]
    assert head.tags == {"model_version": "3"}
    assert set(head.fields) >= {
        "share_drifted_features",
        "drifted_features",
        "dataset_drift",
        "window_size",
        "missing_share",
        "prediction_drift_score",
    }
    assert head.fields["dataset_drift"] in (0, 1) and head.fields["window_size"] == ROWS
    # A window merged from three: it covers all their events, and its test ran on a sample of them.
    assert head.fields["tested"] == 1 and head.fields["events"] == ROWS * 3
    assert head.fields["merged_windows"] == 3
    cont_1 = to_line(points[1])
    assert cont_1 == f"drift,feature=Cont_1,model_version=3 missing_share=1.0 {key.start_ns}"
    assert set(points[2].fields) == {"drift_score", "drifted", "missing_share"}

    alert = drift_alert_point(key, drift, 0.5, Streak(2, key.start_ns - 10), 2)
    assert alert.measurement == "alerts" and alert.time_ns == key.start_ns
    assert alert.tags == {"kind": "drift", "model_name": "m", "model_version": "3"}
    assert alert.fields["consecutive_windows"] == 2 and alert.fields["onset_ns"] == key.start_ns - 10
    assert to_line(alert) is not None

    labelled = Window(key=key, first_ms=0, opened=0.0, predictions=10, confusion=Confusion(tp=3, tn=4, fp=1))
    performance = performance_point(labelled)
    assert performance.tags == {"model_version": "3"}
    assert performance.fields["n_labelled"] == 8
    assert performance.fields["label_coverage"] == pytest.approx(0.8)
    assert performance.fields["accuracy"] == pytest.approx(7 / 8)
