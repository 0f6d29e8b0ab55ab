"""What monitoring costs the scorer, and what the scorer's defaults buy: throughput side by side.

Four configurations of the scorer, each run ``repeats`` times through the same backlog, in rotating
order: the defaults (binary events, the ONNX export) with the monitor off and on, the defaults with
a monitor that does not give way to the scorer (``yield_lag=0``, the monitor before it did), and the
configuration before #17 (JSON events, scikit-learn) with the monitor on. The monitor runs as
deployed: a process of its own (niced by ``FIREMAN_MONITOR_NICE``), in its own consumer group,
reading the same topics while the scorer works, and told the scorer's group. Each run has fresh
topics holding the same events, written in that configuration's wire format. Per run, the CPU time
of the scorer, the monitor, the Kafka broker(s) and InfluxDB is divided by the events: the capacity
model in docs/performance.md is built from those figures. The Evidently cost of one window
(1,000 x 57 against the reference) is timed too, with and without Evidently's HTML widgets.

The production version needs a drift reference or the monitor skips drift; training logs one with
every version, so a model from ``fireman.bench.workload.train_production`` has it.
"""

from __future__ import annotations

import contextlib
import functools
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

from fireman.bench.workload import (
    bench_topics,
    cpu_s,
    drop_databases,
    in_thread,
    make_events,
    produce_events,
    spambase_rows,
    train_production,
)
from fireman.common import production_history
from fireman.common.events import MeasurementFormat
from fireman.common.model_registry import RegistryClient
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings, InfluxSettings, KafkaSettings, MlflowSettings
from fireman.monitoring.settings import MonitorSettings

console = Console()


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


@dataclass(frozen=True)
class Configuration:
    """What the scorer runs with: the measurements' wire format, its model backend, and the monitor."""

    name: str
    wire: MeasurementFormat
    onnx: bool
    monitor: bool
    gives_way: bool = True  # the monitor's default: it reads at yield_cpu_budget while the scorer is behind


# Before #17: JSON events scored by scikit-learn. Now: the defaults, binary events and the ONNX export.
PREVIOUS_ON = Configuration("JSON events, scikit-learn, monitoring on", "json", False, True)
DEFAULTS_OFF = Configuration("defaults (binary events, ONNX), monitoring off", "binary", True, False)
DEFAULTS_ON = Configuration("defaults (binary events, ONNX), monitoring on", "binary", True, True)
NOT_GIVING_WAY = Configuration(
    "defaults, monitoring on, not giving way to the scorer", "binary", True, True, gives_way=False
)
CONFIGURATIONS = (PREVIOUS_ON, DEFAULTS_OFF, DEFAULTS_ON, NOT_GIVING_WAY)


@dataclass
class BenchOptions:
    # ~10 s per run at defaults. Runs of 150,000 events (~2.5 s) measured the monitor's start, not its
    # steady state: its first drift test (~1.4 s of CPU, not yet paced by the CPU budget) fell inside
    # the run, and runs of one configuration ranged from 48k to 84k events/s. At 600,000 they agreed
    # within 4-18% (docs/performance-notes.md, seventh round).
    events: int = 600_000
    repeats: int = 4  # each figure is the mean of this many runs (at least 3)
    windows: int = 5


@dataclass(frozen=True)
class Run:
    events_per_s: float
    # CPU seconds per event, from each process's CPU time over the run: where the capacity goes.
    scorer_us: float
    monitor_us: float | None
    kafka_us: float | None
    influxdb_us: float | None


@dataclass(frozen=True)
class SinkRun:
    """The sink alone through one backlog: its rate and the CPU µs per event it, Kafka and InfluxDB spent."""

    events_per_s: float
    sink_us: float
    kafka_us: float | None
    influxdb_us: float | None


