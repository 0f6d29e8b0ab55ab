"""The measurements the dashboard and Grafana read are the ones the platform's writers really write.

Each writer's own point-building code is run on a tiny input and its points are compared with
``fireman.common.measurements``: a renamed field or tag in a writer fails here instead of leaving a chart
empty. Fields the dashboard does not read may exist beyond the contract; the contract's must exist.
"""

from __future__ import annotations

import ast
import inspect
from typing import TYPE_CHECKING

import orjson

from fireman.common import measurements as contract
from fireman.common.schema import FEATURE_NAMES

if TYPE_CHECKING:
    from fireman.monitoring.drift import FeatureDrift, WindowDrift


def parse_line(line: str) -> tuple[str, set[str], set[str]]:
    """(measurement, tag keys, field keys) of one line of line protocol without escaped characters."""
    head, fields, _time = line.split(" ")
    measurement, *tags = head.split(",")
    return measurement, {t.split("=")[0] for t in tags}, {f.split("=")[0] for f in fields.split(",")}


def test_predictions_match_the_scorer_encoding() -> None:
    from fireman.common.model import Lineage
    from fireman.serving.codec import decode_batch, encode_predictions, shadow_lines

    event = {"event_id": "e1", "sensor_id": "s1", "timestamp": 1_700_000_000_000, "features": {"Cont_1": 1.0}}
    batch = decode_batch([orjson.dumps(event)], FEATURE_NAMES)
    _, lines, _ = encode_predictions(batch, [1], [0.9], Lineage("m", "3", "run"), 1_700_000_000_050)
    shadow = shadow_lines(batch, [0], [0.2], "4", 1_700_000_000_060)
    for line, role in ((lines[0], contract.ROLE_PRODUCTION), (shadow[0], contract.ROLE_SHADOW)):
        measurement, tags, fields = parse_line(line)
        assert measurement == contract.PREDICTIONS.name
        assert tags == contract.PREDICTIONS.tags
        assert fields == contract.PREDICTIONS.fields
        assert f",role={role}," in line


def test_model_events_match_the_scorer() -> None:
    from fireman.serving import reload, scorer

    point = reload.model_event("switch", "m", {"to_version": "2"})
    assert point.measurement == contract.MODEL_EVENTS.name
    assert set(point.tags) == contract.MODEL_EVENTS.tags
    # The fields are dict literals at the model_event(...) call sites: collect their keys.
    written: set[str] = set()
    for module in (reload, scorer):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "model_event":
                fields = node.args[2]
                assert isinstance(fields, ast.Dict)
                written |= {k.value for k in fields.keys if isinstance(k, ast.Constant)}
    assert written == contract.MODEL_EVENTS.fields


def test_measurements_match_the_sink() -> None:
    from fireman.streaming.sink import event_point

    event = {"event_id": "e1", "sensor_id": "s1", "timestamp": 1_700_000_000_000, "features": {"Cont_1": 1.0}}
    point = event_point(orjson.dumps(event), contract.MEASUREMENTS.name)
    assert point.measurement == contract.MEASUREMENTS.name
    assert set(point.tags) == contract.MEASUREMENTS.tags
    assert set(point.fields) <= contract.MEASUREMENTS.fields
    assert "event_id" in point.fields


def test_drift_and_performance_match_the_monitor() -> None:
    from fireman.common.confusion import Confusion
    from fireman.monitoring.drift import FeatureDrift
    from fireman.monitoring.points import drift_points, performance_point, untested_point
    from fireman.monitoring.windows import Window, WindowKey

    key = WindowKey("m", "2", 1_700_000_000_000_000_000)
    drift = _window_drift(
        [FeatureDrift("Cont_1", 0.1, 0.01, True, "ks"), FeatureDrift("Cont_2", 0.3, 0.6, False, "ks")]
    )
    points = drift_points(key, drift, events=2500, windows=3)
    assert {p.measurement for p in points} == {contract.DRIFT.name}
    assert set().union(*(p.tags for p in points)) == contract.DRIFT.tags
    assert contract.DRIFT.fields <= set().union(*(p.fields for p in points))
    untested = untested_point(key, 60, 1, "60 events, fewer than the minimum 100 (closed by idle)")
    assert untested.measurement == contract.DRIFT.name and untested.time_ns == points[0].time_ns
    assert set(untested.tags) == set(points[0].tags)
    assert set(untested.fields) <= contract.DRIFT.fields and untested.fields["tested"] == 0

    window = Window(
        key=key, first_ms=0, opened=0.0, confusion=Confusion(tp=3, fp=1, tn=5, fn=1), predictions=10
    )
    performance = performance_point(window)
    assert performance.measurement == contract.PERFORMANCE.name
    assert set(performance.tags) == contract.PERFORMANCE.tags
    assert contract.PERFORMANCE.fields <= set(performance.fields)


