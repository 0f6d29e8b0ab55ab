"""`fireman bench scorer`: the stream scorer end to end, beside a one-predict-per-message baseline.

Four measurements in one process, against the running Kafka, InfluxDB and MLflow, with a model trained by
the training code at its production settings:

1. throughput: ``events`` Spambase events are loaded onto a fresh topic first, then the scorer runs
   until every one is scored, acknowledged by Kafka, written to InfluxDB and committed;
2. poison: the same backlog with a share of raw poison mixed in (invalid UTF-8, truncated JSON, a
   wrong schema), all of which go to the DLQ; the scorer's rate of good events against run 1. Runs 1
   and 2 alternate (clean, poisoned, poisoned, clean) and each figure is the mean of its two runs;
3. latency: events are produced at ``rate`` per second while the scorer runs; latency is scored time
   minus event time. Once with the defaults, then once with the scorer as it was before #17 (JSON
   events, scikit-learn, batches filled for up to 100 ms), each on a topic of its own;
4. baseline: the seed's loop, the same topic read one message at a time with one ``predict_proba``
   call each in one thread (``n_jobs=1``), as the original FIREMAN classifier does (its Kafka and
   InfluxDB writes are batched, to favour it). The model is the same; training's ``n_jobs=-1`` would
   add joblib's dispatch to every call and flatter the ratio (25 against ~100 events/s here).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from fireman.bench.workload import (
    bench_topics,
    drop_databases,
    in_thread,
    make_events,
    spambase_rows,
    train_production,
)
from fireman.common.events import MeasurementFormat, WireEvent, decode_event, is_binary
from fireman.common.schema import now_ms
from fireman.common.settings import DatasetSettings, InfluxSettings, KafkaSettings, MlflowSettings
from fireman.services.process import wait_until
from fireman.serving.scorer import Scorer
from fireman.serving.settings import ScorerSettings

BENCH_MODEL = "fireman-bench-scorer"


@dataclass(frozen=True)
class BenchOptions:
    events: int = 200_000
    rate: int = 2000
    latency_seconds: float = 20.0
    baseline_seconds: float = 10.0
    poison_share: float = 0.05


@dataclass(frozen=True)
class Previous:
    """The scorer before #17, for the latency side by side: JSON events, scikit-learn, 100 ms batches."""

    measurement_format: MeasurementFormat = "json"
    onnx: bool = False
    max_wait_ms: int = 100
    name: str = "JSON events, scikit-learn, batches filled for up to 100 ms"


@dataclass(frozen=True)
class BenchResult:
    events_per_s: float
    p50_ms: float
    p99_ms: float
    latency_events: int
    baseline_per_s: float
    poisoned_per_s: float
    previous_p50_ms: float
    previous_p99_ms: float

    @property
    def ratio(self) -> float:
        return self.events_per_s / self.baseline_per_s

    @property
    def poisoned_ratio(self) -> float:
        return self.poisoned_per_s / self.events_per_s


