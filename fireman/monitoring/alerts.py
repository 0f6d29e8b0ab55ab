"""When the monitor raises an alert, and the one way it writes one.

Two kinds, both in ``alerts`` (tags ``kind``, ``model_name``, ``model_version``). One alert per run of bad
windows: its time is the start of the window that made the run long enough, and every later window of
the same run rewrites that point (``consecutive_windows`` grows) instead of adding an alert:

- ``drift``: ``alert_windows`` consecutive windows of a version whose dataset drifted (covariate drift).
- ``performance``: ``performance_alert_windows`` consecutive judged windows of a version whose online
  accuracy or F1 is more than ``performance_margin`` (absolute) below what the version's training run
  measured on its hold-out (concept drift, or covariate drift that hurts). A window is judged once it
  has ``performance_min_labelled`` labels; windows with fewer are passed over, neither breaking nor
  extending a run. Both metrics are checked because a collapse of the spam class shows in F1 before
  accuracy (a model that stops flagging spam still gets most ham right); the alert names the metric
  furthest below its hold-out.

The run is counted from the points already in InfluxDB (``drift`` window points, ``performance``
points) of the same version, strictly before the window's start, plus the window itself: a restarted
monitor continues a run, and a replayed window finds the same history and writes the same alert. Only a
window that drifts or underperforms needs the history: one query of at most ``LOOKBACK`` points. A run
longer than that reports its onset ``LOOKBACK`` windows back, and from then on each window adds an alert
(a run that long means no retrain has helped for hours). ``onset_ns`` is the start of the run's first
window, where retraining from the new regime can begin.

Known limits: points carry the version, not the model name, so two models with the same version number
share a history; a window judged before an earlier one of the same version has its labels is not judged
again unless more of its own labels come.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from fireman.common.influx import InfluxClient, InfluxUnavailable, Point, quote_literal
from fireman.common.measurements import ALERT_DRIFT, ALERT_PERFORMANCE, ALERTS, DRIFT, PERFORMANCE
from fireman.common.retry import Backoff
from fireman.monitoring.drift import WindowDrift
from fireman.monitoring.points import write_points
from fireman.monitoring.windows import Window, WindowKey

log = logging.getLogger(__name__)

LOOKBACK = 200  # stored windows read back to count a run: bounds each query
NOTIFIED_MEMORY = 10_000  # alerts this process remembers having passed to ``on_alert``


@dataclass(frozen=True)
class Holdout:
    """What the version's training run measured on its hold-out (``mlflow.log_metrics`` keys)."""

    METRICS: ClassVar[tuple[str, str]] = ("accuracy", "f1")
    accuracy: float
    f1: float


@dataclass(frozen=True)
class Shortfall:
    metric: str
    value: float
    holdout: float


@dataclass(frozen=True)
class Streak:
    windows: int  # consecutive windows, this one included
    onset_ns: int  # start of the first of them
    # Start of the window that made the run ``required`` long: the alert's time for the whole run.
    # None while the run is shorter.
    raised_ns: int | None = None


def shortfall(accuracy: float | None, f1: float | None, holdout: Holdout, margin: float) -> Shortfall | None:
    """The metric furthest below its hold-out value when it is more than ``margin`` below; else None."""
    worst: Shortfall | None = None
    for metric, value in (("accuracy", accuracy), ("f1", f1)):
        if value is None or value != value:  # absent, or NaN (no label)
            continue
        reference = getattr(holdout, metric)
        if reference - value > margin and (worst is None or reference - value > worst.holdout - worst.value):
            worst = Shortfall(metric, value, reference)
    return worst


def streak(start_ns: int, previous: Iterable[tuple[int, bool | None]], required: int) -> Streak:
    """The run that a window counting towards an alert (starting at ``start_ns``) closes.

    ``previous``: the version's earlier windows, newest first, as (start ns, counts): True extends the
    run, False ends it, None (a window not judged) is passed over. ``required``: the windows an alert
    needs.
    """
    starts = [start_ns]  # newest first
    for time_ns, counts in previous:
        if counts is None:
            continue
        if not counts:
            break
        starts.append(time_ns)
    windows = len(starts)
    raised = starts[windows - required] if windows >= required else None
    return Streak(windows, starts[-1], raised)


def drifting(row: dict[str, Any]) -> bool | None:
    value = row.get("dataset_drift")
    return None if value is None else bool(value)


def underperforming(row: dict[str, Any], holdout: Holdout, margin: float, min_labelled: int) -> bool | None:
    labelled = row.get("n_labelled")
    if labelled is None or labelled < min_labelled:
        return None
    return shortfall(row.get("accuracy"), row.get("f1"), holdout, margin) is not None


def _alert_time(key: WindowKey, run: Streak) -> int:
    # One point per run: each later window of the run lands on the same time and tags, so it overwrites.
    return run.raised_ns if run.raised_ns is not None else key.start_ns


def drift_alert_point(
    key: WindowKey, drift: WindowDrift, threshold: float, run: Streak, required: int
) -> Point:
    drifted = drift.drifted
    return Point(
        ALERTS.name,
        {
            "share_drifted_features": drift.share_drifted_features,
            "threshold": threshold,
            "consecutive_windows": run.windows,
            "required_windows": required,
            "onset_ns": run.onset_ns,
            "drifted_features": len(drifted),
            "features": ",".join(drifted),
            "window_size": drift.window_size,
            "message": (
                f"{run.windows} consecutive windows with {drift.share_drifted_features:.0%} of features "
                f"drifted (threshold {threshold:.0%}) for {key.model_name} version {key.version}"
            ),
        },
        _alert_time(key, run),
        {"kind": ALERT_DRIFT, "model_name": key.model_name, "model_version": key.version},
    )