def test_monitor_stats_points_match_the_contract() -> None:
    from fireman.monitoring.coverage import Coverage
    from fireman.monitoring.points import monitor_stats_point
    from tests.unit.test_monitoring_windows import Clock, make_book

    coverage = Coverage(scored=100, tested=80, untested=20, windows_tested=2, windows_untested=1)
    book = make_book(Clock(), [])
    point = monitor_stats_point("fireman-monitor", coverage, 120, book, 1_700_000_000 * 10**9)
    assert point.measurement == contract.MONITOR_STATS.name
    assert set(point.tags) == contract.MONITOR_STATS.tags
    assert set(point.fields) == contract.MONITOR_STATS.fields
    assert point.fields["coverage"] == 0.8


def test_consumer_lag_points_match_the_contract() -> None:
    from fireman.dashboard.lag import GroupLag

    point = GroupLag("fireman-scorer", 7, 4, at=1_700_000_003.7).point(interval_s=5)
    assert point.measurement == contract.CONSUMER_LAG.name
    assert set(point.tags) == contract.CONSUMER_LAG.tags
    assert set(point.fields) == contract.CONSUMER_LAG.fields
    # Floored to the interval, so two samplers write the same point.
    assert point.time_ns == 1_700_000_000 * 10**9
    assert point.fields == {"lag": 7, "partitions": 4}


def test_live_comparison_points_match_the_monitor() -> None:
    from fireman.common.live_evaluation import LiveComparison
    from fireman.monitoring.points import live_comparison_point

    comparison = LiveComparison(
        champion_version="2",
        challenger_version="3",
        events=10,
        champion={"accuracy": 0.9, "f1": 0.8},
        challenger={"accuracy": 0.95, "f1": 0.85},
        shadow_predictions=12,
        since_ms=0,
        until_ms=1,
    )
    point = live_comparison_point("m", comparison, 1_700_000_000 * 10**9)
    assert point.measurement == contract.LIVE_COMPARISON.name
    assert set(point.tags) == contract.LIVE_COMPARISON.tags
    assert set(point.fields) == contract.LIVE_COMPARISON.fields


def test_alerts_of_both_kinds_match_the_contract() -> None:
    from fireman.monitoring.alerts import Shortfall, Streak, drift_alert_point, performance_alert_point
    from fireman.monitoring.windows import WindowKey

    key = WindowKey("m", "2", 1_700_000_000_000_000_000)
    drift = _window_drift([])
    run = Streak(2, key.start_ns - 1)
    points = [
        drift_alert_point(key, drift, 0.5, run, 2),
        performance_alert_point(key, Shortfall("f1", 0.5, 0.9), 0.1, 120, run, 2),
    ]
    assert {p.tags["kind"] for p in points} == {contract.ALERT_DRIFT, contract.ALERT_PERFORMANCE}
    assert all(set(p.tags) == contract.ALERTS.tags for p in points)
    assert set().union(*(p.fields for p in points)) == contract.ALERTS.fields


def _window_drift(features: list[FeatureDrift]) -> WindowDrift:
    """A drifting window (half its two tested features) with the given per-feature results."""
    from fireman.monitoring.drift import WindowDrift

    return WindowDrift(
        window_size=100,
        missing_share=0.2,
        tested_features=2,
        drifted_features=1,
        share_drifted_features=0.5,
        dataset_drift=True,
        prediction_drift_score=0.1,
        features=features,
    )
