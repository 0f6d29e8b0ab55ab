"""InfluxQL for each panel, and the shaping of rows into chart-ready series.

Every chart shares one x range ``[start, end]`` in epoch seconds and one bucket size, so the page
can line the charts up and draw model switches at the same place on each. Rates (ingest,
predictions) stop at the last complete bucket: the bucket in progress would always dip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fireman.common.influx import InfluxClient
from fireman.common.influx import quote_identifier as q
from fireman.common.measurements import (
    CONSUMER_LAG,
    DRIFT,
    LIVE_COMPARISON,
    MEASUREMENTS,
    MODEL_EVENTS,
    PERFORMANCE,
    PREDICTIONS,
    PRODUCTION_ONLY,
)
from fireman.common.schema import FEATURE_NAMES

NICE_BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def bucket_for(window_s: int, max_points: int) -> int:
    """The smallest round bucket that keeps a chart at or under ``max_points`` buckets."""
    wanted = window_s / max_points
    return next((b for b in NICE_BUCKETS_S if b >= wanted), NICE_BUCKETS_S[-1])


@dataclass(frozen=True)
class Window:
    start_s: int
    now_s: float
    bucket_s: int

    @classmethod
    def ending(cls, now_s: float, window_s: int, max_points: int) -> Window:
        bucket = bucket_for(window_s, max_points)
        return cls(start_s=int(now_s - window_s) // bucket * bucket, now_s=now_s, bucket_s=bucket)

    @property
    def complete_end_s(self) -> int:
        """End of the last complete bucket."""
        return int(self.now_s) // self.bucket_s * self.bucket_s

    def where(self, complete_only: bool = False) -> str:
        end = self.complete_end_s if complete_only else math.ceil(self.now_s)
        return f"time >= {self.start_s}s AND time < {end}s"


def series_panel(x: list[float], series: Mapping[str, list[float | None]], **extra: Any) -> dict[str, Any]:
    """The panel shape the page draws: shared x, one value list per named series."""
    values = [{"label": label, "values": data} for label, data in series.items()]
    points = sum(1 for entry in values for v in entry["values"] if v is not None)
    return {"x": x, "series": values, "points": points, **extra}


def align(
    rows_by_series: Mapping[str, Iterable[tuple[float, float | None]]],
) -> tuple[list[float], dict[str, list[float | None]]]:
    """Put series sampled at different times on one x axis, with None where a series has no value."""
    by_label = {label: dict(rows) for label, rows in rows_by_series.items()}
    x = sorted({t for values in by_label.values() for t in values})
    return x, {label: [values.get(t) for t in x] for label, values in by_label.items()}


def _seconds(row: Mapping[str, Any]) -> float:
    return float(row["time"]) / 1000.0


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def ingest(client: InfluxClient, window: Window) -> dict[str, Any]:
    b = window.bucket_s
    rows = client.query(
        f"SELECT count({q('event_id')}) AS n FROM {q(MEASUREMENTS.name)} "
        f"WHERE {window.where(complete_only=True)} GROUP BY time({b}s) fill(0)"
    )
    x = [_seconds(r) for r in rows]
    rate: list[float | None] = [float(r["n"] or 0) / b for r in rows]
    total = int(sum(r["n"] or 0 for r in rows))
    return series_panel(x, {"events/s": rate}, unit="events/s", total=total)


def predictions(client: InfluxClient, window: Window) -> dict[str, Any]:
    # prediction is a field (0/1), not a tag: its sum is the spam count, and count minus sum the rest.
    b = window.bucket_s
    rows = client.query(
        f"SELECT count({q('prediction')}) AS n, sum({q('prediction')}) AS spam FROM {q(PREDICTIONS.name)} "
        f"WHERE {PRODUCTION_ONLY} AND {window.where(complete_only=True)} GROUP BY time({b}s) fill(0)"
    )
    x = [_seconds(r) for r in rows]
    spam = [float(r["spam"] or 0) for r in rows]
    total = [float(r["n"] or 0) for r in rows]
    return series_panel(
        x,
        {
            "class 0 (ham)/s": [(n - s) / b for n, s in zip(total, spam, strict=True)],
            "class 1 (spam)/s": [s / b for s in spam],
        },
        unit="predictions/s",
        total={"0": int(sum(total) - sum(spam)), "1": int(sum(spam))},
    )


def performance(client: InfluxClient, window: Window) -> dict[str, Any]:
    rows = client.query(
        f"SELECT mean({q('accuracy')}) AS accuracy, mean({q('f1')}) AS f1 FROM {q(PERFORMANCE.name)} "
        f"WHERE {window.where()} GROUP BY time({window.bucket_s}s), {q('model_version')} fill(none)"
    )
    by_version: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_version.setdefault(str(row.get("model_version") or "?"), []).append(row)
    series: dict[str, list[tuple[float, float | None]]] = {}
    for version in sorted(by_version, key=_version_key):
        chunk = by_version[version]
        series[f"v{version} accuracy"] = [(_seconds(r), _number(r["accuracy"])) for r in chunk]
        series[f"v{version} F1"] = [(_seconds(r), _number(r["f1"])) for r in chunk]
    x, aligned = align(series)
    latest = {
        version: {"accuracy": _number(chunk[-1]["accuracy"]), "f1": _number(chunk[-1]["f1"])}
        for version, chunk in by_version.items()
    }
    return series_panel(x, aligned, unit="", versions=sorted(by_version, key=_version_key), latest=latest)


def shadow(client: InfluxClient, window: Window) -> dict[str, Any]:
    """The challenger (shadow) against production on the same labelled events, from the monitor."""
    roles = {"champion": "production", "challenger": "shadow"}  # field prefix -> the role it shows
    fields = [f"{side}_{metric}" for side in roles for metric in ("accuracy", "f1")]
    means = ", ".join(f"mean({q(field)}) AS {q(field)}" for field in fields)
    rows = client.query(
        f"SELECT {means}, last({q('events')}) AS events FROM {q(LIVE_COMPARISON.name)} "
        f"WHERE {window.where()} GROUP BY time({window.bucket_s}s), {q('champion_version')}, "
        f"{q('challenger_version')} fill(none)"
    )
    series: dict[str, list[tuple[float, float | None]]] = {}
    for row in sorted(rows, key=lambda r: r["time"]):
        t = _seconds(row)
        for side, role in roles.items():
            for metric, name in (("accuracy", "accuracy"), ("f1", "F1")):
                label = f"{role} v{row.get(f'{side}_version') or '?'} {name}"
                series.setdefault(label, []).append((t, _number(row[f"{side}_{metric}"])))
    x, aligned = align(series)
    latest = None
    if rows:
        last = max(rows, key=lambda r: r["time"])
        latest = {
            "champion_version": last.get("champion_version") or "",
            "challenger_version": last.get("challenger_version") or "",
            "events": _number(last["events"]),
            **{side: {m: _number(last[f"{side}_{m}"]) for m in ("accuracy", "f1")} for side in roles},
        }
    return series_panel(x, aligned, unit="", latest=latest)


def drift(client: InfluxClient, window: Window) -> dict[str, Any]:
    # Per-feature points have no share_drifted_features field, so the mean only sees window points.
    rows = client.query(
        f"SELECT mean({q('share_drifted_features')}) AS share, max({q('dataset_drift')}) AS dataset_drift "
        f"FROM {q(DRIFT.name)} WHERE {window.where()} GROUP BY time({window.bucket_s}s) fill(none)"
    )
    x = [_seconds(r) for r in rows]
    panel = series_panel(x, {"share of drifted features": [_number(r["share"]) for r in rows]}, unit="share")
    panel["dataset_drift"] = [_number(r["dataset_drift"]) for r in rows]
    panel.update(_drifted_features(client, window))
    return panel


def _drifted_features(client: InfluxClient, window: Window) -> dict[str, Any]:
    """The features of the latest drift window, most drifted first."""
    rows = client.query(
        f"SELECT {q('drift_score')}, {q('drifted')} FROM {q(DRIFT.name)} WHERE {window.where()} "
        f"GROUP BY {q('feature')} ORDER BY time DESC LIMIT 1"
    )
    rows = [r for r in rows if r.get("feature") and r.get("drift_score") is not None]
    if not rows:
        return {"features": [], "features_at": None}
    latest = max(r["time"] for r in rows)
    current = [r for r in rows if r["time"] == latest]
    # drift_score is a p-value or a distance depending on the test Evidently picked, so it cannot rank
    # features across tests: drifted ones first, then the schema's order.
    order = {name: i for i, name in enumerate(FEATURE_NAMES)}
    current.sort(key=lambda r: (not r.get("drifted"), order.get(r["feature"], len(order)), r["feature"]))
    features = [
        {"feature": r["feature"], "drift_score": float(r["drift_score"]), "drifted": bool(r.get("drifted"))}
        for r in current
    ]
    return {"features": features, "features_at": latest / 1000.0}


def model_events(client: InfluxClient, window: Window) -> dict[str, Any]:
    rows = client.query(f"SELECT * FROM {q(MODEL_EVENTS.name)} WHERE {window.where()} ORDER BY time ASC")
    events = [
        {
            "time": _seconds(r),
            "event": r.get("event") or "",
            "model_name": r.get("model_name") or "",
            "from_version": r.get("from_version") or "",
            "to_version": r.get("to_version") or "",
            "load_seconds": _number(r.get("load_seconds")),
            "reason": r.get("reason") or "",
        }
        for r in rows
    ]
    # The version that scored predictions, per bucket: what a switch changes, seen from the output.
    served = client.query(
        f"SELECT last({q('model_version')}) AS version FROM {q(PREDICTIONS.name)} "
        f"WHERE {PRODUCTION_ONLY} AND {window.where()} GROUP BY time({window.bucket_s}s) fill(none)"
    )
    x = [_seconds(r) for r in served]
    versions = [_version_number(r["version"]) for r in served]
    panel = series_panel(x, {"serving version": versions}, unit="version")
    panel["events"] = events
    panel["points"] += len(events)
    return panel


def consumer_lag(client: InfluxClient, window: Window) -> dict[str, Any]:
    rows = client.query(
        f"SELECT max({q('lag')}) AS lag FROM {q(CONSUMER_LAG.name)} WHERE {window.where()} "
        f"GROUP BY time({window.bucket_s}s), {q('group')} fill(none)"
    )
    series: dict[str, list[tuple[float, float | None]]] = {}
    for row in rows:
        series.setdefault(str(row.get("group") or "?"), []).append((_seconds(row), _number(row["lag"])))
    x, aligned = align(dict(sorted(series.items())))
    return series_panel(x, aligned, unit="messages")


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 30, version)


def _version_number(version: Any) -> float | None:
    text = str(version) if version is not None else ""
    return float(text) if text.isdigit() else None


PANELS: dict[str, tuple[str, Callable[[InfluxClient, Window], dict[str, Any]]]] = {
    "ingest": ("Ingest rate", ingest),
    "predictions": ("Predictions per class", predictions),
    "performance": ("Online accuracy and F1 by model version", performance),
    "shadow": ("Shadow vs production", shadow),
    "drift": ("Drift share and drifted features", drift),
    "model_events": ("Model switches", model_events),
    "lag": ("Consumer lag", consumer_lag),
}

# What each panel looks like before anything was written (the database does not exist yet).
EMPTY: dict[str, dict[str, Any]] = {
    "ingest": {"unit": "events/s", "total": 0},
    "predictions": {"unit": "predictions/s", "total": {"0": 0, "1": 0}},
    "performance": {"unit": "", "versions": [], "latest": {}},
    "shadow": {"unit": "", "latest": None},
    "drift": {"unit": "share", "dataset_drift": [], "features": [], "features_at": None},
    "model_events": {"unit": "version", "events": []},
    "lag": {"unit": "messages"},
}


def empty(name: str) -> dict[str, Any]:
    return series_panel([], {}, **EMPTY[name])