def performance_alert_point(
    key: WindowKey, short: Shortfall, margin: float, labelled: int, run: Streak, required: int
) -> Point:
    return Point(
        ALERTS.name,
        {
            "metric": short.metric,
            "value": short.value,
            "holdout": short.holdout,
            "margin": margin,
            "n_labelled": labelled,
            "consecutive_windows": run.windows,
            "required_windows": required,
            "onset_ns": run.onset_ns,
            "message": (
                f"{run.windows} consecutive windows more than {margin:.2f} below the hold-out for "
                f"{key.model_name} version {key.version}: online {short.metric} {short.value:.3f} "
                f"against {short.holdout:.3f} on {labelled} labels"
            ),
        },
        _alert_time(key, run),
        {"kind": ALERT_PERFORMANCE, "model_name": key.model_name, "model_version": key.version},
    )


class Alerts:
    """The alert rules against stored history, and :meth:`write`, the one way an alert is written.

    Shared by the drift worker's thread and the reading thread; each passes its own InfluxDB client.
    Query and write retry while InfluxDB is unavailable; ``InfluxUnavailable`` escapes only once
    ``stop`` is set, and the caller then leaves the window's offsets uncommitted so it is replayed.
    """

    def __init__(
        self,
        drift_threshold: float,
        drift_windows: int,
        performance_margin: float,
        performance_windows: int,
        min_labelled: int,
        backoff: Backoff,
        on_alert: Callable[[Point], None] | None = None,
    ) -> None:
        self.drift_threshold = drift_threshold
        self.drift_windows = drift_windows
        self.margin = performance_margin
        self.performance_windows = performance_windows
        self.min_labelled = min_labelled
        self.backoff = backoff
        self.on_alert = on_alert
        self.raised = 0  # distinct alerts written by this process
        self._lock = threading.Lock()
        self._notified: OrderedDict[tuple[Any, ...], None] = OrderedDict()

    def drift_alert(
        self, client: InfluxClient, key: WindowKey, drift: WindowDrift, stop: threading.Event
    ) -> Point | None:
        """The ``drift`` alert this tested window raises, if any."""
        if not drift.dataset_drift:
            return None
        rows = self._history(client, DRIFT.name, "dataset_drift", "AND feature = ''", key, stop)
        run = streak(key.start_ns, ((row["time"], drifting(row)) for row in rows), self.drift_windows)
        if run.windows < self.drift_windows:
            return None
        return drift_alert_point(key, drift, self.drift_threshold, run, self.drift_windows)

    def performance_alert(
        self, client: InfluxClient, window: Window, holdout: Holdout, stop: threading.Event
    ) -> Point | None:
        """The ``performance`` alert this window's labels raise so far, if any."""
        labelled = window.confusion.n
        if labelled < self.min_labelled:
            return None
        metrics = window.confusion.metrics()
        short = shortfall(metrics["accuracy"], metrics["f1"], holdout, self.margin)
        if short is None:
            return None
        key = window.key
        rows = self._history(client, PERFORMANCE.name, "accuracy, f1, n_labelled", "", key, stop)
        judged = (
            (row["time"], underperforming(row, holdout, self.margin, self.min_labelled)) for row in rows
        )
        run = streak(key.start_ns, judged, self.performance_windows)
        if run.windows < self.performance_windows:
            return None
        return performance_alert_point(key, short, self.margin, labelled, run, self.performance_windows)

    def write(self, client: InfluxClient, point: Point, stop: threading.Event) -> bool:
        """Write an alert (again: a run's later windows, more labels or a replay overwrite its point);
        False if stopped first.

        The first time this process writes a given alert it logs it and calls ``on_alert`` (whose
        failure is logged, never raised); rewrites update the point quietly. A restarted process
        notifies again: at least once per alert.
        """
        if not write_points(client, [point], stop, self.backoff):
            return False
        identity = (point.measurement, tuple(sorted(point.tags.items())), point.time_ns)
        with self._lock:
            first = identity not in self._notified
            self._notified[identity] = None
            if len(self._notified) > NOTIFIED_MEMORY:
                self._notified.popitem(last=False)
            if first:
                self.raised += 1
        if first:
            log.warning("%s ALERT: %s", str(point.tags.get("kind", "")).upper(), point.fields.get("message"))
            if self.on_alert is not None:
                try:
                    self.on_alert(point)
                except Exception:
                    log.exception("on_alert failed for the alert at %d; the alert is stored", point.time_ns)
        return True

    def _history(
        self,
        client: InfluxClient,
        measurement: str,
        fields: str,
        condition: str,
        key: WindowKey,
        stop: threading.Event,
    ) -> list[dict[str, Any]]:
        """The version's stored windows before this one, newest first (times in ns)."""
        statement = (
            f'SELECT {fields} FROM "{measurement}" WHERE model_version = {quote_literal(key.version)} '
            f"{condition} AND time < {key.start_ns} ORDER BY time DESC LIMIT {LOOKBACK}"
        )
        for attempt in self.backoff.retrying(
            InfluxUnavailable, sleep=stop.wait, give_up=stop.is_set, failure="InfluxDB unavailable"
        ):
            with attempt:
                return client.query(statement, epoch="ns")
        raise AssertionError("unreachable: the retry loop returns or raises")
