"""Machinery of the fault-injection tests: a private pipeline of real ``fireman`` processes and its audit.

A :class:`Pipeline` runs collector, sink, scorer and generator as subprocesses against a private
Kafka, InfluxDB and MLflow (``private_services``), in topics, a database and a model of its own. The
generator replays a seeded synthetic fleet, so the test knows every event id it will send before it
starts. :meth:`Pipeline.inject` takes a component down, holds the outage, brings it back and times
the recovery; :meth:`Pipeline.audit` then counts, per event id, the raw points (``measurements``,
written by the sink) and the prediction points (``predictions``, written by the scorer) in
InfluxDB, and the predictions on Kafka.
"""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fireman.bench.soak import pipeline_environment
from fireman.common.influx import InfluxClient, InfluxUnavailable
from fireman.common.measurements import PRODUCTION_ONLY
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import InfluxSettings, KafkaSettings, MlflowSettings
from fireman.services.manager import ServiceManager
from fireman.services.process import wait_until
from fireman.streaming.generator import iter_rows, synthetic_frame
from fireman.streaming.settings import GeneratorSettings
from tests.conftest import free_port, fresh_topics
from tests.support.background import answers, stop_process
from tests.support.scoring import fit_frame, read_topic, register_model

FIREMAN = Path(sys.executable).parent / "fireman"
RAW = "measurements"
PREDICTIONS = "predictions"
# Production's predictions only: a challenger's shadow points share the events' ids.
WHERE = {RAW: "", PREDICTIONS: f" WHERE {PRODUCTION_ONLY}"}
SUMMARY = re.compile(r"sent (\d+), accepted (\d+), rejected (\d+), failed (\d+)")


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    assert wait_until(check, timeout_s=timeout, interval_s=interval), (
        f"timed out after {timeout:.0f} s waiting for {what}"
    )


def start_services(manager: ServiceManager, names: Iterable[str]) -> None:
    manager.start(list(names), on_progress=lambda _: None)


def start_fault_stack(manager: ServiceManager) -> ServiceManager:
    """Kafka, InfluxDB and MLflow on the private ports, set up to start on a loaded 2-core machine."""
    # One MLflow worker: uvicorn's worker supervisor kills children that miss a ping, which on a
    # loaded 2-core machine made the private server fail its start-up.
    manager.settings.mlflow.workers = 1
    # MLflow's first start (database migrations) took over 120 s at a load average of 13.
    manager.settings.start_timeout_s = 300
    start_services(manager, ["kafka", "influxdb", "mlflow"])
    return manager


def stop_services(manager: ServiceManager, names: Iterable[str]) -> None:
    manager.stop(list(names), on_progress=lambda _: None)


@dataclass(frozen=True)
class StackNames:
    """Connection settings of the private servers, narrowed to names of one test's own."""

    kafka: KafkaSettings
    influx: InfluxSettings
    mlflow: MlflowSettings

    @classmethod
    def fresh(cls, manager: ServiceManager) -> StackNames:
        tag = uuid.uuid4().hex[:10]
        settings = manager.settings
        kafka = fresh_topics(settings.kafka, tag)
        influx = settings.influxdb.model_copy(update={"database": f"faults_{tag}"})
        with InfluxClient(influx) as client:
            client.create_database()
        mlflow = settings.mlflow.model_copy(
            update={"experiment": f"faults-{tag}", "model_name": f"faults-{tag}"}
        )
        return cls(kafka, influx, mlflow)


def register_synthetic_model(mlflow: MlflowSettings, seed: int = 0, promote: bool = True) -> str:
    """The training code's pipeline, tiny, on the generator's synthetic data, registered; its version."""
    frame = synthetic_frame(seed)
    estimator = fit_frame(frame, n_estimators=5, seed=seed, max_depth=6)
    return register_model(mlflow, estimator, frame[list(FEATURE_NAMES)].head(20), promote=promote)


