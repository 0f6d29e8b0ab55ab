"""``fireman monitor``: drift windows and online accuracy, in a process of its own, off the scoring path.

The main loop consumes ``measurements``, ``predictions`` and ``labels`` in its own consumer group,
joins them (:mod:`fireman.monitoring.windows`), hands closed windows to the drift worker thread (Evidently
takes ~1.5 s of CPU per test, so consumption goes on meanwhile), writes ``performance`` points for
windows that got labels, and commits the offsets of every message whose outputs are in InfluxDB
(:mod:`fireman.monitoring.offsets`). On stop, the window under test is finished and committed; open and
waiting windows are not, so a restart replays them.

Beside it, a thread compares the challenger (scored in shadow) with production every
``live_comparison_interval_s`` (:mod:`fireman.monitoring.live`).

The monitor shares the machine with the scorer, so the drift worker may use at most ``drift_cpu_budget``
of a core: after a test, it waits until its CPU time is back within that share
(:class:`~fireman.monitoring.pacing.CpuShare`; the reading thread keeps to ``intake_cpu_budget`` the same
way). While the scorer's consumer group is more than ``yield_lag`` events behind, both threads keep to
``yield_cpu_budget`` instead (:mod:`fireman.monitoring.priority`): the scorer is on the path to a
prediction, the monitor is not. Every scored event still takes part in a drift test: a window is
tested on a bounded sample of its rows (:mod:`fireman.monitoring.sample`; only sampled measurements
are parsed), and windows that close while the worker is busy or pausing wait, merging when too many
pile up (:mod:`fireman.monitoring.pending`). The worker is fed from the main loop on every iteration,
so once the stream is idle the last closed window is tested as soon as the budget allows. The share
of scored events in tested windows (*coverage*) is logged and written as ``monitor_stats``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fireman.common.events import feature_row, peek_event_id
from fireman.common.influx import InfluxClient, InfluxError, InfluxUnavailable, Point
from fireman.common.metrics import Family, Snapshot, StatsCollector
from fireman.common.runtime import freeze_heap
from fireman.monitoring.alerts import Alerts
from fireman.monitoring.coverage import Coverage
from fireman.monitoring.drift import WindowDrift, compute_drift
from fireman.monitoring.live import LiveComparisonWorker
from fireman.monitoring.offsets import OffsetTracker, Partition, Position
from fireman.monitoring.pacing import CpuShare
from fireman.monitoring.pending import PendingWindows
from fireman.monitoring.points import (
    drift_points,
    monitor_stats_point,
    performance_point,
    untested_point,
    write_points,
)
from fireman.monitoring.priority import GiveWay
from fireman.monitoring.reference import ReferenceStore
from fireman.monitoring.settings import MonitorSettings
from fireman.monitoring.windows import (
    BadMessage,
    ClosedWindow,
    Features,
    Prediction,
    Window,
    WindowBook,
    parse_label,
    parse_prediction,
)

if TYPE_CHECKING:
    from fireman.common.kafka_io import BatchConsumer, ConsumerLag, Record

log = logging.getLogger(__name__)

LAG_TIMEOUT_MS = 2000


@dataclass
class MonitorStats:
    measurements: int = 0
    predictions: int = 0
    labels: int = 0
    bad_messages: int = 0
    windows_tested: int = 0
    windows_skipped: int = 0  # not testable (too few events, no reference): written as untested
    windows_failed: int = 0
    events_tested: int = 0  # scored events in windows whose drift points are written
    events_untested: int = 0  # scored events in windows skipped or failed
    bad_feature_rows: int = 0  # sampled measurements the drift worker could not read
    performance_points: int = 0
    drift_seconds: float = 0.0
    paused_s: float = 0.0  # the reading thread's pauses to keep within intake_cpu_budget


class DriftWorker:
    """Runs Evidently on closed windows, in order; writes ``drift`` and ``alerts``; releases offsets."""

    def __init__(
        self,
        settings: MonitorSettings,
        references: ReferenceStore,
        release: Callable[[list[Position]], None],
        stats: MonitorStats,
        alerts: Alerts,
        give_way: GiveWay,
    ) -> None:
        self.settings = settings
        self.give_way = give_way
        self.references = references
        self.release = release
        self.stats = stats
        self.alerts = alerts
        self.queue: queue.Queue[ClosedWindow | None] = queue.Queue()
        self.results: list[tuple[ClosedWindow, WindowDrift]] = []  # the last few, for logs and tests
        self.done = threading.Event()
        self._client = InfluxClient(settings.influxdb)
        self._thread = threading.Thread(target=self._run, name="drift-worker", daemon=True)
        self._abort = threading.Event()
        self._windows = 0
        # After a window, no other starts until the CPU it spent beyond its budget is paid back, at the
        # share in force when the next window is due: lower while the monitor gives way to the scorer.
        # (Its CPU is counted in the worker thread; whether it may go on is asked on the reading thread.)
        self._ended = 0.0
        self._debt_s = 0.0
        self._lock = threading.Lock()
        self._busy = False

    def ready(self) -> bool:
        """Whether a window may be submitted now: none is under test and the budget's pause is over."""
        with self._lock:
            pause_s = self._debt_s / self.give_way.share(self.settings.drift_cpu_budget)
            return not self._busy and time.monotonic() >= self._ended + pause_s

    def start(self) -> None:
        self._thread.start()

    def submit(self, window: ClosedWindow) -> None:
        """Start testing a window; call only when :meth:`ready` (one window at a time)."""
        with self._lock:
            self._busy = True
        self.queue.put(window)

    def finish(self, timeout_s: float) -> None:
        """Process what is queued, then stop."""
        try:
            self.queue.put(None, timeout=timeout_s)
        except queue.Full:
            self._abort.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._abort.set()
            log.warning("drift worker still busy after %.0f s; its windows will be replayed", timeout_s)
        self._client.close()

    def _run(self) -> None:
        # Importing Evidently takes seconds: do it before the first window is due.
        import evidently.presets  # noqa: F401

        freeze_heap()  # from here on, the reading thread's garbage collections skip Evidently
        # Made here, after the import (not charged), because it reads this thread's CPU time.
        share = CpuShare(self.settings.drift_cpu_budget)

        while True:
            window = self.queue.get()
            if window is None or self._abort.is_set():
                break
            try:
                self._parse(window)
                self._handle(window)
            except Exception as exc:
                self.stats.windows_failed += 1
                log.exception("drift of window %s failed; the window is dropped", _describe(window))
                self._untested(window, f"drift test failed: {type(exc).__name__}: {exc}")
            finally:
                window.discard()  # its result is kept for a while; its rows (up to a MB) are not
                # Every window is charged: parsing, the test and the writes, tested or not.
                debt_s = share.pause_s() * share.share
                with self._lock:
                    self._busy = False
                    self._ended, self._debt_s = time.monotonic(), debt_s
        self.done.set()

    def _handle(self, window: ClosedWindow) -> None:
        settings = self.settings
        size = len(window.matrix)
        if size < settings.min_window_size:
            self.stats.windows_skipped += 1
            self._untested(window, _too_few(window, settings.min_window_size))
            return
        key = window.key
        reference = self.references.get(key.model_name, key.version)
        if reference is None:
            self.stats.windows_skipped += 1
            self._untested(window, f"no reference for version {key.version}")
            return
        self._windows += 1
        html = (
            self._report_path(window)
            if settings.html_report_every and (self._windows % settings.html_report_every == 0)
            else None
        )
        started = time.perf_counter()
        drift = compute_drift(
            reference,
            window.matrix,
            window.probabilities,
            settings.drift_threshold,
            settings.min_feature_values,
            html,
        )
        elapsed = time.perf_counter() - started
        self.stats.drift_seconds += elapsed
        for feature, reason in drift.untested.items():
            log.warning("window %s: %s left out of the drift test: %s", _describe(window), feature, reason)
        points = drift_points(key, drift, window.events, window.windows)
        try:
            alert = self.alerts.drift_alert(self._client, key, drift, self._abort)
        except InfluxUnavailable:
            return  # stopping: not released, so the window's events are replayed
        if not write_points(self._client, points, self._abort, settings.influxdb.backoff()):
            return  # stopping: not released, so the window's events are replayed
        if alert is not None and not self.alerts.write(self._client, alert, self._abort):
            return
        self.stats.windows_tested += 1
        self.stats.events_tested += window.events
        self.results = [*self.results[-49:], (window, drift)]
        self.release(window.positions)
        log.info(
            "window %s: %s, %d/%d features drifted (%.0f%%)%s, missing %.1f%%, prediction drift %s, %.2f s%s",
            _describe(window),
            _extent(window),
            drift.drifted_features,
            drift.tested_features,
            100 * drift.share_drifted_features,
            " DATASET DRIFT" if drift.dataset_drift else "",
            100 * drift.missing_share,
            f"{drift.prediction_drift_score:.3f}" if drift.prediction_drift_score is not None else "-",
            elapsed,
            f", report {drift.report_path}" if drift.report_path else "",
        )

    def _parse(self, window: ClosedWindow) -> None:
        """Parse the window's sample (its rows are kept raw until now); log the rows that cannot be read."""
        for (topic, partition, offset), reason in window.parse.bad:
            self.stats.bad_feature_rows += 1
            log.warning("left out of the drift test: %s[%d]@%d: %s", topic, partition, offset, reason)

    def _untested(self, window: ClosedWindow, reason: str) -> None:
        """Write that a window's drift was not tested, and why; then its events may be committed."""
        log.warning("window %s (%s): drift not tested: %s", _describe(window), _extent(window), reason)
        point = untested_point(window.key, window.events, window.windows, reason)
        if not write_points(self._client, [point], self._abort, self.settings.influxdb.backoff()):
            return  # stopping: not released, so the window's events are replayed
        self.stats.events_untested += window.events
        self.release(window.positions)

    def _report_path(self, window: ClosedWindow) -> Path:
        key = window.key
        name = f"drift-{key.model_name}-v{key.version}-{key.start_ns // 1_000_000}.html"
        return self.settings.state.root / "monitoring" / "reports" / name