def run_bench(options: BenchOptions, console: Console | None = None) -> BenchResult:
    from fireman.common.kafka_io import delete_topics, ensure_topics

    console = console or Console()
    tag = uuid.uuid4().hex[:8]
    base = KafkaSettings()
    sets = [bench_topics(base, f"bench-{tag}-{run}-{{}}") for run in "abdc"]
    throughput_topics, latency_topics, previous_topics, poison_topics = sets
    influx = InfluxSettings().model_copy(update={"database": f"bench_{tag}"})
    mlflow = MlflowSettings().model_copy(update={"model_name": BENCH_MODEL, "experiment": BENCH_MODEL})
    all_topics = [topic for topics in sets for topic in topics.topics()]
    # One database per throughput run: a run that overwrote the last run's 200,000 points would
    # measure InfluxDB deduplicating them, which a scorer only meets on a replay.
    run_databases = [influx.model_copy(update={"database": f"{influx.database}_run{i}"}) for i in range(4)]
    ensure_topics(base, all_topics)
    try:
        with Progress(console=console, transient=True) as progress:
            progress.add_task("training the production-settings model", total=None)
            version = train_production(mlflow)
        console.print(f"model {BENCH_MODEL} version {version} (training defaults)")
        payloads = spambase_payloads(options.events)
        poisoned = _with_poison(payloads, options.poison_share)
        load_backlog(throughput_topics, payloads, console)
        load_backlog(poison_topics, poisoned, console)
        del payloads
        # Clean, poisoned, poisoned, clean, each a fresh consumer group over the whole backlog: whatever
        # the machine carries over from one run to the next (InfluxDB compacting what the last run
        # wrote, say) falls on both modes alike.
        rates: dict[bool, list[float]] = {False: [], True: []}
        for poison, database in zip((False, True, True, False), run_databases, strict=True):
            topics = poison_topics if poison else throughput_topics
            total = len(poisoned) if poison else options.events
            rate = _throughput(topics, database, mlflow, total, console)
            rates[poison].append(rate * options.events / total)  # good events per second
        eps, poisoned_eps = (sum(rates[mode]) / len(rates[mode]) for mode in (False, True))
        console.print(
            "good events/s per run (clean, poisoned, poisoned, clean): "
            + ", ".join(f"{rate:,.0f}" for rate in (rates[False][0], *rates[True], rates[False][1]))
        )
        # The latency runs write 40,000 points a run; InfluxDB compacting the throughput runs' 800,000
        # behind them measured up to 75 ms of p99 instead of 46 (docs/performance-notes.md, tenth round).
        drop_databases(run_databases)
        latencies = _latency(latency_topics, influx, mlflow, options, console)
        previous = Previous()
        previous_latencies = _latency(
            previous_topics.model_copy(update={"measurement_format": previous.measurement_format}),
            influx,
            mlflow,
            options,
            console,
            onnx=previous.onnx,
            max_wait_ms=previous.max_wait_ms,
        )
        baseline = _baseline(throughput_topics, influx, mlflow, options.baseline_seconds, console)
    finally:
        delete_topics(base, all_topics)
        drop_databases([influx, *run_databases])
    result = BenchResult(
        events_per_s=eps,
        p50_ms=float(np.percentile(latencies, 50)),
        p99_ms=float(np.percentile(latencies, 99)),
        latency_events=len(latencies),
        baseline_per_s=baseline,
        poisoned_per_s=poisoned_eps,
        previous_p50_ms=float(np.percentile(previous_latencies, 50)),
        previous_p99_ms=float(np.percentile(previous_latencies, 99)),
    )
    table = Table("measure", "value", title="fireman bench scorer")
    table.add_row("scorer, end to end (InfluxDB writes on)", f"{result.events_per_s:,.0f} events/s")
    table.add_row(f"latency at {options.rate:,} events/s: p50", f"{result.p50_ms:.0f} ms")
    table.add_row(f"latency at {options.rate:,} events/s: p99", f"{result.p99_ms:.0f} ms")
    table.add_row(
        f"latency at {options.rate:,} events/s, {previous.name}: p50 / p99",
        f"{result.previous_p50_ms:.0f} / {result.previous_p99_ms:.0f} ms",
    )
    table.add_row(
        "baseline: the seed's loop, one predict per message, 1 thread",
        f"{result.baseline_per_s:,.1f} events/s",
    )
    table.add_row("scorer / baseline", f"{result.ratio:,.0f}x")
    table.add_row(
        f"good events/s with {options.poison_share:.0%} poison mixed in",
        f"{result.poisoned_per_s:,.0f} events/s ({result.poisoned_ratio:.0%} of the clean rate)",
    )
    console.print(table)
    return result


def spambase_payloads(count: int, fmt: MeasurementFormat | None = None) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``count`` Spambase events, 10% of values missing, all stamped later at send.

    In ``fmt``, by default the writers' (``FIREMAN_KAFKA_MEASUREMENT_FORMAT``), so the bench measures it.
    """
    fmt = fmt or KafkaSettings().measurement_format
    rows = spambase_rows(DatasetSettings(), min(count, 4601), missing_rate=0.1)
    templates = make_events(rows, prefix="tmpl")
    payloads = []
    for i in range(count):
        template = templates[i % len(templates)]
        event = WireEvent(
            event_id=f"b-{i}", sensor_id=template.sensor_id, timestamp=0, features=template.features
        )
        payloads.append((event.sensor_id.encode(), event.encode(fmt)))
    return payloads


# Raw bytes a broken or hostile producer might write: not UTF-8, cut-off JSON, valid JSON of the wrong shape.
POISON = (
    b"\xff\xfe\x00not utf-8",
    b'{"event_id": "cut", "sensor_id": "s-1", "timestamp": 17',
    b'{"event_id": "wrong", "sensor_id": "s-1", "timestamp": "yesterday", "features": {}}',
    b"[1, 2, 3]",
)


def _with_poison(payloads: list[tuple[bytes, bytes]], share: float) -> list[tuple[bytes, bytes]]:
    """The payloads with one poison message after every ``1 / share`` good ones."""
    if share <= 0:
        return list(payloads)
    every = max(1, round(1 / share))
    mixed: list[tuple[bytes, bytes]] = []
    for i, payload in enumerate(payloads):
        mixed.append(payload)
        if i % every == every - 1:
            mixed.append((b"hostile", POISON[(i // every) % len(POISON)]))
    return mixed


def _producer(kafka: KafkaSettings):
    from confluent_kafka import Producer

    return Producer({**kafka.client_config(), "acks": "all", "linger.ms": 5})


def _send(producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            return
        except BufferError:
            producer.poll(0.05)


def _stamp(value: bytes, timestamp: int) -> bytes:
    """``value`` with another timestamp, in the format it is in."""
    event = decode_event(value)
    event.timestamp = timestamp
    return event.encode("binary" if is_binary(value) else "json")


def load_backlog(kafka: KafkaSettings, payloads: list[tuple[bytes, bytes]], console: Console) -> None:
    producer = _producer(kafka)
    stamp = now_ms()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"loading {len(payloads):,} events", total=len(payloads))
        for i, (key, value) in enumerate(payloads):
            poison = key == b"hostile"
            _send(producer, kafka.topic_measurements, key, value if poison else _stamp(value, stamp))
            if i % 5000 == 0:
                producer.poll(0)
                progress.update(task, completed=i)
        producer.flush()


def scorer_settings(
    kafka: KafkaSettings, influx: InfluxSettings, mlflow: MlflowSettings, **overrides: Any
) -> ScorerSettings:
    """A bench scorer's settings, in a fresh consumer group; ``overrides`` are other ScorerSettings fields."""
    return ScorerSettings(
        kafka=kafka,
        influxdb=influx,
        mlflow=mlflow,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        log_interval_s=3600,
        **overrides,
    )