@dataclass
class MonitoringResult:
    runs: dict[Configuration, list[Run]]
    sink: SinkRun
    events: int
    window_s: float
    window_html_s: float
    window_from_stream_s: float
    window_from_influx_s: float
    loads: tuple[float, float]

    def rate(self, config: Configuration) -> float:
        return statistics.mean(run.events_per_s for run in self.runs[config])

    def cpu_us(self, config: Configuration, process: str) -> float | None:
        """Mean CPU µs per event of ``process`` (scorer, monitor, kafka, influxdb) under ``config``."""
        values = [getattr(run, f"{process}_us") for run in self.runs[config]]
        known = [value for value in values if value is not None]
        return statistics.mean(known) if known else None

    def ratio(self, config: Configuration, baseline: Configuration) -> float:
        return self.rate(config) / self.rate(baseline)

    def print(self, out: Console) -> None:
        table = Table(
            "configuration", "mean events/s", "runs", "CPU µs/event: scorer, monitor, Kafka, InfluxDB"
        )
        for config, runs in self.runs.items():
            cpu = ", ".join(_us(self.cpu_us(config, p)) for p in ("scorer", "monitor", "kafka", "influxdb"))
            table.add_row(
                config.name,
                f"{self.rate(config):,.0f}",
                ", ".join(f"{r.events_per_s:,.0f}" for r in runs),
                cpu,
            )
        out.print(table)
        facts = Table("measure", "value")
        sink = self.sink
        facts.add_row(
            "the sink alone through one backlog (events/s; CPU µs/event: sink, Kafka, InfluxDB)",
            f"{sink.events_per_s:,.0f}; {sink.sink_us:.1f}, {_us(sink.kafka_us)}, {_us(sink.influxdb_us)}",
        )
        facts.add_row("defaults: monitoring on / off", f"{self.ratio(DEFAULTS_ON, DEFAULTS_OFF):.1%}")
        facts.add_row(
            "monitoring on, not giving way / off", f"{self.ratio(NOT_GIVING_WAY, DEFAULTS_OFF):.1%}"
        )
        facts.add_row(
            "monitoring on: defaults / JSON and scikit-learn", f"{self.ratio(DEFAULTS_ON, PREVIOUS_ON):.2f}x"
        )
        facts.add_row("Evidently, 1,000 x 57 window, no widgets (s)", f"{self.window_s:.2f}")
        facts.add_row("Evidently, same window with HTML widgets (s)", f"{self.window_html_s:.2f}")
        facts.add_row("widgets cost (x)", f"{self.window_html_s / self.window_s:.1f}")
        facts.add_row(
            "a 1,000-event window's rows, parsed from the stream (s)", f"{self.window_from_stream_s:.3f}"
        )
        facts.add_row(
            "the same window read back from InfluxDB and joined (s)", f"{self.window_from_influx_s:.3f}"
        )
        out.print(facts)
        settings = MonitorSettings()
        repeats = min(len(runs) for runs in self.runs.values())
        out.print(
            f"events per run: {self.events:,}, runs per configuration: {repeats}, CPUs: {os.cpu_count()}, "
            f"1-minute load average {self.loads[0]:.2f}-{self.loads[1]:.2f} (before and after each run); "
            f"monitor: nice {settings.nice}, intake CPU budget {settings.intake_cpu_budget:.0%} and drift "
            f"CPU budget {settings.drift_cpu_budget:.0%} of a core, {settings.yield_cpu_budget:.0%} each "
            f"while the scorer is over {settings.yield_lag:,} events behind"
        )


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def server_processes(kafka: KafkaSettings, influx: InfluxSettings) -> dict[str, list[psutil.Process]]:
    """The local Kafka broker(s) and InfluxDB, found by their listening ports (none if not local)."""
    brokers = {kafka.node_ports(node)[0] for node in range(1, kafka.brokers + 1)}
    ports = {"kafka": brokers, "influxdb": {influx.port}}
    found: dict[str, list[psutil.Process]] = {name: [] for name in ports}
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status != psutil.CONN_LISTEN or connection.pid is None:
            continue
        for name, wanted in ports.items():
            if connection.laddr.port in wanted and all(p.pid != connection.pid for p in found[name]):
                found[name].append(psutil.Process(connection.pid))
    return found


