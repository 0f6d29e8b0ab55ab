"""The alert rules' arithmetic: shortfalls against the hold-out, runs of windows, the alert points."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fireman.common import measurements as contract
from fireman.common.influx import to_line
from fireman.monitoring.alerts import (
    Holdout,
    Shortfall,
    Streak,
    drifting,
    performance_alert_point,
    shortfall,
    streak,
    underperforming,
)
from fireman.monitoring.coverage import Coverage
from fireman.monitoring.points import monitor_stats_point
from fireman.monitoring.windows import Features, Prediction, WindowKey
from tests.unit.test_monitoring_windows import Clock, make_book

HOLDOUT = Holdout(accuracy=0.95, f1=0.93)


def test_a_shortfall_is_a_drop_beyond_the_margin() -> None:
    assert shortfall(0.95, 0.93, HOLDOUT, 0.1) is None
    assert shortfall(0.86, 0.84, HOLDOUT, 0.1) is None  # 0.09 below: within the margin
    assert shortfall(0.84, 0.90, HOLDOUT, 0.1) == Shortfall("accuracy", 0.84, 0.95)
    assert shortfall(0.90, 0.80, HOLDOUT, 0.1) == Shortfall("f1", 0.80, 0.93)


def test_the_shortfall_names_the_metric_furthest_below_its_holdout() -> None:
    assert shortfall(0.42, 0.60, HOLDOUT, 0.1) == Shortfall("accuracy", 0.42, 0.95)  # 0.53 against 0.33
    assert shortfall(0.70, 0.30, HOLDOUT, 0.1) == Shortfall("f1", 0.30, 0.93)


def test_no_labels_no_shortfall() -> None:
    assert shortfall(math.nan, 0.0, Holdout(0.95, 0.0), 0.1) is None
    assert shortfall(None, None, HOLDOUT, 0.1) is None


def test_a_run_counts_back_until_a_window_that_does_not_count() -> None:
    previous = [(30, True), (20, True), (10, False), (0, True)]  # newest first
    assert streak(40, previous, 2) == Streak(3, 20, 30)
    assert streak(40, [], 2) == Streak(1, 40, None)
    assert streak(40, [(30, False), (20, True)], 2) == Streak(1, 40, None)


def test_windows_not_judged_neither_break_nor_extend_a_run() -> None:
    previous = [(30, None), (20, True), (10, None), (0, False)]
    assert streak(40, previous, 2) == Streak(2, 20, 40)


def test_every_window_of_a_run_rewrites_the_one_alert_the_run_raised() -> None:
    # Windows start every 10. Two bad ones make an alert, stamped with the second one's start.
    short = Shortfall("accuracy", 0.42, 0.95)
    history: list[tuple[int, bool | None]] = [(10, False), (0, True)]  # newest first
    alerts = []
    for start in (20, 30, 40, 50, 60, 70, 80):
        bad = start != 50  # the window at 50 is fine: it ends the first run
        run = streak(start, history, 2)
        if bad and run.windows >= 2:
            alerts.append(performance_alert_point(WindowKey("m", "3", start), short, 0.1, 250, run, 2))
        history.insert(0, (start, bad))
    # The first run (20-40): one point, overwritten as it grows. The second (60-80) raises its own.
    assert [a.time_ns for a in alerts] == [30, 30, 70, 70]
    assert [a.fields["consecutive_windows"] for a in alerts] == [2, 3, 2, 3]
    assert [a.fields["onset_ns"] for a in alerts] == [20, 20, 60, 60]


def test_stored_windows_are_judged_as_the_current_one() -> None:
    assert drifting({"dataset_drift": 1}) is True
    assert drifting({"dataset_drift": 0}) is False
    assert drifting({}) is None
    row = {"accuracy": 0.42, "f1": 0.40, "n_labelled": 150}
    assert underperforming(row, HOLDOUT, 0.1, 100) is True
    assert underperforming({**row, "n_labelled": 99}, HOLDOUT, 0.1, 100) is None  # too few labels
    assert underperforming({**row, "accuracy": 0.94, "f1": 0.92}, HOLDOUT, 0.1, 100) is False
    assert underperforming({"accuracy": 0.4}, HOLDOUT, 0.1, 100) is None


def test_the_performance_alert_point_matches_the_contract() -> None:
    key = WindowKey("m", "3", 1_700_000_000_000_000_123)
    point = performance_alert_point(
        key, Shortfall("accuracy", 0.42, 0.95), 0.1, 250, Streak(2, 5, key.start_ns), 2
    )
    assert point.measurement == contract.ALERTS.name and point.time_ns == key.start_ns
    assert point.tags == {"kind": contract.ALERT_PERFORMANCE, "model_name": "m", "model_version": "3"}
    assert set(point.fields) <= contract.ALERTS.fields
    assert point.fields["onset_ns"] == 5 and point.fields["consecutive_windows"] == 2
    assert (point.fields["metric"], point.fields["value"], point.fields["holdout"]) == (
        "accuracy",
        0.42,
        0.95,
    )
    assert "accuracy 0.420 against 0.950 on 250 labels" in str(point.fields["message"])
    assert to_line(point) is not None


def test_labels_for_unknown_events_are_counted_dropped_and_bounded() -> None:
    clock = Clock()
    book = make_book(clock, [], window_size=10, label_wait_s=3600.0)
    for i in range(1500):  # more than the join bound: the oldest go at once
        assert not book.apply_label(f"nobody-{i}", 1, None)
    assert len(book.early_labels) == 1000 and book.stats.labels_unknown == 500
    clock.now = 10.0  # the join timeout, not the hours a window waits for labels
    book.expire()
    assert not book.early_labels and book.stats.labels_unknown == 1500
    # A label that comes before its prediction still counts when the prediction follows in time.
    assert not book.apply_label("e1", 1, None)
    features = Features("e1", np.zeros(57), ("measurements", 0, 1), clock.now)
    prediction = Prediction("e1", 1_000, "m", "1", 1, 0.9, ("predictions", 0, 1), clock.now)
    assert book.add_features(features) is None
    assert book.add_prediction(prediction) is features
    book.add_scored(prediction, features)
    assert book.stats.labels_applied == 1

    point = monitor_stats_point("g", Coverage(scored=1, tested=0, untested=0), 1501, book, 7)
    assert point.measurement == contract.MONITOR_STATS.name
    assert set(point.tags) == contract.MONITOR_STATS.tags
    assert set(point.fields) | {"coverage"} == contract.MONITOR_STATS.fields  # coverage: none tested yet
    fields = point.fields
    assert (fields["labels_unknown"], fields["labels_applied"], fields["labels_waiting"]) == (1500, 1, 0)


def test_a_window_too_small_to_be_judged_is_a_settings_error() -> None:
    from pydantic import ValidationError

    from fireman.monitoring.settings import MonitorSettings

    with pytest.raises(ValidationError, match="performance_min_labelled"):
        MonitorSettings(window_size=50, min_window_size=10)
    assert MonitorSettings(window_size=50, min_window_size=10, performance_min_labelled=40).window_size == 50