def _describe(window: ClosedWindow) -> str:
    key = window.key
    return f"{key.model_name} v{key.version} @{key.start_ns // 1_000_000}"


def _extent(window: ClosedWindow) -> str:
    """How many events (and windows, once merged) a window covers, and how many rows its sample holds."""
    merged = f" in {window.windows} merged windows" if window.windows > 1 else ""
    sampled = f", {len(window.sample)} sampled" if len(window.sample) < window.events else ""
    return f"{window.events} events{merged}{sampled}"


def _too_few(window: ClosedWindow, minimum: int) -> str:
    rows = len(window.matrix)
    if rows == window.events:
        return f"{rows} events, fewer than the minimum {minimum} (closed by {window.reason})"
    return (
        f"{rows} events with readable features of {window.events}, fewer than the minimum {minimum} "
        f"(closed by {window.reason})"
    )


MONITOR_FAMILIES = [
    Family("measurements", "Measurements read from Kafka."),
    Family("predictions", "Predictions read from Kafka."),
    Family("labels", "Labels read from Kafka."),
    Family("bad_messages", "Messages that could not be read (logged and skipped)."),
    Family("windows_tested", "Windows (merged ones count once) whose drift was tested."),
    Family("windows_untested", "Windows written as not tested (too few events, no reference, a failure)."),
    Family("events_tested", "Scored events in windows whose drift was tested."),
    Family("events_untested", "Scored events in windows that could not be tested."),
    Family("paused_seconds", "Seconds the reading thread paused to keep within its CPU budget."),
    Family("gave_way_seconds", "Seconds the monitor kept to yield_cpu_budget while the scorer was behind."),
    Family("giving_way", "1 while the scorer's group is over yield_lag events behind, else 0."),
    Family("alerts", "Distinct alerts (drift and performance) this process raised."),
    Family("coverage", "Share of the scored events, through the drift worker, that were in a tested window."),
    Family("lag", "Messages behind the end of the monitor's partitions (all three topics)."),
    Family("drift_share", "Share of drifted features in the newest tested window, by model version."),
    Family("online_accuracy", "Accuracy from labels of the newest labelled window, by model version."),
]