def _measured_run(
    config: Configuration,
    kafka: KafkaSettings,
    influx: InfluxSettings,
    mlflow: MlflowSettings,
    events: int,
    servers: dict[str, list[psutil.Process]],
) -> Run:
    """One scorer run through the backlog under ``config``, with the CPU each process spent on it."""
    scorer = psutil.Process()
    group = f"bench-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        monitor = None
        if config.monitor:
            # As FIREMAN_SCORER_GROUP_ID tells a deployed monitor: the group it gives way to.
            given = {"scorer_group_id": group} if config.gives_way else {"yield_lag": 0}
            pid = stack.enter_context(
                monitoring_running(monitor_settings_for(kafka, influx, mlflow, **given))
            )
            monitor = psutil.Process(pid)
        watched = {"scorer": [scorer], "monitor": [monitor] if monitor else [], **servers}
        rate, cpu_us = _score_backlog(
            kafka, influx, mlflow, events, onnx=config.onnx, watched=watched, group_id=group
        )

    def per_event(name: str) -> float | None:
        return cpu_us[name] if watched[name] else None

    return Run(
        events_per_s=rate,
        scorer_us=cpu_us["scorer"],
        monitor_us=per_event("monitor"),
        kafka_us=per_event("kafka"),
        influxdb_us=per_event("influxdb"),
    )


def _sink_run(
    kafka: KafkaSettings, influx: InfluxSettings, events: int, servers: dict[str, list[psutil.Process]]
) -> SinkRun:
    """The sink (as ``fireman sink`` runs it, in a thread here) through a backlog of ``events``."""
    from fireman.streaming.settings import SinkSettings
    from fireman.streaming.sink import SinkStats, run_sink

    settings = SinkSettings(
        kafka=kafka, influxdb=influx, group_id=f"bench-sink-{uuid.uuid4().hex[:8]}", log_interval_s=3600
    )
    stats = SinkStats()
    watched = {"sink": [psutil.Process()], **servers}
    with in_thread(functools.partial(run_sink, settings, stats=stats), 60) as thread:
        deadline = time.monotonic() + 180
        while stats.consumed == 0:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the sink did not start reading")
            time.sleep(0.01)
        before = {name: cpu_s(processes) for name, processes in watched.items()}
        started = time.perf_counter()
        deadline = time.monotonic() + 600
        while stats.written < events:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the sink wrote {stats.written:,} of {events:,} events")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        spent = {name: cpu_s(processes) - before[name] for name, processes in watched.items()}

    def per_event(name: str) -> float | None:
        return spent[name] / events * 1e6 if watched[name] else None

    return SinkRun(events / elapsed, spent["sink"] / events * 1e6, per_event("kafka"), per_event("influxdb"))


# --- the benchmark itself ------------------------------------------------------------------------


def _fresh_topics(kafka: KafkaSettings) -> KafkaSettings:
    from fireman.common.kafka_io import ensure_topics

    topics = bench_topics(kafka, f"bench-{{}}-{uuid.uuid4().hex[:8]}")
    ensure_topics(topics)
    return topics


