"""`fireman bench shadow`: what scoring a challenger beside production costs the scorer, two ways.

End-to-end throughput (Kafka → model → Kafka and InfluxDB → commit) over the same backlog of Spambase
events, with two models trained by the training code at its production settings, in three modes:

- **production**: one scorer, no challenger (its challenger alias names nothing);
- **in the batch**: one scorer, the challenger scored in shadow on every batch beside production (the
  design fireman ships);
- **second scorer**: the production scorer as in the first mode, plus a second scorer in a consumer
  group of its own serving the challenger as its model, doing the same full work into a predictions
  topic and a database of its own (the alternative: shadow scoring as another consumer group). The
  two run at once; the run lasts until both have committed every event.

Every scorer runs in a process of its own, as deployed (two scorers in one process would share one
GIL), and not a daemon one: scikit-learn scores a forest on one core in a daemon process. A run is
timed from the moment the first of its scorers has its partitions (it consumes from then on) to the
moment the last one committed the last event; the scorers' CPU time over the same span is read with
psutil, and so is the machine's. Modes alternate (production, in the batch, second scorer, then the
other way round), each run in fresh consumer groups and fresh databases.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from fireman.bench.scorer import load_backlog, scorer_settings, spambase_payloads
from fireman.bench.workload import bench_topics, cpu_s, drop_databases, in_thread, train_production
from fireman.common.settings import InfluxSettings, KafkaSettings, MlflowSettings
from fireman.serving.settings import ScorerSettings

MODES = ("production", "in the batch", "second scorer")
# An alias no version holds: a scorer with it as its challenger alias scores production only.
NO_CHALLENGER = "bench-no-challenger"


@dataclass(frozen=True)
class BenchOptions:
    events: int = 100_000
    repeats: int = 2


@dataclass
class Run:
    mode: str
    events_per_s: float
    scorer_cores: float  # CPU seconds of the scorer processes per second of the run
    busy_cores: float  # the whole machine's, the scorers, Kafka and InfluxDB included
    load: float  # 1-minute load average after the run
    skew_s: float  # how much later than the first the last scorer got its partitions


@dataclass
class ScorerRuns:
    """Runs of scorers in several modes, each compared with the ``baseline`` mode."""

    runs: list[Run] = field(default_factory=list)
    cpus: int = 0
    baseline: str = MODES[0]

    def of(self, mode: str) -> list[Run]:
        return [run for run in self.runs if run.mode == mode]

    def mean(self, mode: str) -> float:
        return statistics.mean(run.events_per_s for run in self.of(mode))

    def ratio(self, mode: str) -> float:
        return self.mean(mode) / self.mean(self.baseline)

    def cpu_per_100k(self, mode: str) -> float:
        """Scorer CPU seconds per 100,000 events: the cost, less sensitive than a rate to a busy machine."""
        return statistics.mean(run.scorer_cores / run.events_per_s * 100_000 for run in self.of(mode))

    def table(self, title: str) -> Table:
        """One row per mode, in the order the modes first ran."""
        table = Table(
            "mode",
            "events/s per run",
            "mean events/s",
            f"/ {self.baseline}",
            "scorer cores",
            "scorer CPU s / 100k events",
            "machine busy cores",
            "load average",
            title=title,
        )
        for mode in dict.fromkeys(run.mode for run in self.runs):
            runs = self.of(mode)
            table.add_row(
                mode,
                ", ".join(f"{run.events_per_s:,.0f}" for run in runs),
                f"{self.mean(mode):,.0f}",
                f"{self.ratio(mode):.2f}",
                f"{statistics.mean(run.scorer_cores for run in runs):.2f}",
                f"{self.cpu_per_100k(mode):.1f}",
                f"{statistics.mean(run.busy_cores for run in runs):.2f} of {self.cpus}",
                f"{min(run.load for run in runs):.2f}-{max(run.load for run in runs):.2f}",
            )
        return table


class _Shared:
    """A scorer process's progress, written by it and read by the bench (one writer each: no locks)."""

    def __init__(self, context: multiprocessing.context.SpawnContext) -> None:
        self.committed: Any = context.Value("q", 0, lock=False)
        self.shadow_scored: Any = context.Value("q", 0, lock=False)
        # time.monotonic() is one clock for every process of the machine (CLOCK_MONOTONIC).
        self.assigned_at: Any = context.Value("d", 0.0, lock=False)


