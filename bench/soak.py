"""``fireman bench soak``: the whole pipeline at a fixed rate for N minutes, watching memory, lag and latency.

The generator posts a synthetic fleet (with delayed labels) to a collector; a sink, a scorer and a
monitor consume it; all are real ``fireman`` processes on the running servers, in topics, an
InfluxDB database and a registered model of the run's own (removed afterwards). Every few seconds
the run samples each process's RSS, the committed lag of each consumer group, and the end-to-end
latency (event time at the generator -> prediction written, from the scorer's ``latency_ms``).
Verdicts: memory is flat when no process grows more than 10% from the end of the warm-up to the
end; lag is bounded when, after warm-up, no group is ever more than ``max_lag_s`` of traffic behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fireman.bench.http_load import free_port, loadavg
from fireman.bench.workload import bench_topics, train_production
from fireman.common import mlflow_uri
from fireman.common.errors import UserError
from fireman.common.influx import InfluxClient, InfluxError, quote_identifier
from fireman.common.measurements import PREDICTIONS, PRODUCTION_ONLY
from fireman.common.model_registry import RegistryClient
from fireman.common.settings import InfluxSettings, KafkaSettings, MlflowSettings, ServicesSettings

if TYPE_CHECKING:
    from fireman.monitoring.settings import MonitorSettings

PROCESSES = ("collector", "sink", "scorer", "monitor", "generator")
# Evidently's CPU time per drift test (1.3-1.8 s for 1,000-4,000 rows here, docs/decisions.md).
DRIFT_TEST_CPU_S = 2.0
GROUPS = ("sink", "scorer", "monitor")


@dataclass(frozen=True)
class SoakOptions:
    minutes: float = 10.0
    rate: float = 200.0
    batch: int = 20
    sample_s: float = 5.0
    warmup_fraction: float = 0.2
    max_growth: float = 0.10
    max_lag_s: float = 10.0
    monitor: bool = True


def drift_wait_s(settings: MonitorSettings) -> float:
    """Longest a closed window waits for its drift test when windows close faster than they are tested:
    behind the test under way and ``drift_queue`` waiting windows, one test per pause of the CPU budget."""
    return (settings.drift_queue + 1) * DRIFT_TEST_CPU_S / settings.drift_cpu_budget


@dataclass
class Sample:
    elapsed_s: float
    rss: dict[str, int]
    lag: dict[str, int | None]
    p50_ms: float | None
    p99_ms: float | None
    scored: int


@dataclass
class SoakResult:
    options: SoakOptions
    samples: list[Sample] = field(default_factory=list)
    warmup_s: float = 0.0
    exited: dict[str, int] = field(default_factory=dict)
    monitor_window: int = 1000
    monitor_drift_wait_s: float = 0.0  # longest an event waits for its window's drift test

    def after_warmup(self) -> list[Sample]:
        return [s for s in self.samples if s.elapsed_s >= self.warmup_s] or self.samples[-1:]

    def growth(self, name: str) -> float | None:
        """RSS growth of a process from the end of the warm-up to the end of the run."""
        values = [s.rss[name] for s in self.after_warmup() if name in s.rss]
        if len(values) < 2:
            return None
        start = statistics.median(values[:3])
        end = statistics.median(values[-3:])
        return (end - start) / start

    def max_lag(self, group: str) -> int | None:
        values = [s.lag.get(group) for s in self.after_warmup()]
        known = [v for v in values if v is not None]
        return max(known) if known else None

    @property
    def memory_flat(self) -> bool:
        growths = [self.growth(name) for name in PROCESSES]
        return all(g is None or g < self.options.max_growth for g in growths)

    def lag_bound(self, group: str) -> float:
        """Events a group may be behind: ``max_lag_s`` of traffic on each topic it reads.

        The monitor commits only when a drift window's points are written, so it may also hold up to
        three open windows (one per topic) uncommitted, and every event (a measurement and a
        prediction) whose closed window waits for the drift test.
        """
        traffic = self.options.max_lag_s * self.options.rate
        if group != "monitor":
            return traffic * (2 if group == "sink" else 1)
        waiting = 2 * self.monitor_drift_wait_s * self.options.rate
        return traffic * 3 + 3 * self.monitor_window + waiting

    @property
    def lag_bounded(self) -> bool:
        lags = {group: self.max_lag(group) for group in GROUPS}
        known = {group: lag for group, lag in lags.items() if lag is not None}
        return bool(known) and all(lag <= self.lag_bound(group) for group, lag in known.items())

    @property
    def events_per_s(self) -> float:
        after = self.after_warmup()
        if len(after) < 2 or after[-1].elapsed_s == after[0].elapsed_s:
            return 0.0
        return (after[-1].scored - after[0].scored) / (after[-1].elapsed_s - after[0].elapsed_s)

    def latency(self) -> tuple[float | None, float | None]:
        p50 = [s.p50_ms for s in self.after_warmup() if s.p50_ms is not None]
        p99 = [s.p99_ms for s in self.after_warmup() if s.p99_ms is not None]
        return (statistics.median(p50) if p50 else None, max(p99) if p99 else None)


@dataclass(frozen=True)
class _Names:
    kafka: KafkaSettings
    influx: InfluxSettings
    mlflow: MlflowSettings
    port: int


def _names(services: ServicesSettings) -> _Names:
    tag = uuid.uuid4().hex[:8]
    kafka = bench_topics(services.kafka, f"soak-{{}}-{tag}")
    influx = services.influxdb.model_copy(update={"database": f"soak_{tag}"})
    mlflow = services.mlflow.model_copy(update={"experiment": f"soak-{tag}", "model_name": f"soak-{tag}"})
    return _Names(kafka, influx, mlflow, free_port())


def pipeline_environment(
    kafka: KafkaSettings, influx: InfluxSettings, mlflow: MlflowSettings, home: Path, collector_port: int
) -> dict[str, str]:
    """The environment of a private pipeline: this process's, minus any FIREMAN_* setting, plus names
    (topics, database, model, consumer groups, collector port) that belong to this pipeline alone.

    Shared by the soak and the fault-injection tests, so both run the processes the same way.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("FIREMAN_")}
    tag = kafka.topic_measurements
    env.update(
        {
            "FIREMAN_HOME": str(home),
            "FIREMAN_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
            "FIREMAN_KAFKA_TOPIC_MEASUREMENTS": kafka.topic_measurements,
            "FIREMAN_KAFKA_TOPIC_LABELS": kafka.topic_labels,
            "FIREMAN_KAFKA_TOPIC_PREDICTIONS": kafka.topic_predictions,
            "FIREMAN_KAFKA_TOPIC_DLQ": kafka.topic_dlq,
            "FIREMAN_INFLUXDB_URL": influx.url,
            "FIREMAN_INFLUXDB_DATABASE": influx.database,
            "FIREMAN_MLFLOW_TRACKING_URI": mlflow.tracking_uri,
            "FIREMAN_MLFLOW_EXPERIMENT": mlflow.experiment,
            "FIREMAN_MLFLOW_MODEL_NAME": mlflow.model_name,
            "FIREMAN_COLLECTOR_PORT": str(collector_port),
            "FIREMAN_SINK_GROUP_ID": f"sink-{tag}",
            "FIREMAN_SCORER_GROUP_ID": f"scorer-{tag}",
            "FIREMAN_MONITOR_GROUP_ID": f"monitor-{tag}",
            "FIREMAN_GENERATOR_COLLECTOR_URL": f"http://127.0.0.1:{collector_port}",
            "FIREMAN_GENERATOR_DATASET": "synthetic",
            # The synthetic fleet has 4,601 rows; a longer stream starts a new (reshuffled) pass.
            "FIREMAN_GENERATOR_LOOP": "true",
        }
    )
    return env