class Proc:
    """One ``fireman <command>`` subprocess, restartable, logging to a file of its own."""

    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        self.command = command
        self.env = env
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._offset = 0

    def start(self) -> None:
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as handle:
            handle.write(f"\n===== start {self.starts + 1} =====\n".encode())
            handle.flush()
            self.popen = subprocess.Popen(
                [str(FIREMAN), self.command], env=self.env, stdout=handle, stderr=subprocess.STDOUT
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no commit, no flush."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int | None:
        """SIGTERM and wait; the exit code (None if it had to be killed)."""
        if self.popen is None:
            return None
        if self.popen.poll() is not None:
            return self.popen.returncode
        return stop_process(self.popen, timeout_s=timeout)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def since_start(self) -> str:
        """The log of the current run only."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as handle:
            handle.seek(self._offset)
            return handle.read().decode(errors="replace")

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.command} log ({self.log}) ---\n{self.text()[-chars:]}"


@dataclass
class Tally:
    """Per event id: how many points (or messages) there are, against the ids that were sent."""

    expected: set[str]
    counts: collections.Counter[str]

    @property
    def lost(self) -> int:
        return len(self.expected - self.counts.keys())

    @property
    def duplicated(self) -> int:
        """Extra copies of an event, plus anything that is not one of the sent events."""
        extra = sum(count - 1 for count in self.counts.values() if count > 1)
        return extra + len(self.counts.keys() - self.expected)


@dataclass
class Audit:
    raw: Tally
    predictions: Tally
    kafka_predictions: Tally

    @property
    def lost(self) -> int:
        return self.raw.lost + self.predictions.lost

    @property
    def duplicated(self) -> int:
        return self.raw.duplicated + self.predictions.duplicated

    def line(self) -> str:
        return (
            f"InfluxDB raw points: lost {self.raw.lost}, duplicated {self.raw.duplicated}; "
            f"prediction points: lost {self.predictions.lost}, duplicated {self.predictions.duplicated}; "
            f"Kafka predictions: missing {self.kafka_predictions.lost}, "
            f"redelivered {self.kafka_predictions.duplicated} (at-least-once, overwritten in InfluxDB)"
        )


@dataclass
class FaultTimes:
    what: str
    injected_at: float
    restored_at: float = 0.0
    back_at: float = 0.0
    resumed_at: float = 0.0
    caught_up_at: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def outage_s(self) -> float:
        return self.back_at - self.injected_at

    @property
    def restart_s(self) -> float:
        """From the restart command to the component answering again."""
        return self.back_at - self.restored_at

    @property
    def resumed_s(self) -> float:
        """From the component being back to the stalled output growing again."""
        return self.resumed_at - self.back_at

    @property
    def caught_up_s(self) -> float:
        """From the component being back to every sent event having both its points."""
        return self.caught_up_at - self.back_at


@dataclass(frozen=True)
class StreamSpec:
    events: int = 3000
    rate: float = 150.0
    batch: int = 10
    sensors: int = 5
    seed: int = 1


class Pipeline:
    """Collector -> Kafka -> sink + scorer -> InfluxDB, as real processes on a private stack."""

    def __init__(
        self,
        names: StackNames,
        workdir: Path,
        spec: StreamSpec,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.names = names
        self.spec = spec
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home = workdir / "home"
        home.mkdir(exist_ok=True)
        base = pipeline_environment(names.kafka, names.influx, names.mlflow, home, self.port)
        base.update(
            {
                "FIREMAN_COLLECTOR_READINESS_INTERVAL_S": "0.5",
                "FIREMAN_SINK_POLL_TIMEOUT_MS": "200",
                "FIREMAN_SCORER_MAX_BATCH": "200",
                "FIREMAN_INFLUXDB_RETRY_MAX_S": "2",
                "FIREMAN_SCORER_LOG_INTERVAL_S": "2",
                "FIREMAN_GENERATOR_SEED": str(spec.seed),
                "FIREMAN_GENERATOR_LIMIT": str(spec.events),
                "FIREMAN_GENERATOR_RATE": str(spec.rate),
                "FIREMAN_GENERATOR_BATCH": str(spec.batch),
                "FIREMAN_GENERATOR_SENSORS": str(spec.sensors),
                "FIREMAN_GENERATOR_LABEL_FRACTION": "0",
                # Long enough to outlast a 20 s outage with the generator's 10 s back-off cap.
                "FIREMAN_GENERATOR_MAX_RETRIES": "30",
            }
        )
        base.update(extra_env or {})
        self.env = base
        self.procs = {
            name: Proc(name, base, workdir / f"{name}.log")
            for name in ("collector", "sink", "scorer", "generator")
        }
        self.streams = {"generator": spec.events}
        self.expected = self._expected_ids(spec.seed, spec.events)

    @classmethod
    def with_synthetic_model(cls, names: StackNames, workdir: Path, spec: StreamSpec, **env: str) -> Pipeline:
        """A pipeline whose scorer serves a synthetic model, registered and made production first."""
        register_synthetic_model(names.mlflow)
        return cls(names, workdir, spec, extra_env=env)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _expected_ids(self, seed: int, events: int) -> set[str]:
        settings = GeneratorSettings(
            dataset="synthetic",
            seed=seed,
            limit=events,
            sensors=self.spec.sensors,
            label_fraction=0,
            loop=True,
        )
        return {row.event_id for row in iter_rows(synthetic_frame(seed), settings)}

    def add_stream(self, seed: int, events: int) -> Proc:
        """A second generator (another seed, so other ids), started by the caller when it wants."""
        name = f"generator-{len(self.streams) + 1}"
        env = {**self.env, "FIREMAN_GENERATOR_SEED": str(seed), "FIREMAN_GENERATOR_LIMIT": str(events)}
        self.procs[name] = Proc("generator", env, self.procs["generator"].log.with_name(f"{name}.log"))
        self.streams[name] = events
        ids = self._expected_ids(seed, events)
        assert not ids & self.expected, "the two streams share event ids"
        self.expected |= ids
        return self.procs[name]

    def add_member(self, command: str) -> Proc:
        """Another ``sink`` or ``scorer`` in the same consumer group (a scale-out), started by the caller."""
        name = f"{command}-{len(self.members(command)) + 1}"
        self.procs[name] = Proc(command, self.env, self.procs[command].log.with_name(f"{name}.log"))
        return self.procs[name]

    def members(self, command: str) -> list[str]:
        """The names of the ``command`` processes (``sink`` or ``scorer``), the first one first."""
        return [name for name, proc in self.procs.items() if proc.command == command]

    # -- running -------------------------------------------------------------------------------

    def start_collector(self) -> None:
        self.procs["collector"].start()
        wait_for(self.collector_ready, 60, f"the collector to be ready\n{self.procs['collector'].tail()}")

    def collector_ready(self) -> bool:
        return answers(f"{self.url}/readyz")

    def start(self) -> None:
        """Consumers first (they wait for data), then the collector, then the generator."""
        self.procs["sink"].start()
        self.procs["scorer"].start()
        self.start_collector()
        wait_for(
            logged(self.procs["scorer"], "serving "),
            120,
            f"the scorer to load its model\n{self.procs['scorer'].tail()}",
        )
        self.procs["generator"].start()

    def counts(self) -> tuple[int, int]:
        """(raw points, prediction points) in InfluxDB; (-1, -1) while it cannot be read."""
        try:
            return self._count(RAW), self._count(PREDICTIONS)
        except InfluxUnavailable:
            return -1, -1

    def _count(self, measurement: str) -> int:
        with InfluxClient(self.names.influx) as client:
            rows = client.query(f'SELECT count("event_id") FROM "{measurement}"{WHERE[measurement]}')
        return int(rows[0]["count"]) if rows else 0

    def wait_counts(self, raw: int, predictions: int, timeout: float, what: str) -> None:
        def reached() -> bool:
            got = self.counts()
            return got[0] >= raw and got[1] >= predictions

        wait_for(reached, timeout, f"{what} (now {self.counts()})\n{self.tails()}", interval=0.5)

    def inject(
        self,
        what: str,
        down: Callable[[], None],
        up: Callable[[], None],
        ready: Callable[[], bool],
        watch: tuple[bool, bool],
        hold_s: float = 0.0,
        during: Callable[[], bool] | None = None,
        during_what: str = "",
        after_up: Callable[[], None] | None = None,
    ) -> FaultTimes:
        """Take something down, hold the outage, bring it back; time how the pipeline recovers.

        ``watch`` says which output stalls ((raw, predictions)); ``during`` is a condition that must
        hold before the outage ends (e.g. the component's clients have noticed).
        """
        times = FaultTimes(what, time.monotonic())
        down()

        def outage_over() -> bool:
            # ``during`` is polled through the whole outage, so it can also time what happens in it.
            observed = during is None or during()
            return observed and time.monotonic() - times.injected_at >= hold_s

        wait_for(outage_over, hold_s + 120, f"{during_what or 'the outage'}\n{self.tails()}", interval=0.5)
        times.restored_at = time.monotonic()
        up()
        wait_for(ready, 120, f"{what}: the component to come back\n{self.tails()}")
        times.back_at = time.monotonic()
        if after_up is not None:
            after_up()
        before = self.counts()

        def resumed() -> bool:
            now = self.counts()
            grew = [now[i] > before[i] or now[i] >= len(self.expected) for i in (0, 1) if watch[i]]
            return all(grew)

        wait_for(resumed, 180, f"{what}: output to resume (was {before})\n{self.tails()}", interval=0.2)
        times.resumed_at = time.monotonic()
        return times

    def survive(self, what: str, before: tuple[int, int], **fault: Any) -> Audit:
        """A whole fault test: stream until InfluxDB holds ``before`` (raw, prediction) points, inject the
        fault (``inject(what, **fault)``), finish and report; checks that no event was lost or stored
        twice, and returns the audit for the test's own checks."""
        self.start()
        raw, predictions = before
        self.wait_counts(
            raw, predictions, 120, f"{raw} raw and {predictions} prediction points before the fault"
        )
        times = self.inject(what, **fault)
        audit = self.finish(times)
        report(times, audit, len(self.expected))
        assert (audit.lost, audit.duplicated) == (0, 0), audit.line()
        return audit

    def survive_sigkill(
        self, name: str, before: tuple[int, int], ready: str, watch: tuple[bool, bool]
    ) -> Audit:
        """``survive`` process ``name`` SIGKILLed and started again (back once its new run logs ``ready``)."""
        proc = self.procs[name]
        audit = self.survive(
            f"{name} SIGKILL + restart",
            before,
            down=proc.kill,
            up=proc.start,
            ready=logged(proc, ready),
            watch=watch,
        )
        assert proc.starts == 2
        return audit

    def finish(self, times: FaultTimes, timeout: float = 240) -> Audit:
        """Wait for the generator and for every event's two points, stop everything, audit."""
        for name, events in self.streams.items():
            generator = self.procs[name]
            code = generator.wait(timeout=timeout)
            summary = SUMMARY.findall(generator.text())
            assert code == 0 and summary, f"{name} exited {code}\n{generator.tail()}"
            sent, accepted, rejected, failed = map(int, summary[-1])
            assert (sent, accepted, rejected, failed) == (events, events, 0, 0), (
                f"{name} did not get every event accepted: {summary[-1]}\n{generator.tail()}"
            )
        total = len(self.expected)
        self.wait_counts(total, total, timeout, "every event's two points")
        times.caught_up_at = time.monotonic()
        codes = self.stop()
        consumers = [*self.members("scorer"), *self.members("sink")]
        assert all(codes[name] == 0 for name in consumers), f"SIGTERM exit codes {codes}\n{self.tails()}"
        return self.audit()

    def stop(self) -> dict[str, int | None]:
        """SIGTERM everything still running (generator first, consumers last); their exit codes."""
        order = [*self.streams, "collector", *self.members("scorer"), *self.members("sink")]
        return {name: self.procs[name].terminate() for name in order}

    def tails(self) -> str:
        return "\n".join(proc.tail(1500) for proc in self.procs.values() if proc.starts)

    # -- checking ------------------------------------------------------------------------------

    def influx_ids(self, measurement: str) -> collections.Counter[str]:
        with InfluxClient(self.names.influx) as client:
            rows = client.query(f'SELECT "event_id" FROM "{measurement}"{WHERE[measurement]}')
        return collections.Counter(str(row["event_id"]) for row in rows)

    def audit(self) -> Audit:
        kafka = self.names.kafka
        messages = read_topic(kafka, kafka.topic_predictions, len(self.expected), timeout_s=60)
        on_kafka = collections.Counter(str(orjson.loads(m.value())["event_id"]) for m in messages)
        return Audit(
            raw=Tally(self.expected, self.influx_ids(RAW)),
            predictions=Tally(self.expected, self.influx_ids(PREDICTIONS)),
            kafka_predictions=Tally(self.expected, on_kafka),
        )

    def prediction_versions(self) -> collections.Counter[str]:
        with InfluxClient(self.names.influx) as client:
            rows = client.query(f'SELECT "model_version" FROM "{PREDICTIONS}"{WHERE[PREDICTIONS]}')
        return collections.Counter(str(row["model_version"]) for row in rows)


# Every fault test's figures, printed again in pytest's terminal summary (tests/conftest.py), so a CI
# log shows them without -s: docs/reliability.md is measured from these lines.
REPORTS: list[str] = []


def report(times: FaultTimes, audit: Audit, events: int) -> str:
    """The lines each fault test prints, also kept for the terminal summary."""
    notes = "".join(f"; {note}" for note in times.notes)
    text = (
        f"\n[fault] {times.what}: {events} events; outage {times.outage_s:.1f} s "
        f"(restart took {times.restart_s:.1f} s); output resumed {times.resumed_s:.1f} s and every "
        f"event stored {times.caught_up_s:.1f} s after it was back{notes}\n"
        f"[fault] {audit.line()}\n"
        f"[fault] lost={audit.lost} duplicated={audit.duplicated}"
    )
    print(text)
    REPORTS.append(text.strip())
    return text


def logged(proc: Proc, *needles: str) -> Callable[[], bool]:
    """True once the current run of ``proc`` has logged one of ``needles``."""
    return lambda: any(needle in proc.since_start() for needle in needles)


def alive_check(proc: Proc) -> Callable[[], bool]:
    return lambda: proc.alive