def _score_backlog(
    kafka: KafkaSettings,
    influx: InfluxSettings,
    mlflow: MlflowSettings,
    events: int,
    onnx: bool,
    watched: dict[str, list[psutil.Process]],
    group_id: str,
) -> tuple[float, dict[str, float]]:
    """Events/s of the scorer through a backlog of ``events``, from its first batch to the last committed.

    With it, the CPU µs per event each group of ``watched`` processes spent over the same stretch: the
    scorer's start (loading the model, checking its export, joining the group) falls outside both.
    """
    from fireman.serving.scorer import Scorer
    from fireman.serving.settings import ScorerSettings

    scorer = Scorer(ScorerSettings(kafka=kafka, influxdb=influx, mlflow=mlflow, group_id=group_id, onnx=onnx))
    with in_thread(scorer.run, 60):
        deadline = time.monotonic() + 120
        # From the first batch scored, as `fireman bench scorer` times it: joining the group and the
        # first fetch are start-up, not throughput. Only the events after that batch count.
        while (first := scorer.stats.polled) == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the scorer did not start scoring")
            time.sleep(0.002)
        before = {name: cpu_s(processes) for name, processes in watched.items()}
        started = time.perf_counter()
        deadline = time.monotonic() + 600
        while scorer.stats.committed < events:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the scorer committed {scorer.stats.committed} of {events} events")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        counted = events - first
        per_event = {name: (cpu_s(ps) - before[name]) / counted * 1e6 for name, ps in watched.items()}
        return counted / elapsed, per_event


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

    fmt = KafkaSettings().measurement_format  # built once: settings parse the environment
    raw = [event.encode(fmt) for event in events]
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


def run_bench(options: BenchOptions) -> MonitoringResult:
    from fireman.common.kafka_io import delete_topics
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
    runs: dict[Configuration, list[Run]] = {config: [] for config in CONFIGURATIONS}
    # One database per run: a run writing over the last run's points would measure InfluxDB
    # deduplicating them, which a scorer only meets on a replay.
    databases: list[InfluxSettings] = []
    created: list[KafkaSettings] = []
    servers = server_processes(kafka, influx)
    # Other work on the machine skews a run; the 1-minute load average is printed with each one.
    loads: list[float] = [os.getloadavg()[0]]
    try:
        for repeat in range(options.repeats):
            # Rotated each round, so no configuration always runs first (or right after another).
            shift = repeat % len(CONFIGURATIONS)
            for config in CONFIGURATIONS[shift:] + CONFIGURATIONS[:shift]:
                label = f"run {repeat + 1}/{options.repeats}, {config.name}"
                topics = _fresh_topics(kafka).model_copy(update={"measurement_format": config.wire})
                created.append(topics)
                run_influx = influx.model_copy(update={"database": f"{influx.database}_run{len(databases)}"})
                databases.append(run_influx)
                with console.status(f"{label}: producing"):
                    produce_events(topics, events)
                with console.status(f"{label}: scoring"):
                    run = _measured_run(config, topics, run_influx, mlflow, len(events), servers)
                runs[config].append(run)
                loads.append(os.getloadavg()[0])
                console.print(
                    f"{config.name}: {run.events_per_s:,.0f} events/s (load average {loads[-1]:.2f})"
                )
        scored = databases[-1]  # a scorer run's predictions, for the window sources below
        with console.status("the sink alone through a backlog in the default wire format"):
            sink_topics = _fresh_topics(kafka)
            created.append(sink_topics)
            produce_events(sink_topics, events)
            sink_influx = influx.model_copy(update={"database": f"{influx.database}_sink"})
            databases.append(sink_influx)
            sink = _sink_run(sink_topics, sink_influx, len(events), servers)
        with console.status("timing Evidently windows"):
            reference = ReferenceStore(mlflow, MonitorSettings().reference_rows).load(name, version)
            quiet, rendered = _window_cost(reference, rows, options.windows)
        with console.status("timing where a window's rows come from: the stream or InfluxDB"):
            from_stream, from_influx = _window_sources(scored, events, options.windows)
    finally:
        delete_topics(kafka, [name for topics in created for name in topics.topics()])
        drop_databases([influx, *databases])
        # The bench's model goes too: registered models left behind pile up in the MLflow UI.
        with RegistryClient(mlflow) as registry:
            registry.delete_model(name)
    result = MonitoringResult(
        runs=runs,
        sink=sink,
        events=len(events),
        window_s=quiet,
        window_html_s=rendered,
        window_from_stream_s=from_stream,
        window_from_influx_s=from_influx,
        loads=(min(loads), max(loads)),
    )
    result.print(console)
    return result