@contextlib.contextmanager
def _processes(
    names: _Names, options: SoakOptions, workdir: Path
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    fireman = str(Path(sys.executable).with_name("fireman"))
    env = pipeline_environment(names.kafka, names.influx, names.mlflow, workdir, names.port) | {
        "FIREMAN_GENERATOR_RATE": str(options.rate),
        "FIREMAN_GENERATOR_BATCH": str(options.batch),
        "FIREMAN_GENERATOR_LABEL_DELAY_S": "5",
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str) -> None:
        with (workdir / f"{name}.log").open("ab") as log:
            procs[name] = subprocess.Popen([fireman, name], env=env, stdout=log, stderr=subprocess.STDOUT)

    try:
        for name in ("sink", "scorer", *(("monitor",) if options.monitor else ()), "collector"):
            start(name)
        deadline = time.monotonic() + 120
        while not _ready(names.port):
            if time.monotonic() > deadline or procs["collector"].poll() is not None:
                raise UserError(f"the collector did not start; see {workdir / 'collector.log'}")
            time.sleep(0.5)
        start("generator")
        yield procs
    finally:
        for name in ("generator", "collector", "monitor", "scorer", "sink"):
            proc = procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class _LagReader:
    """Committed lag of each consumer group, asked of the broker (no group membership)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        from fireman.common.kafka_io import admin_client

        self._admin = admin_client(kafka, timeout_ms=5000)
        measurements, labels = kafka.topic_measurements, kafka.topic_labels
        self._group_ids = {group: f"{group}-{measurements}" for group in GROUPS}
        self._topics = {
            "sink": [measurements, labels],
            "scorer": [measurements],
            "monitor": [measurements, kafka.topic_predictions, labels],
        }

    def lags(self, groups: list[str]) -> dict[str, int | None]:
        from confluent_kafka import KafkaException

        from fireman.common.kafka_io import consumer_lag

        try:
            lag = consumer_lag(self._admin, {self._group_ids[g]: self._topics[g] for g in groups})
        except KafkaException:
            return dict.fromkeys(groups)
        finally:
            self._admin.poll(0)  # hands librdkafka's queued log lines to logging
        return {group: lag.behind[self._group_ids[group]] for group in groups}


def _latency(influx: InfluxClient, window_s: float) -> tuple[float | None, float | None]:
    try:
        rows = influx.query(
            'SELECT percentile("latency_ms", 50) AS p50, percentile("latency_ms", 99) AS p99 '
            f"FROM {quote_identifier(PREDICTIONS.name)} "
            f"WHERE {PRODUCTION_ONLY} AND time > now() - {max(1, round(window_s))}s"
        )
    except InfluxError:
        return None, None
    if not rows or rows[0].get("p50") is None:
        return None, None
    return float(rows[0]["p50"]), float(rows[0]["p99"])


def _scored(influx: InfluxClient) -> int:
    try:
        rows = influx.query(
            f'SELECT count("event_id") FROM {quote_identifier(PREDICTIONS.name)} WHERE {PRODUCTION_ONLY}'
        )
    except InfluxError:
        return 0
    return int(rows[0]["count"]) if rows else 0


def _rss(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, int]:
    out = {}
    for name, proc in procs.items():
        with contextlib.suppress(psutil.Error):
            if proc.poll() is None:
                out[name] = int(psutil.Process(proc.pid).memory_info().rss)
    return out


def _cleanup(names: _Names) -> None:
    from fireman.common.kafka_io import delete_topics

    with contextlib.suppress(Exception):
        delete_topics(names.kafka, names.kafka.topics())
    with contextlib.suppress(Exception), InfluxClient(names.influx) as client:
        client.drop_database(names.influx.database)
    with contextlib.suppress(Exception):
        with RegistryClient(names.mlflow) as registry:
            registry.delete_model(names.mlflow.model_name)
        tracking = mlflow_uri.client(names.mlflow)
        experiment = tracking.get_experiment_by_name(names.mlflow.experiment)
        if experiment is not None:
            tracking.delete_experiment(experiment.experiment_id)


def run_soak(options: SoakOptions, console: Console | None = None) -> SoakResult:
    """Run the soak and print its table; the result carries the samples and the verdicts."""
    from fireman.bench.cli import require_services
    from fireman.common.kafka_io import ensure_topics
    from fireman.streaming.generator import synthetic_frame

    console = console or Console()
    # Again here: in `fireman bench report` the soak starts long after the command checked them.
    require_services("kafka", "influxdb", "mlflow")
    names = _names(ServicesSettings())
    ensure_topics(names.kafka)
    with InfluxClient(names.influx) as client:
        client.ensure_database()
    # The run's production model, trained by the training code on the synthetic fleet the generator
    # replays, with the drift reference training logs: the monitor tests every window as in production.
    train_production(names.mlflow, frame=synthetic_frame(0))
    duration = options.minutes * 60
    from fireman.monitoring.settings import MonitorSettings

    result = SoakResult(
        options,
        warmup_s=duration * options.warmup_fraction,
        monitor_window=MonitorSettings().window_size,
        monitor_drift_wait_s=drift_wait_s(MonitorSettings()),
    )
    workdir = Path(tempfile.mkdtemp(prefix="fireman-soak-"))
    console.print(
        f"soak: {options.minutes:g} min at {options.rate:g} events/s (batches of {options.batch}), "
        f"warm-up {result.warmup_s:.0f} s, {os.cpu_count()} CPUs, load average {loadavg()}; logs in {workdir}"
    )
    lags = _LagReader(names.kafka)
    influx = InfluxClient(names.influx)
    try:
        with (
            _processes(names, options, workdir) as procs,
            Progress(
                TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=console
            ) as progress,
        ):
            task = progress.add_task("soaking", total=duration)
            started = time.monotonic()
            next_sample = started
            while (elapsed := time.monotonic() - started) < duration:
                for name, proc in procs.items():
                    if proc.poll() is not None and name not in result.exited:
                        result.exited[name] = proc.returncode
                        console.print(
                            f"[red]{name} exited with {proc.returncode}[/]; "
                            f"see {escape(str(workdir / name))}.log"
                        )
                if time.monotonic() >= next_sample:
                    p50, p99 = _latency(influx, options.sample_s * 2)
                    sample = Sample(
                        elapsed_s=elapsed,
                        rss=_rss(procs),
                        lag=lags.lags([group for group in GROUPS if group in procs]),
                        p50_ms=p50,
                        p99_ms=p99,
                        scored=_scored(influx),
                    )
                    result.samples.append(sample)
                    progress.update(task, completed=elapsed, description=_describe(sample))
                    next_sample += options.sample_s
                time.sleep(0.2)
            progress.update(task, completed=duration)
    finally:
        influx.close()
        _cleanup(names)
    _print(result, console)
    return result


def _describe(sample: Sample) -> str:
    lag = ", ".join(f"{g} {v if v is not None else '-'}" for g, v in sample.lag.items())
    p99 = f"{sample.p99_ms:.0f}" if sample.p99_ms is not None else "-"
    return f"{sample.elapsed_s:5.0f} s  lag {lag}  p99 {p99} ms"


def _print(result: SoakResult, console: Console) -> None:
    samples = result.samples
    if not samples:
        console.print("[red]no samples taken[/]")
        return
    timeline = Table(
        "t (s)", *(f"{name} MB" for name in PROCESSES), *(f"lag {g}" for g in GROUPS), "p50 ms", "p99 ms"
    )
    step = max(1, len(samples) // 12)
    for sample in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        timeline.add_row(
            f"{sample.elapsed_s:.0f}",
            *(f"{sample.rss[name] / 1e6:.0f}" if name in sample.rss else "-" for name in PROCESSES),
            *(str(sample.lag.get(g)) if sample.lag.get(g) is not None else "-" for g in GROUPS),
            f"{sample.p50_ms:.0f}" if sample.p50_ms is not None else "-",
            f"{sample.p99_ms:.0f}" if sample.p99_ms is not None else "-",
        )
    console.print(timeline)
    verdicts = Table("figure", "value", "target", "verdict", title="soak verdicts (after warm-up)")
    limit = result.options.max_growth
    for name in PROCESSES:
        if (growth := result.growth(name)) is not None:
            verdicts.add_row(
                f"RSS growth {name}", f"{growth:+.1%}", f"< {limit:.0%}", _verdict(growth < limit)
            )
    for group in GROUPS:
        if (lag := result.max_lag(group)) is not None:
            bound = result.lag_bound(group)
            verdicts.add_row(f"max lag {group}", f"{lag} events", f"<= {bound:.0f}", _verdict(lag <= bound))
    p50, p99 = result.latency()
    if p50 is not None and p99 is not None:
        verdicts.add_row("end-to-end latency p50 / worst p99", f"{p50:.0f} / {p99:.0f} ms", "-", "-")
    verdicts.add_row("scored events/s", f"{result.events_per_s:.0f}", f"{result.options.rate:g}", "-")
    if result.exited:
        verdicts.add_row("processes that exited", str(result.exited), "none", _verdict(False))
    console.print(verdicts)
    console.print(f"memory flat: {_verdict(result.memory_flat)}; lag bounded: {_verdict(result.lag_bounded)}")


def _verdict(ok: bool) -> str:
    return "[green]ok[/]" if ok else "[red]FAILED[/]"