def _scorer_process(
    settings: ScorerSettings,
    shared: tuple[Any, Any, Any],
    warm: ProcessEvent,
    go: ProcessEvent,
    stop: ProcessEvent,
) -> None:
    from fireman.common.model import Registry
    from fireman.common.runtime import configure_logging
    from fireman.serving.scorer import Scorer

    committed, shadow_scored, assigned_at = shared
    configure_logging("WARNING")
    # Import MLflow and scikit-learn and load the model once before the start: otherwise a second
    # scorer starts seconds after the first, which has the machine to itself meanwhile.
    registry = Registry(settings.mlflow)
    target = registry.production()
    assert target is not None
    registry.load(target)
    registry.close()
    warm.set()
    go.wait()
    scorer = Scorer(settings)
    with in_thread(scorer.run, 60):
        while not stop.wait(0.01):
            stats = scorer.stats
            if not assigned_at.value and scorer.assignment():
                assigned_at.value = time.monotonic()
            committed.value = stats.committed
            shadow_scored.value = stats.shadow_scored


def measure_scorers(
    mode: str,
    scorers: list[ScorerSettings],
    events: int,
    timeout_s: float = 900.0,
    split: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> Run:
    """Run ``scorers`` at once, each in its own process, until every one committed ``events``.

    ``split``: the scorers share one consumer group, so the run ends once they committed ``events``
    between them, and it is timed from when every one of them owns partitions (counting only the
    events committed after). ``on_progress`` gets the events committed so far (the least any scorer
    committed, or with ``split`` their sum) as the run goes.
    """
    context = multiprocessing.get_context("spawn")
    go, stop = context.Event(), context.Event()
    warm = [context.Event() for _ in scorers]
    shared = [_Shared(context) for _ in scorers]
    processes = [
        context.Process(
            target=_scorer_process,
            args=(settings, (s.committed, s.shadow_scored, s.assigned_at), ready, go, stop),
        )
        for settings, s, ready in zip(scorers, shared, warm, strict=True)
    ]
    for process in processes:
        process.start()
    handles = [psutil.Process(process.pid) for process in processes]
    try:
        deadline = time.monotonic() + timeout_s
        while not all(ready.is_set() for ready in warm):
            _check(processes, deadline, "the scorers to load their models")
            time.sleep(0.05)
        go.set()
        # Scorers sharing a group are timed once all of them own partitions: the rebalance that lets
        # the last one in (it waits for the others' next heartbeat) is a one-off, reported as the skew.
        every = split and len(shared) > 1
        while not (all if every else any)(s.assigned_at.value for s in shared):
            _check(processes, deadline, "the scorers to start")
            time.sleep(0.005)
        clock_started, before = time.monotonic(), (_committed(shared, split) if every else 0)
        cpu_before = cpu_s(handles)
        machine_before = psutil.cpu_times()
        while (done := _committed(shared, split)) < events:
            _check(processes, deadline, f"{events:,} events committed" + ("" if split else " by each scorer"))
            if on_progress is not None:
                on_progress(done)
            time.sleep(0.01)
        ended = time.monotonic()
        assigned = [s.assigned_at.value for s in shared]
        started = clock_started if every else min(assigned)
        cpu = cpu_s(handles) - cpu_before
        busy = _busy_share(machine_before, psutil.cpu_times())
        if mode == "in the batch" and shared[0].shadow_scored.value < events:
            raise RuntimeError(f"the challenger scored {shared[0].shadow_scored.value} of {events} events")
    finally:
        go.set()
        stop.set()
        for process in processes:
            process.join(60)
            if process.is_alive():
                process.terminate()
                process.join(10)
    seconds = ended - started
    if events - before < events / 5 or seconds <= 0:
        raise RuntimeError(
            f"{before:,} of the {events:,} events were committed before every scorer owned partitions: "
            "too small a backlog to time them together (give more events)"
        )
    return Run(
        mode=mode,
        events_per_s=(events - before) / seconds,
        scorer_cores=cpu / seconds,
        busy_cores=busy * (os.cpu_count() or 1),
        load=os.getloadavg()[0],
        skew_s=max(assigned) - min(assigned),
    )


def _committed(shared: Sequence[_Shared], split: bool) -> int:
    counts = [s.committed.value for s in shared]
    return sum(counts) if split else min(counts)


def _check(processes: Sequence[multiprocessing.process.BaseProcess], deadline: float, what: str) -> None:
    dead = [p for p in processes if not p.is_alive()]
    if dead:
        raise RuntimeError(f"a scorer exited (code {dead[0].exitcode}) before {what}")
    if time.monotonic() > deadline:
        raise RuntimeError(f"the benchmark timed out waiting for {what}")


def _busy_share(before: Any, after: Any) -> float:
    """The share of the machine's CPU time between two ``psutil.cpu_times()`` that was not idle."""
    spent = {name: getattr(after, name) - getattr(before, name) for name in after._fields}
    idle = spent["idle"] + spent.get("iowait", 0.0)
    total = sum(spent.values()) - spent.get("guest", 0.0) - spent.get("guest_nice", 0.0)
    return 1.0 - idle / total if total > 0 else 0.0


def run_bench(options: BenchOptions, console: Console | None = None) -> ScorerRuns:
    from fireman.common.kafka_io import delete_topics, ensure_topics
    from fireman.common.model_registry import RegistryClient
    from fireman.training.settings import TrainingSettings
    from fireman.training.workflow import run_training

    console = console or Console(width=150)  # the table's columns, unwrapped in a log too
    tag = uuid.uuid4().hex[:8]
    base = KafkaSettings()
    topics = bench_topics(base, f"bench-shadow-{tag}-{{}}")
    # The second scorer publishes its (challenger's) predictions apart from production's.
    second_topics = topics.model_copy(update={"topic_predictions": f"{topics.topic_predictions}-challenger"})
    all_topics = [*topics.topics(), second_topics.topic_predictions]
    name = f"bench-shadow-{tag}"
    mlflow = MlflowSettings().model_copy(update={"model_name": name, "experiment": name})
    influx = InfluxSettings().model_copy(update={"database": name.replace("-", "_")})
    databases: list[InfluxSettings] = []
    result = ScorerRuns(cpus=os.cpu_count() or 1)
    ensure_topics(base, all_topics)
    try:
        with console.status("training production and challenger (training defaults)"):
            production = train_production(mlflow)
            challenger = run_training(
                TrainingSettings(mlflow=mlflow), promote="never", params={"random_state": 1}
            ).version
            with RegistryClient(mlflow) as registry:
                registry.set_alias(name, mlflow.challenger_alias, challenger)
        console.print(f"model {name}: production version {production}, challenger version {challenger}")
        load_backlog(topics, spambase_payloads(options.events), console)

        def scorer(kafka: KafkaSettings, models: MlflowSettings) -> ScorerSettings:
            # A database per scorer and run: writing over another run's points would measure
            # InfluxDB deduplicating them, which a scorer only meets on a replay.
            database = influx.model_copy(update={"database": f"{influx.database}_{len(databases)}"})
            databases.append(database)
            return scorer_settings(kafka, database, models)

        alone = mlflow.model_copy(update={"challenger_alias": NO_CHALLENGER})
        # The second scorer serves the challenger as its production model. It records that version in
        # the bench model's production history as it starts, which nothing here reads.
        as_production = mlflow.model_copy(
            update={"production_alias": mlflow.challenger_alias, "challenger_alias": NO_CHALLENGER}
        )
        plans = {
            MODES[0]: lambda: [scorer(topics, alone)],
            MODES[1]: lambda: [scorer(topics, mlflow)],
            MODES[2]: lambda: [scorer(topics, alone), scorer(second_topics, as_production)],
        }
        console.print(f"1-minute load average before the runs: {os.getloadavg()[0]:.2f}")
        for repeat in range(options.repeats):
            for mode in MODES if repeat % 2 == 0 else tuple(reversed(MODES)):
                with console.status(f"run {repeat + 1}/{options.repeats}: {mode}"):
                    run = measure_scorers(mode, plans[mode](), options.events)
                result.runs.append(run)
                console.print(
                    f"{mode}: {run.events_per_s:,.0f} events/s, scorers {run.scorer_cores:.2f} cores, "
                    f"machine {run.busy_cores:.2f} of {result.cpus} cores busy, load average {run.load:.2f}"
                    + (f", second scorer started {run.skew_s:.2f} s later" if mode == MODES[2] else "")
                )
    finally:
        delete_topics(base, all_topics)
        drop_databases(databases)
        # Registered models left behind pile up in the MLflow UI.
        with RegistryClient(mlflow) as registry:
            registry.delete_model(name)
    console.print(result.table(f"fireman bench shadow: {options.events:,} events per run, end to end"))
    return result
