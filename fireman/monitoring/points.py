"""The InfluxDB points the monitor writes (``drift``, ``performance``, ``live_comparison``,
``monitor_stats``; ``alerts`` are :mod:`fireman.monitoring.alerts`'), and the one way it writes them.

Every point of a window is at the window's start time (its first event's point time), so writing a
window again (a replay, or more labels arriving) overwrites it instead of adding a point. A window
that merged several (they waited for the drift worker) starts where the first of them started, and
says how many events and windows it covers. A window whose drift cannot be tested gets a window point
too, with ``tested=0`` and the reason, and no drift fields (readers selecting those do not see it).
"""

from __future__ import annotations

import threading

from fireman.common.influx import InfluxClient, InfluxUnavailable, Point
from fireman.common.live_evaluation import LiveComparison
from fireman.common.measurements import DRIFT, LIVE_COMPARISON, MONITOR_STATS, PERFORMANCE
from fireman.common.retry import Backoff
from fireman.monitoring.coverage import Coverage
from fireman.monitoring.drift import WindowDrift
from fireman.monitoring.windows import Window, WindowBook, WindowKey


def write_points(client: InfluxClient, points: list[Point], stop: threading.Event, backoff: Backoff) -> bool:
    """Write, retrying while InfluxDB is unavailable; False if stopped before it succeeded."""
    try:
        for attempt in backoff.retrying(
            InfluxUnavailable, sleep=stop.wait, give_up=stop.is_set, failure="InfluxDB unavailable"
        ):
            with attempt:
                client.write(points)
    except InfluxUnavailable:
        return False
    return True


def drift_points(key: WindowKey, drift: WindowDrift, events: int, windows: int = 1) -> list[Point]:
    tags = {"model_version": key.version}
    window = Point(
        DRIFT.name,
        {
            "tested": 1,
            "reason": "",  # overwrites the reason of an earlier untested write of the same window
            "events": events,
            "merged_windows": windows,
            "share_drifted_features": drift.share_drifted_features,
            "drifted_features": drift.drifted_features,
            "tested_features": drift.tested_features,
            "dataset_drift": int(drift.dataset_drift),
            "window_size": drift.window_size,
            "missing_share": drift.missing_share,
            # Absent (not written) when the reference has no scores or the window too few.
            "prediction_drift_score": drift.prediction_drift_score
            if drift.prediction_drift_score is not None
            else float("nan"),
        },
        key.start_ns,
        tags,
    )
    per_feature = []
    for feature in drift.features:
        fields: dict[str, float | int] = {"missing_share": feature.missing_share}
        if feature.drift_score is not None:
            fields["drift_score"] = feature.drift_score
            fields["drifted"] = int(bool(feature.drifted))
        per_feature.append(Point(DRIFT.name, fields, key.start_ns, {**tags, "feature": feature.feature}))
    return [window, *per_feature]


def untested_point(key: WindowKey, events: int, windows: int, reason: str) -> Point:
    return Point(
        DRIFT.name,
        {"tested": 0, "reason": reason, "events": events, "merged_windows": windows},
        key.start_ns,
        {"model_version": key.version},
    )


def monitor_stats_point(group: str, coverage: Coverage, labels: int, book: WindowBook, time_ns: int) -> Point:
    """The monitor's counters since it started: drift coverage and what became of the ``labels`` received.

    The time is rounded by the caller, so a rewrite overwrites.
    """
    share = coverage.share
    counts = book.stats
    return Point(
        MONITOR_STATS.name,
        {
            "events_scored": coverage.scored,
            "events_tested": coverage.tested,
            "events_untested": coverage.untested,
            "events_waiting": coverage.waiting,
            "coverage": share if share is not None else float("nan"),
            "windows_tested": coverage.windows_tested,
            "windows_untested": coverage.windows_untested,
            "windows_merged": coverage.windows_merged,
            "labels_received": labels,
            "labels_applied": counts.labels_applied,
            "labels_early": counts.labels_early,
            "labels_waiting": len(book.early_labels),
            "labels_unknown": counts.labels_unknown,
            "labels_expired": counts.labels_expired,
        },
        time_ns,
        {"group": group},
    )


def performance_point(window: Window) -> Point:
    confusion = window.confusion
    return Point(
        PERFORMANCE.name,
        {
            **confusion.metrics(),
            "n_labelled": confusion.n,
            "n_predictions": window.predictions,
            "label_coverage": confusion.n / window.predictions if window.predictions else 0.0,
            "tp": confusion.tp,
            "fp": confusion.fp,
            "tn": confusion.tn,
            "fn": confusion.fn,
        },
        window.key.start_ns,
        {"model_version": window.key.version},
    )


def live_comparison_point(model_name: str, comparison: LiveComparison, time_ns: int) -> Point:
    """Both versions' live accuracy and F1 on the same labelled events; NaN (no events yet) is left out."""
    return Point(
        LIVE_COMPARISON.name,
        {
            "events": comparison.events,
            "champion_accuracy": comparison.champion["accuracy"],
            "champion_f1": comparison.champion["f1"],
            "challenger_accuracy": comparison.challenger["accuracy"],
            "challenger_f1": comparison.challenger["f1"],
        },
        time_ns,
        {
            "model_name": model_name,
            "champion_version": comparison.champion_version,
            "challenger_version": comparison.challenger_version,
        },
    )
