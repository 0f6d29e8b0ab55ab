"""What monitoring costs the scorer: scoring throughput with ``fireman monitor`` off and on, side by side.

The monitor runs as deployed: a process of its own (niced by ``FIREMAN_MONITOR_NICE``), in its own
consumer group, reading the same topics while the scorer works. Each run has fresh topics holding
the same pre-produced events, so both runs start from an identical backlog; off and on runs
alternate. The Evidently cost of one window (1,000 x 57 against the reference) is timed too, with
and without Evidently's HTML widgets.

For ``fireman bench scorer --with-monitoring``: wrap the scorer's measured run in
``with monitoring_running(monitor_settings_for(kafka, influxdb, mlflow)):``. The production version
needs a drift reference or the monitor skips drift; training logs one with every version, so a model
from ``fireman.bench.workload.train_production`` has it.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
from rich.console import Console
from rich.table import Table

from fireman.common import production_history
from fireman.common.model_registry import RegistryClient
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings, InfluxSettings, KafkaSettings, MlflowSettings
from fireman.monitoring.settings import MonitorSettings

console = Console()


@dataclass
class BenchOptions:
    events: int = 60_000
    repeats: int = 3  # the figure is the mean of at least 3 runs per mode
    windows: int = 5


def monitor_settings_for(
    kafka: KafkaSettings, influxdb: InfluxSettings, mlflow: MlflowSettings, **overrides: Any
) -> MonitorSettings:
    """Monitor settings for the given connections, in a consumer group of its own."""
    return MonitorSettings(
        kafka=kafka,
        influxdb=influxdb,
        mlflow=mlflow,
        **{"group_id": f"bench-monitor-{uuid.uuid4().hex[:8]}", **overrides},
    )


def _monitor_process(settings: MonitorSettings, stop: ProcessEvent, ready: ProcessEvent) -> None:
    from fireman.common.runtime import configure_logging
    from fireman.monitoring.monitor import Monitor

    configure_logging("WARNING")
    if settings.nice:
        os.nice(settings.nice)
    monitor = Monitor(settings)
    halt = threading.Event()

    def bridge() -> None:
        # Reference and Evidently load before the first window; count the monitor ready after that.
        monitor.ready.wait()
        monitor.references.get(settings.mlflow.model_name, _production_version(settings.mlflow))
        import evidently.presets  # noqa: F401

        ready.set()
        stop.wait()
        halt.set()

    threading.Thread(target=bridge, daemon=True).start()
    monitor.run(halt)


def _production_version(mlflow: MlflowSettings) -> str:
    with RegistryClient(mlflow) as client:
        version = production_history.production_version(client, mlflow)
    if version is None:
        raise RuntimeError(f"{mlflow.model_name!r} has no {mlflow.production_alias!r} version")
    return version


@contextmanager
def monitoring_running(settings: MonitorSettings, start_timeout_s: float = 180.0) -> Iterator[int]:
    """``fireman monitor`` in a separate process for the duration of the block (started and ready).

    Yields the monitor's pid (e.g. to read its CPU time with psutil).
    """
    context = multiprocessing.get_context("spawn")
    stop, ready = context.Event(), context.Event()
    process = context.Process(target=_monitor_process, args=(settings, stop, ready), daemon=True)
    process.start()
    try:
        if not ready.wait(start_timeout_s):
            raise RuntimeError(f"the monitor was not ready within {start_timeout_s:.0f} s")
        assert process.pid is not None
        yield process.pid
    finally:
        stop.set()
        process.join(60)
        if process.is_alive():
            process.terminate()
            process.join(10)


# --- the benchmark itself ------------------------------------------------------------------------


def _fresh_topics(kafka: KafkaSettings) -> KafkaSettings:
    from fireman.common.kafka_io import ensure_topics

    tag = uuid.uuid4().hex[:8]
    topics = kafka.model_copy(
        update={
            "topic_measurements": f"bench-measurements-{tag}",
            "topic_labels": f"bench-labels-{tag}",
            "topic_predictions": f"bench-predictions-{tag}",
            "topic_dlq": f"bench-dlq-{tag}",
        }
    )
    ensure_topics(topics)
    return topics


def _score_backlog(
    kafka: KafkaSettings, influx: InfluxSettings, mlflow: MlflowSettings, events: int
) -> float:
    """Events/s of the scorer through a backlog of ``events``, from ready to the last one committed."""
    from fireman.serving.scorer import Scorer
    from fireman.serving.settings import ScorerSettings

    scorer = Scorer(
        ScorerSettings(kafka=kafka, influxdb=influx, mlflow=mlflow, group_id=f"bench-{uuid.uuid4().hex[:8]}")
    )
    stop = threading.Event()
    thread = threading.Thread(target=scorer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        if not scorer.ready.wait(120):
            raise RuntimeError("the scorer did not start")
        started = time.perf_counter()
        deadline = time.monotonic() + 600
        while scorer.stats.committed < events:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the scorer committed {scorer.stats.committed} of {events} events")
            time.sleep(0.02)
        return events / (time.perf_counter() - started)
    finally:
        stop.set()
        thread.join(60)


def _window_sources(influx: InfluxSettings, events: list[Any], windows: int) -> tuple[float, float]:
    """Seconds to get one 1,000-event window's feature rows and scores, the two ways a monitor could.

    From the stream (how the monitor works): parse the window's raw measurements, which it joins with
    the predictions in memory as they pass. From InfluxDB (the alternative the issue asks to measure):
    query the window's ``measurements`` and ``predictions`` back, which the sink and scorer stored,
    and join them on ``event_id``. ``influx`` holds the predictions of ``events`` (a scorer run);
    their measurements are written here as the sink writes them.
    """
    from fireman.common.events import feature_row
    from fireman.common.influx import InfluxClient
    from fireman.common.measurements import MEASUREMENTS, PREDICTIONS, PRODUCTION_ONLY
    from fireman.common.pointtime import point_time_ns
    from fireman.streaming.sink import event_point

    raw = [event.encode(KafkaSettings().measurement_format) for event in events]
    with InfluxClient(influx) as client:
        for start in range(0, len(raw), 5000):
            client.write(event_point(value, MEASUREMENTS.name) for value in raw[start : start + 5000])
        stream, stored = [], []
        for i in range(windows):
            first = (i * 1000) % (len(raw) - 1000)
            chunk = events[first : first + 1000]
            started = time.perf_counter()
            for value in raw[first : first + 1000]:
                feature_row(value)
            stream.append(time.perf_counter() - started)
            begin = point_time_ns(chunk[0].timestamp, chunk[0].event_id)
            end = point_time_ns(chunk[-1].timestamp, chunk[-1].event_id) + 1
            where = f"time >= {begin} AND time < {end}"
            started = time.perf_counter()
            features = pd.DataFrame(client.query(f'SELECT * FROM "{MEASUREMENTS.name}" WHERE {where}'))
            scores = pd.DataFrame(
                client.query(
                    f'SELECT "event_id", "probability", "model_version" FROM "{PREDICTIONS.name}" '
                    f"WHERE {where} AND {PRODUCTION_ONLY}"
                )
            )
            joined = features.merge(scores, on="event_id")
            joined.reindex(columns=list(FEATURE_NAMES)).to_numpy(dtype=np.float64)
            stored.append(time.perf_counter() - started)
            if len(joined) < 900:  # the window must really have come back
                raise RuntimeError(f"only {len(joined)} of 1,000 events of a window read back from InfluxDB")
    return statistics.mean(stream), statistics.mean(stored)


def _window_cost(reference: Any, rows: pd.DataFrame, windows: int) -> tuple[float, float]:
    """Seconds per 1,000-event window: without widgets (as the monitor runs) and with (HTML reports)."""
    import tempfile

    from fireman.monitoring.drift import compute_drift

    matrix = rows[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    probabilities = np.random.default_rng(0).random(len(matrix))
    compute_drift(reference, matrix[:1000], probabilities[:1000], 0.5, 10)  # imports, warm-up
    quiet = []
    for i in range(windows):
        window = slice((i * 1000) % (len(matrix) - 1000), (i * 1000) % (len(matrix) - 1000) + 1000)
        started = time.perf_counter()
        compute_drift(reference, matrix[window], probabilities[window], 0.5, 10)
        quiet.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        compute_drift(reference, matrix[:1000], probabilities[:1000], 0.5, 10, Path(tmp) / "r.html")
        rendered = time.perf_counter() - started
    return statistics.median(quiet), rendered


def run_bench(options: BenchOptions) -> dict[str, float]:
    from fireman.bench.workload import make_events, produce_events, spambase_rows, train_production
    from fireman.common.influx import InfluxClient
    from fireman.monitoring.reference import ReferenceStore

    kafka, influx, mlflow = KafkaSettings(), InfluxSettings(), MlflowSettings()
    dataset = DatasetSettings()
    name = f"bench-monitoring-{uuid.uuid4().hex[:8]}"
    mlflow = mlflow.model_copy(update={"experiment": name, "model_name": name})
    influx = influx.model_copy(update={"database": name.replace("-", "_")})
    with console.status("training the production model (training defaults)"):
        version = train_production(mlflow, dataset=dataset)
    # Spambase is sorted by class: shuffled, windows look like the reference (no drift alerts).
    rows = spambase_rows(dataset, options.events, missing_rate=0.2).sample(frac=1.0, random_state=0)
    events = make_events(rows)
    results: dict[str, list[float]] = {"off": [], "on": []}
    monitor_cpu: list[float] = []
    # One database per run: a run writing over the last run's points would measure InfluxDB
    # deduplicating them, which a scorer only meets on a replay.
    databases: list[InfluxSettings] = []
    # Other work on the machine skews a run; the 1-minute load average is printed with each one.
    loads: list[float] = [os.getloadavg()[0]]
    try:
        for repeat in range(options.repeats):
            for mode in ("off", "on") if repeat % 2 == 0 else ("on", "off"):
                topics = _fresh_topics(kafka)
                run_influx = influx.model_copy(update={"database": f"{influx.database}_run{len(databases)}"})
                databases.append(run_influx)
                with console.status(f"run {repeat + 1}/{options.repeats}, monitoring {mode}: producing"):
                    produce_events(topics, events)
                with console.status(f"run {repeat + 1}/{options.repeats}, monitoring {mode}: scoring"):
                    if mode == "on":
                        with monitoring_running(monitor_settings_for(topics, run_influx, mlflow)) as pid:
                            monitor = psutil.Process(pid)
                            before = sum(monitor.cpu_times()[:2])
                            rate = _score_backlog(topics, run_influx, mlflow, len(events))
                            spent = sum(monitor.cpu_times()[:2]) - before
                            monitor_cpu.append(spent / (len(events) / rate))
                    else:
                        rate = _score_backlog(topics, run_influx, mlflow, len(events))
                results[mode].append(rate)
                loads.append(os.getloadavg()[0])
                console.print(f"monitoring {mode}: {rate:,.0f} events/s (load average {loads[-1]:.2f})")
        with console.status("timing Evidently windows"):
            reference = ReferenceStore(mlflow, MonitorSettings().reference_rows).load(name, version)
            quiet, rendered = _window_cost(reference, rows, options.windows)
        with console.status("timing where a window's rows come from: the stream or InfluxDB"):
            from_stream, from_influx = _window_sources(databases[-1], events, options.windows)
    finally:
        with InfluxClient(influx) as client:
            for database in (influx, *databases):
                client.drop_database(database.database)
        # The bench's model goes too: registered models left behind pile up in the MLflow UI.
        with RegistryClient(mlflow) as registry:
            registry.delete_model(name)
    off, on = statistics.mean(results["off"]), statistics.mean(results["on"])
    runs = {mode: ", ".join(f"{rate:,.0f}" for rate in rates) for mode, rates in results.items()}
    table = Table("measure", "value")
    table.add_row("scorer, monitoring off (mean events/s)", f"{off:,.0f} ({runs['off']})")
    table.add_row("scorer, monitoring on (mean events/s)", f"{on:,.0f} ({runs['on']})")
    table.add_row("on / off", f"{on / off:.1%}")
    table.add_row("monitor CPU while the scorer ran (cores)", f"{statistics.mean(monitor_cpu):.2f}")
    table.add_row("Evidently, 1,000 x 57 window, no widgets (s)", f"{quiet:.2f}")
    table.add_row("Evidently, same window with HTML widgets (s)", f"{rendered:.2f}")
    table.add_row("widgets cost (x)", f"{rendered / quiet:.1f}")
    table.add_row("a 1,000-event window's rows, parsed from the stream (s)", f"{from_stream:.3f}")
    table.add_row("the same window read back from InfluxDB and joined (s)", f"{from_influx:.3f}")
    console.print(table)
    console.print(
        f"events per run: {len(events):,}, runs per mode: {options.repeats}, CPUs: {os.cpu_count()}, "
        f"1-minute load average {min(loads):.2f}-{max(loads):.2f} (before and after each run)"
    )
    settings = MonitorSettings()
    budget = f"{settings.drift_cpu_budget:.0%}"
    console.print(f"monitor: nice {settings.nice}, drift CPU budget {budget} of a core")
    return {
        "off": off,
        "on": on,
        "ratio": on / off,
        "window_s": quiet,
        "window_from_stream_s": from_stream,
        "window_from_influx_s": from_influx,
        "window_html_s": rendered,
        "load_max": max(loads),
    }