def monitor_metrics(monitor: Monitor) -> StatsCollector:
    """The monitor's Prometheus families, read from its counters when scraped."""

    def read() -> Snapshot:
        stats, coverage = monitor.stats, monitor.coverage()
        counters = {
            "measurements": stats.measurements,
            "predictions": stats.predictions,
            "labels": stats.labels,
            "bad_messages": stats.bad_messages + stats.bad_feature_rows,
            "windows_tested": coverage.windows_tested,
            "windows_untested": coverage.windows_untested,
            "events_tested": coverage.tested,
            "events_untested": coverage.untested,
            "alerts": monitor.alerts.raised,
            "paused_seconds": stats.paused_s,
            "gave_way_seconds": monitor.give_way.yielded_s,
        }
        consumer = monitor._consumer
        gauges = {
            "coverage": coverage.share,
            "lag": consumer.last_lag if consumer is not None else None,
            "giving_way": float(monitor.give_way.behind),
        }
        drift: dict[tuple[str, ...], float] = {
            (window.key.version,): result.share_drifted_features
            for window, result in list(monitor.worker.results)
        }
        accuracy: dict[tuple[str, ...], float] = {}
        with contextlib.suppress(RuntimeError):  # a version added while copied: the next scrape has it
            accuracy = {(version,): value for version, value in dict(monitor.online_accuracy).items()}
        by_version: tuple[str, ...] = ("version",)
        labelled = {"drift_share": (by_version, drift), "online_accuracy": (by_version, accuracy)}
        return Snapshot(
            counters={name: float(value) for name, value in counters.items()},
            gauges=gauges,
            labelled_gauges=labelled,
        )

    return StatsCollector("monitor", MONITOR_FAMILIES, read)


