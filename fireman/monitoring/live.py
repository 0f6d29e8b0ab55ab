"""The challenger against production, live: a thread of the monitor that writes ``live_comparison``.

Every ``live_comparison_interval_s``, when the registry has a challenger alias (a version the scorer
scores in shadow), it runs the same comparison the live promotion gate decides on
(``fireman.common.live_evaluation``) and writes one point: both versions' accuracy and F1 on the
labelled events both scored. It is a periodic InfluxDB query, so it runs beside the monitor's reading
loop, never in it. A failure (MLflow or InfluxDB down, a bad answer) is logged and tried again at the
next interval; it never stops the monitor.
"""

from __future__ import annotations

import logging
import threading
import time

from fireman.common.influx import InfluxClient
from fireman.common.live_evaluation import LiveComparison, compare
from fireman.common.model_registry import RegistryClient
from fireman.monitoring.points import live_comparison_point, write_points
from fireman.monitoring.settings import MonitorSettings

log = logging.getLogger(__name__)


class LiveComparisonWorker:
    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.comparisons = 0  # points written, for logs and tests
        self.last: LiveComparison | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-comparison", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        with InfluxClient(self.settings.influxdb) as influx, RegistryClient(self.settings.mlflow) as registry:
            while not self._stop.is_set():
                try:
                    self.compare_once(influx, registry)
                except Exception as exc:
                    log.warning("live comparison failed (next try in %.0f s): %s", self._interval(), exc)
                self._stop.wait(self._interval())

    def _interval(self) -> float:
        return self.settings.live_comparison_interval_s

    def compare_once(self, influx: InfluxClient, registry: RegistryClient) -> LiveComparison | None:
        """One comparison and its point, or None when there is no challenger to compare."""
        mlflow = self.settings.mlflow
        challenger = registry.version_by_alias(mlflow.model_name, mlflow.challenger_alias)
        if challenger is None:
            return None
        champion = registry.version_by_alias(mlflow.model_name, mlflow.production_alias)
        if champion is None or champion.version == challenger.version:
            return None
        comparison = compare(influx, champion.version, challenger.version, self.settings.live)
        # The time floored to the interval: a second monitor comparing at the same moment overwrites.
        interval_ns = max(1, int(self._interval() * 1e9))
        at = time.time_ns() // interval_ns * interval_ns
        point = live_comparison_point(mlflow.model_name, comparison, at)
        if not write_points(influx, [point], self._stop, self.settings.influxdb.backoff()):
            return None  # stopping
        self.comparisons += 1
        self.last = comparison
        log.info(
            "live: v%s (shadow) accuracy %.4f, F1 %.4f; v%s (production) %.4f, %.4f; %d labelled events",
            comparison.challenger_version,
            comparison.challenger["accuracy"],
            comparison.challenger["f1"],
            comparison.champion_version,
            comparison.champion["accuracy"],
            comparison.champion["f1"],
            comparison.events,
        )
        return comparison
