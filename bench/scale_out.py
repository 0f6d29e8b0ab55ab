"""`fireman bench scale-out`: one scorer against two in one consumer group, side by side; the monitor's rate.

A backlog of Spambase events is loaded once onto a fresh ``measurements`` topic (``partitions`` of
them, four by default: the most scorers a group can keep busy). Each run scores all of it end to end
(Kafka → model → Kafka and InfluxDB → commit) in a fresh consumer group, with one scorer or with two
sharing the group, each scorer in a process of its own as deployed (``shadow.measure_scorers``: the
model is loaded before the clock starts). A run is timed from the scorer owning partitions to the
last event committed; with two, from the moment both own partitions, counting only the events
committed after it (the rebalance that lets the second in is reported apart). Runs alternate (1, 2,
2, 1, ...) and each figure is the mean of its runs; each run writes a database and a predictions
topic of its own, so none pays for overwriting another's points.

Then one ``fireman monitor`` (``Monitor``, as ``fireman monitor`` runs it, in a thread here) reads the
backlog's measurements and the first run's predictions, and the bench times how fast it takes in the
events (joining each measurement with its prediction and windowing it): the ceiling of the single
monitor instance that ``docs/architecture.md`` (Scaling out) describes.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fireman.bench.scorer import load_backlog, scorer_settings, spambase_payloads
from fireman.bench.shadow import Run, ScorerRuns, measure_scorers
from fireman.bench.workload import bench_topics, drop_databases, in_thread, train_production
from fireman.common.settings import InfluxSettings, KafkaSettings, MlflowSettings

MODES = {"1 scorer": 1, "2 scorers": 2}


@dataclass(frozen=True)
class BenchOptions:
    # ~6-9 s per run at 45,000-70,000 events/s: the first scorer alone scores 150,000-250,000 of them
    # during the ~3 s rebalance as the second joins (250,000 in a CI run, which failed a 300,000-event
    # backlog), and the rest times the two together.
    events: int = 400_000
    repeats: int = 2  # runs of each mode; 2 gives the order 1, 2, 2, 1
    monitor: bool = True


@dataclass
class BenchResult(ScorerRuns):
    baseline: str = next(iter(MODES))
    monitor_per_s: float | None = None  # events (a measurement and a prediction each) per second


def run_bench(options: BenchOptions, console: Console | None = None) -> BenchResult:
    from fireman.common.kafka_io import delete_topics, ensure_topics
    from fireman.common.model_registry import RegistryClient

    console = console or Console(width=150)  # the table's columns, unwrapped in a log too
    name = f"bench-scale-{uuid.uuid4().hex[:8]}"
    base = KafkaSettings()
    topics = bench_topics(base, f"{name}-{{}}")
    mlflow = MlflowSettings().model_copy(update={"model_name": name, "experiment": name})
    influx = InfluxSettings().model_copy(update={"database": name.replace("-", "_")})
    plan = [
        mode for repeat in range(options.repeats) for mode in (MODES if repeat % 2 == 0 else reversed(MODES))
    ]
    # One predictions topic and one database per run: the monitor then reads each event's prediction
    # once, and no run measures InfluxDB deduplicating another run's points.
    outputs = [
        (
            topics.model_copy(update={"topic_predictions": f"{topics.topic_predictions}-{i}"}),
            influx.model_copy(update={"database": f"{influx.database}_{i}"}),
        )
        for i in range(len(plan))
    ]
    created = [*topics.topics(), *(kafka.topic_predictions for kafka, _ in outputs)]
    result = BenchResult(cpus=os.cpu_count() or 1)
    ensure_topics(base, created)
    try:
        with console.status("training the production model (training defaults)"):
            version = train_production(mlflow)
        console.print(f"model {name} version {version}; 1-minute load average {os.getloadavg()[0]:.2f}")
        load_backlog(topics, spambase_payloads(options.events), console)
        for i, (mode, (kafka, database)) in enumerate(zip(plan, outputs, strict=True)):
            run = _scorers_run(
                mode, kafka, database, mlflow, options.events, f"run {i + 1}/{len(plan)}", console
            )
            result.runs.append(run)
            console.print(
                f"{mode}: {run.events_per_s:,.0f} events/s, scorers {run.scorer_cores:.2f} cores, machine "
                f"{run.busy_cores:.2f} of {result.cpus} cores busy, load average {run.load:.2f}"
                + (f", second scorer had partitions {run.skew_s:.2f} s later" if MODES[mode] > 1 else "")
            )
        if options.monitor:
            kafka, database = outputs[0]
            result.monitor_per_s = _monitor_rate(kafka, database, mlflow, options.events, console)
    finally:
        delete_topics(base, created)
        drop_databases([database for _, database in outputs])
        # Registered models left behind pile up in the MLflow UI.
        with RegistryClient(mlflow) as registry:
            registry.delete_model(name)
    _print(result, options, console)
    return result


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _scorers_run(
    mode: str,
    kafka: KafkaSettings,
    influx: InfluxSettings,
    mlflow: MlflowSettings,
    events: int,
    label: str,
    console: Console,
) -> Run:
    """``MODES[mode]`` scorers in one fresh consumer group, until they committed ``events`` between them."""
    settings = scorer_settings(kafka, influx, mlflow)
    with _bar(console) as progress:
        task = progress.add_task(f"{label}: {mode}", total=events)
        return measure_scorers(
            mode,
            [settings] * MODES[mode],
            events,
            split=True,
            on_progress=lambda done: progress.update(task, completed=done),
        )


def _monitor_rate(
    kafka: KafkaSettings, influx: InfluxSettings, mlflow: MlflowSettings, events: int, console: Console
) -> float:
    """Events/s one monitor takes in unpaced: each one's measurement and prediction read, joined and
    windowed.

    Timed from the first message read to the last of the ``events`` measurements and predictions. Drift
    tests run beside it within their CPU budget, as deployed; windows that close faster wait and merge.
    """
    from fireman.bench.monitoring import monitor_settings_for
    from fireman.monitoring.monitor import Monitor

    # Unpaced (the whole core its reading thread can have): the capacity model's cost of a monitor.
    settings = monitor_settings_for(kafka, influx, mlflow, log_interval_s=3600, intake_cpu_budget=1.0)
    monitor = Monitor(settings)
    stats = monitor.stats
    with in_thread(monitor.run, 120) as thread, _bar(console) as progress:
        task = progress.add_task("one monitor: measurements and predictions joined", total=events)
        deadline = time.monotonic() + 180
        while stats.measurements + stats.predictions == 0:
            _check(thread, deadline, "the monitor to read")
        started = time.perf_counter()
        deadline = time.monotonic() + 600
        while (done := min(stats.measurements, stats.predictions)) < events:
            _check(thread, deadline, f"the monitor to take in {events:,} events (it has {done:,})")
            progress.update(task, completed=done)
        elapsed = time.perf_counter() - started
    return events / elapsed


def _check(thread: threading.Thread, deadline: float, what: str) -> None:
    """A short wait; fails if the monitor's thread ended or ``deadline`` passed."""
    if not thread.is_alive():
        raise RuntimeError(f"the monitor stopped before {what}")
    if time.monotonic() > deadline:
        raise RuntimeError(f"the benchmark timed out waiting for {what}")
    time.sleep(0.01)


def _print(result: BenchResult, options: BenchOptions, console: Console) -> None:
    partitions = KafkaSettings().partitions
    title = f"fireman bench scale-out: {options.events:,} events per run, end to end, {partitions} partitions"
    console.print(result.table(title))
    if result.monitor_per_s is not None:
        console.print(
            f"one monitor took in {result.monitor_per_s:,.0f} events/s "
            "(a measurement and a prediction each, joined and windowed)"
        )