class Monitor:
    """``on_alert`` is called with each alert point once it is written (from either of the monitor's
    threads; see :meth:`fireman.monitoring.alerts.Alerts.write`)."""

    def __init__(
        self,
        settings: MonitorSettings,
        references: ReferenceStore | None = None,
        on_alert: Callable[[Point], None] | None = None,
    ) -> None:
        self.settings = settings
        self.stats = MonitorStats()
        self.tracker = OffsetTracker()
        self.references = references or ReferenceStore(settings.mlflow, settings.reference_rows)
        self.alerts = Alerts(
            drift_threshold=settings.drift_threshold,
            drift_windows=settings.alert_windows,
            performance_margin=settings.performance_margin,
            performance_windows=settings.performance_alert_windows,
            min_labelled=settings.performance_min_labelled,
            backoff=settings.influxdb.backoff(),
            on_alert=on_alert,
        )
        self.book = WindowBook(
            window_size=settings.window_size,
            window_seconds=settings.window_seconds,
            join_timeout_s=settings.join_timeout_s,
            max_unjoined=settings.max_unjoined,
            label_wait_s=settings.label_wait_s,
            max_awaiting=settings.max_awaiting_labels,
            release=self._release_later,
            sample_rows=settings.sample_rows,
        )
        self.give_way = GiveWay(settings.scorer_group_id, settings.yield_lag, settings.yield_cpu_budget)
        self.worker = DriftWorker(
            settings, self.references, self.tracker.release, self.stats, self.alerts, self.give_way
        )
        self.pending = PendingWindows(settings.drift_queue)
        # The newest labelled window's accuracy per version, for the metrics endpoint (other thread).
        self.online_accuracy: dict[str, float] = {}
        self.live = LiveComparisonWorker(settings)
        self.ready = threading.Event()
        self._consumer: BatchConsumer | None = None
        # Holds and releases of a polled batch go to the tracker together (one lock, not one per
        # message), holds first: a message can be held and released within one batch.
        self._to_hold: list[Position] = []
        self._to_release: list[Position] = []
        self._dropped_logged = 0  # labels dropped as of the last progress report

    def run(self, stop: threading.Event) -> None:
        from fireman.common.kafka_io import BatchConsumer, admin_client, consumer_lag

        settings = self.settings
        kafka = settings.kafka
        topics = [kafka.topic_measurements, kafka.topic_predictions, kafka.topic_labels]
        client = InfluxClient(settings.influxdb)
        try:
            client.ensure_database()
        except InfluxError as exc:
            log.warning("InfluxDB not ready (%s); writes will be retried", exc)
        consumer = BatchConsumer(kafka, settings.group_id, topics, on_revoke=self._on_revoke)
        self._consumer = consumer
        # A short timeout: the lag is read on the reading thread, which must not hang on a lost broker.
        admin = admin_client(kafka, timeout_ms=LAG_TIMEOUT_MS)
        scorer_reads = {settings.scorer_group_id: [kafka.topic_measurements]}

        def scorer_lag() -> ConsumerLag:
            try:
                return consumer_lag(admin, scorer_reads)
            finally:
                admin.poll(0)  # hands librdkafka's queued log lines to logging

        self.give_way.watch(scorer_lag)
        self.worker.start()
        self.live.start()
        self.ready.set()
        log.info(
            "monitoring %s: windows of %d events or %.0f s, drift threshold %.0f%% for %d windows",
            ", ".join(topics),
            settings.window_size,
            settings.window_seconds,
            100 * settings.drift_threshold,
            settings.alert_windows,
        )
        next_flush = next_log = time.monotonic()
        share = CpuShare(settings.intake_cpu_budget)
        try:
            while not stop.is_set():
                self.give_way.check()
                pause = share.pause_s(self.give_way.share(settings.intake_cpu_budget))
                if pause:
                    self.stats.paused_s += pause
                    if stop.wait(pause):
                        break
                records = consumer.poll(settings.max_batch, settings.poll_timeout_ms / 1000)
                now = time.monotonic()
                joined = self._read(records, now)
                # Partitions interleave in a batch; event order keeps windows close to time order.
                joined.sort(key=lambda pair: pair[0].timestamp)
                closed = []
                for prediction, features in joined:
                    closed.extend(self.book.add_scored(prediction, features))
                closed.extend(self.book.expire())
                for window in closed:
                    self.pending.add(window)
                self._settle()  # before the worker may release any of these windows' positions
                if self.worker.ready():
                    waiting = self.pending.take()
                    if waiting is not None:
                        self.worker.submit(waiting)
                if now >= next_flush:
                    self._flush_performance(client, stop)
                    next_flush = now + settings.performance_flush_s
                consumer.commit(self.tracker.committable())
                if now >= next_log:
                    self._log_progress(client)
                    next_log = now + settings.log_interval_s
        finally:
            self._shutdown(client, consumer, stop)

    # --- messages -----------------------------------------------------------------------------

    def _read(self, records: list[Record], now: float) -> list[tuple[Prediction, Features]]:
        """Take in a polled batch; returns the events it completed (features and prediction)."""
        # Runs for every message of two topics per event: the monitor's largest cost per event, hence
        # the local names and one loop without a call per message beyond the decode and the join.
        kafka = self.settings.kafka
        measurements, predictions = kafka.topic_measurements, kafka.topic_predictions
        stats, book, hold = self.stats, self.book, self._to_hold.append
        joined: list[tuple[Prediction, Features]] = []
        last: dict[Partition, int] = {}
        for record in records:
            topic, partition, offset = record.topic(), record.partition(), record.offset()
            assert topic is not None and partition is not None and offset is not None
            last[(topic, partition)] = offset
            position = (topic, partition, offset)
            value = record.value()
            if isinstance(value, str):
                value = value.encode()
            try:
                if topic == measurements:
                    stats.measurements += 1
                    features = self._features(value, position, now)
                    hold(position)
                    prediction = book.add_features(features)
                    if prediction is not None:
                        joined.append((prediction, features))
                elif topic == predictions:
                    stats.predictions += 1
                    prediction = parse_prediction(value, position, now)
                    hold(position)
                    paired = book.add_prediction(prediction)
                    if paired is not None:
                        joined.append((prediction, paired))
                else:
                    self._on_label(value, position)
            except BadMessage as exc:
                stats.bad_messages += 1
                log.warning("skipping %s[%d]@%d: %s", topic, partition, offset, exc)
        self.tracker.seen_up_to(last)
        return joined

    @staticmethod
    def _features(value: bytes | None, position: Position, now: float) -> Features:
        event_id = peek_event_id(value) if value else None
        if event_id is None:  # not in the collector's form: parse it all now (and find poison early)
            event_id, row = feature_row(value)
            return Features(event_id, row, position, now)
        return Features(event_id, None, position, now, value)

    def _on_label(self, value: bytes | None, position: Position) -> None:
        self.stats.labels += 1
        event_id, label = parse_label(value)
        if self.book.apply_label(event_id, label, position):
            self._to_hold.append(position)  # released once the performance point is written

    def _release_later(self, positions: list[Position]) -> None:
        self._to_release.extend(positions)

    def _settle(self) -> None:
        if self._to_hold:
            self.tracker.hold(self._to_hold)
            self._to_hold = []
        if self._to_release:
            self.tracker.release(self._to_release)
            self._to_release = []

    # --- output -------------------------------------------------------------------------------

    def _flush_performance(self, client: InfluxClient, stop: threading.Event) -> None:
        windows = self.book.take_dirty()
        if not windows:
            return
        positions = [p for window in windows for p in window.label_positions]
        points = [performance_point(w) for w in windows]
        # Labels are released only once their windows are judged too, so a crash in between replays them.
        if not write_points(client, points, stop, self.settings.influxdb.backoff()) or not self._judge(
            client, windows, stop
        ):
            self.book.dirty.update(w.key for w in windows)
            return
        for window in windows:
            window.label_positions = []
            if window.confusion.n:
                self.online_accuracy[window.key.version] = window.confusion.metrics()["accuracy"]
        self.tracker.release(positions)
        self.stats.performance_points += len(windows)

    def _judge(self, client: InfluxClient, windows: list[Window], stop: threading.Event) -> bool:
        """Raise the performance alerts of windows whose labels changed; False if stopped first."""
        # Oldest first: a window's run reads the points of the earlier windows written just before.
        for window in sorted(windows, key=lambda w: w.key.start_ns):
            if window.confusion.n < self.settings.performance_min_labelled:
                continue
            holdout = self.references.holdout(window.key.model_name, window.key.version)
            if holdout is None:
                continue
            try:
                alert = self.alerts.performance_alert(client, window, holdout, stop)
            except InfluxUnavailable:
                return False
            if alert is not None and not self.alerts.write(client, alert, stop):
                return False
        return True

    def _on_revoke(self, partitions: list[Partition]) -> None:
        if self._consumer is not None:
            self._consumer.commit(self.tracker.committable(), asynchronous=False)
        self.tracker.forget(partitions)

    def coverage(self) -> Coverage:
        stats = self.stats
        return Coverage(
            scored=self.book.stats.joined,
            tested=stats.events_tested,
            untested=stats.events_untested,
            windows_tested=stats.windows_tested,
            windows_untested=stats.windows_skipped + stats.windows_failed,
            windows_merged=self.pending.merges,
        )

    def _log_progress(self, client: InfluxClient) -> None:
        book = self.book.stats
        stats = self.stats
        coverage = self.coverage()
        log.info(
            "read %d measurements, %d predictions, %d labels; joined %d; "
            "windows: %d tested, %d not tested (%d failed), %d merged while waiting; %s; %d alerts; "
            "labels counted %d (early %d; dropped: %d unknown events, %d expired windows); %d offsets held; "
            "paused %.0f s to keep within %.0f%% of a core; gave way to the scorer for %.0f s",
            stats.measurements,
            stats.predictions,
            stats.labels,
            book.joined,
            stats.windows_tested,
            coverage.windows_untested,
            stats.windows_failed,
            coverage.windows_merged,
            coverage.describe(),
            self.alerts.raised,
            book.labels_applied,
            book.labels_early,
            book.labels_unknown,
            book.labels_expired,
            self.tracker.held_count(),
            stats.paused_s,
            100 * self.settings.intake_cpu_budget,
            self.give_way.yielded_s,
        )
        dropped = book.labels_unknown + book.labels_expired
        if dropped > self._dropped_logged:
            log.warning(
                "%d label(s) dropped since the last report: their event was never scored within %.0f s, "
                "or its window had expired (%.0f s after closing)",
                dropped - self._dropped_logged,
                self.settings.join_timeout_s,
                self.settings.label_wait_s,
            )
            self._dropped_logged = dropped

        interval_ns = int(self.settings.log_interval_s * 1e9)
        point = monitor_stats_point(
            self.settings.group_id,
            coverage,
            stats.labels,
            self.book,
            time.time_ns() // interval_ns * interval_ns,
        )
        # One attempt: these are counters, and the next interval writes them again.
        try:
            client.write([point])
        except InfluxError as exc:
            log.warning("monitor_stats not written: %s", exc)

    def _shutdown(self, client: InfluxClient, consumer: BatchConsumer, stop: threading.Event) -> None:
        self.live.stop()
        try:
            self.worker.finish(timeout_s=60.0)
            self._flush_performance(client, stop)  # one attempt: stop is set
            consumer.commit(self.tracker.committable(), asynchronous=False)
        finally:
            self._log_progress(client)
            client.close()
            consumer.close()
            if self.pending:
                log.info(
                    "%d closed windows (%d events) not tested yet: replayed at the next start",
                    len(self.pending),
                    self.pending.events,
                )
            log.info("monitor stopped")