def _until(predicate, timeout_s: float) -> None:
    if not wait_until(predicate, timeout_s, interval_s=0.01):
        raise RuntimeError("the benchmark timed out waiting for the scorer")


def _throughput(
    kafka: KafkaSettings,
    influx: InfluxSettings,
    mlflow: MlflowSettings,
    events: int,
    console: Console,
) -> float:
    scorer = Scorer(scorer_settings(kafka, influx, mlflow))
    with in_thread(scorer.run, 120), Progress(console=console, transient=True) as progress:
        task = progress.add_task("scoring (throughput)", total=events)
        _until(lambda: scorer.stats.polled > 0, 120)
        started = time.perf_counter()

        def done() -> bool:
            progress.update(task, completed=scorer.stats.committed)
            return scorer.stats.committed >= events

        _until(done, 600)
        elapsed = time.perf_counter() - started
    return events / elapsed


def _latency(
    kafka: KafkaSettings,
    influx: InfluxSettings,
    mlflow: MlflowSettings,
    options: BenchOptions,
    console: Console,
    **overrides: Any,
) -> list[int]:
    """Latencies (ms) of events produced at ``options.rate``, in ``kafka.measurement_format``.

    ``overrides`` are the scorer's settings that differ from the defaults.
    """
    payloads = spambase_payloads(
        min(options.events, int(options.rate * options.latency_seconds)), kafka.measurement_format
    )
    scorer = Scorer(scorer_settings(kafka, influx, mlflow, **overrides))
    with in_thread(scorer.run, 120):
        producer = _producer(kafka)
        # Connected before the clock starts: the load generator's first connection and metadata
        # request (~50 ms here) are not the scorer's latency.
        producer.list_topics(kafka.topic_measurements, timeout=30)
        _until(lambda: bool(scorer.assignment()), 120)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"producing at {options.rate:,} events/s (latency)", total=len(payloads))
            started = time.perf_counter()
            tick = 0.01  # send in 10 ms slices, each stamped when it is sent
            for i, (key, value) in enumerate(payloads):
                due = started + i / options.rate
                wait = due - time.perf_counter()
                if wait > tick:
                    producer.poll(0)
                    time.sleep(wait)
                    progress.update(task, completed=i)
                _send(producer, kafka.topic_measurements, key, _stamp(value, now_ms()))
            producer.flush()
        _until(lambda: scorer.stats.committed >= len(payloads), 120)
    return list(scorer.stats.latencies_ms)


def _baseline(
    kafka: KafkaSettings, influx: InfluxSettings, mlflow: MlflowSettings, seconds: float, console: Console
) -> float:
    """One consumed message, one ``predict_proba`` call, one produced prediction: for ``seconds``."""
    from confluent_kafka import Consumer

    from fireman.common.influx import InfluxClient
    from fireman.common.model import Registry, predict_in_one_thread
    from fireman.serving.codec import decode_batch, encode_predictions

    registry = Registry(mlflow)
    target = registry.production()
    assert target is not None
    model = registry.load(target)
    predict_in_one_thread(model.estimator)
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"baseline-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([kafka.topic_measurements])
    producer = _producer(kafka)
    lines: list[str] = []
    count = 0
    with InfluxClient(influx) as client, Progress(console=console, transient=True) as progress:
        progress.add_task(f"baseline: one predict per message for {seconds:.0f} s", total=None)
        started = None
        while started is None or time.perf_counter() - started < seconds:
            message = consumer.poll(1.0)
            if message is None or message.error() is not None:
                continue
            if started is None:
                started = time.perf_counter()
            batch = decode_batch([message.value()], model.feature_order)
            predictions, probabilities = model.score(batch.matrix)
            values, new_lines, _ = encode_predictions(
                batch, predictions, probabilities, model.lineage, now_ms()
            )
            _send(producer, kafka.topic_predictions, message.key() or b"", values[0])
            lines.extend(new_lines)
            if len(lines) >= 1000:
                client.write_lines(lines)
                lines = []
            count += 1
        elapsed = time.perf_counter() - started
        producer.flush()
    consumer.close()
    return count / elapsed
