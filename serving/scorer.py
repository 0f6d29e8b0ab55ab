"""The stream scorer: ``measurements`` in, one model call per batch, predictions to Kafka and InfluxDB.

Per batch: poll up to ``max_batch`` events (or ``max_wait_ms``), decode them into one float64 matrix
in the model's feature order, call ``predict_proba`` once, produce the predictions and wait for
Kafka's acks, hand the InfluxDB lines to the background writer, and commit the offsets of every
batch the writer has made durable. Poison messages go to the DLQ and the batch goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fireman_common.influx import InfluxClient, InfluxError, Point
from fireman_common.schema import now_ms
from serving.codec import decode_batch, encode_predictions
from serving.influx_writer import InfluxWriter
from serving.kafka_client import AckProducer, BatchConsumer, Offsets, Record
from serving.model import Registry, ServingModel
from serving.reload import ModelWatcher, model_event
from serving.settings import ScorerSettings

log = logging.getLogger(__name__)


class BatchObserver(Protocol):
    """Sees every scored batch (e.g. drift monitoring). Runs on the hot path: hand work off, return fast."""

    def on_batch(self, model: ServingModel, features: np.ndarray, probabilities: Sequence[float]) -> None: ...


@dataclass
class ScorerStats:
    polled: int = 0
    scored: int = 0
    poison: int = 0
    committed: int = 0
    batches: int = 0
    switches: int = 0
    model_version: str | None = None
    latencies_ms: deque[int] = field(default_factory=lambda: deque(maxlen=200_000))


@dataclass
class _Pending:
    seq: int
    offsets: Offsets
    events: int


class Scorer:
    def __init__(
        self,
        settings: ScorerSettings,
        registry: Registry | None = None,
        observers: Sequence[BatchObserver] = (),
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.observers = list(observers)
        self.stats = ScorerStats()
        self.ready = threading.Event()  # set once a model is loaded and the consumer subscribed
        self.model: ServingModel | None = None
        self._pending: deque[_Pending] = deque()
        self._writer: InfluxWriter | None = None
        self._consumer: BatchConsumer | None = None
        self._producer: AckProducer | None = None

    def assignment(self) -> list[tuple[str, int]]:
        """The partitions this scorer owns now; safe to call from any thread."""
        return self._consumer.assignment() if self._consumer is not None else []

    @property
    def paused(self) -> bool:
        return self._consumer is not None and self._consumer.paused

    def run(self, stop: threading.Event) -> None:
        """Score until ``stop`` is set; then finish the batch in flight, drain, commit and return."""
        settings = self.settings
        registry = self.registry or Registry(settings.mlflow)
        self._prepare_database()
        writer = self._writer = InfluxWriter(
            settings.influxdb, settings.influx_chunk_points, settings.influx_retry_max_s
        )
        watcher = ModelWatcher(registry, settings.reload_interval_s, lambda p: self._emit(p))
        try:
            model = watcher.wait_for_first(stop)
            if model is None:
                return
            self._switch(model)
            watcher.start(model.version)
            self._producer = AckProducer(settings.kafka)
            self._consumer = BatchConsumer(
                settings.kafka,
                settings.group_id,
                [settings.kafka.topic_measurements],
                on_revoke=self._on_revoke,
            )
            self.ready.set()
            self._loop(stop, watcher)
        finally:
            watcher.stop()
            self._shutdown(writer)

    def _loop(self, stop: threading.Event, watcher: ModelWatcher) -> None:
        assert self._consumer is not None
        settings = self.settings
        timeout_s = settings.max_wait_ms / 1000
        next_log = time.monotonic() + settings.log_interval_s
        logged_at, logged_scored, logged_batches = time.monotonic(), 0, 0
        while not stop.is_set():
            fresh = watcher.take_pending()
            if fresh is not None:
                self._switch(fresh)
            self._commit_durable()
            self._backpressure()
            records = self._consumer.poll(settings.max_batch, timeout_s)
            if records:
                self._score(records)
            if time.monotonic() >= next_log:
                now = time.monotonic()
                stats = self.stats
                batches = max(1, stats.batches - logged_batches)
                log.info(
                    "%.0f events/s, %.0f events/batch, lag %s, model %s version %s, influx buffer %d%s",
                    (stats.scored - logged_scored) / (now - logged_at),
                    (stats.scored - logged_scored) / batches,
                    self._consumer.lag(),
                    self.model.lineage.model_name if self.model else "-",
                    stats.model_version,
                    self._writer.buffered_points if self._writer else 0,
                    " (paused: InfluxDB behind)" if self._consumer.paused else "",
                )
                logged_at, logged_scored, logged_batches = now, stats.scored, stats.batches
                next_log = now + settings.log_interval_s

    def _score(self, records: list[Record]) -> None:
        assert self._producer is not None and self._writer is not None and self.model is not None
        kafka = self.settings.kafka
        model = self.model
        producer = self._producer
        offsets: Offsets = {}
        for record in records:
            offsets[(record.topic(), record.partition())] = record.offset() + 1  # type: ignore[index, operator]
        batch = decode_batch([r.value() for r in records], model.feature_order)  # type: ignore[misc]
        for index, reason in batch.poison:
            self._dead_letter(records[index], reason)
        lines: list[str] = []
        if len(batch):
            matrix = batch.matrix(len(model.feature_order))
            predictions, probabilities = model.score(matrix)
            messages, lines, latencies = encode_predictions(
                batch, predictions, probabilities, model.lineage, now_ms()
            )
            topic = kafka.topic_predictions
            for message, sensor_id in zip(messages, batch.sensor_ids, strict=True):
                producer.produce(topic, message, sensor_id.encode())
            self.stats.latencies_ms.extend(latencies)
            for observer in self.observers:
                observer.on_batch(model, matrix, probabilities)
        producer.flush()  # raises unless Kafka acknowledged every prediction: then nothing is committed
        seq = self._writer.submit(lines)
        self._pending.append(_Pending(seq, offsets, len(records)))
        stats = self.stats
        stats.polled += len(records)
        stats.scored += len(batch)
        stats.poison += len(batch.poison)
        stats.batches += 1

    def _dead_letter(self, record: Record, reason: str) -> None:
        assert self._producer is not None
        log.warning(
            "poison message %s[%s]@%s to the DLQ: %s",
            record.topic(),
            record.partition(),
            record.offset(),
            reason,
        )
        value = record.value()
        key = record.key()
        self._producer.produce(
            self.settings.kafka.topic_dlq,
            value.encode() if isinstance(value, str) else (value or b""),
            key.encode() if isinstance(key, str) else key,
            headers=[
                ("error", reason.encode()),
                ("source_topic", str(record.topic()).encode()),
                ("source_partition", str(record.partition()).encode()),
                ("source_offset", str(record.offset()).encode()),
            ],
        )

    def _commit_durable(self, asynchronous: bool = True) -> None:
        if self._writer is None or self._consumer is None:
            return
        durable = self._writer.durable_seq
        offsets: Offsets = {}
        events = 0
        while self._pending and self._pending[0].seq <= durable:
            done = self._pending.popleft()
            offsets.update(done.offsets)
            events += done.events
        if offsets:
            self._consumer.commit(offsets, asynchronous=asynchronous)
            self.stats.committed += events

    def _backpressure(self) -> None:
        assert self._consumer is not None and self._writer is not None
        buffered = self._writer.buffered_points
        bound = self.settings.influx_buffer_points
        if buffered >= bound and not self._consumer.paused:
            log.warning("InfluxDB is %d points behind (bound %d): pausing consumption", buffered, bound)
            self._consumer.pause()
        elif self._consumer.paused and buffered <= bound // 2:
            log.info("InfluxDB caught up: resuming consumption")
            self._consumer.resume()

    def _on_revoke(self, partitions: list[tuple[str, int]]) -> None:
        """Before partitions move: commit what is durable, so the new owner starts after it."""
        if self._writer is not None and self._pending:
            self._writer.wait_durable(self._pending[-1].seq, self.settings.drain_timeout_s)
        self._commit_durable(asynchronous=False)
        revoked = set(partitions)
        for pending in self._pending:
            for key in revoked & pending.offsets.keys():
                del pending.offsets[key]

    def _switch(self, model: ServingModel) -> None:
        previous = self.model
        self.model = model
        self.stats.model_version = model.version
        if previous is not None:
            self.stats.switches += 1
        log.info(
            "serving %s version %s (run %s), loaded and checked in %.2f s%s",
            model.lineage.model_name,
            model.version,
            model.lineage.run_id,
            model.load_seconds,
            f", replacing version {previous.version}" if previous else "",
        )
        self._emit(
            model_event(
                "switch" if previous else "start",
                model.lineage.model_name,
                {
                    "from_version": previous.version if previous else "",
                    "to_version": model.version,
                    "run_id": model.lineage.run_id,
                    "load_seconds": model.load_seconds,
                },
            )
        )

    def _emit(self, point: Point) -> None:
        if self._writer is not None:
            self._writer.submit_points([point])

    def _prepare_database(self) -> None:
        try:
            with InfluxClient(self.settings.influxdb) as client:
                client.create_database()
        except InfluxError as exc:
            log.warning("InfluxDB not ready (%s); writes will be retried", exc)

    def _shutdown(self, writer: InfluxWriter) -> None:
        drain = self.settings.drain_timeout_s
        try:
            if self._producer is not None:
                self._producer.close()
            if self._pending and not writer.wait_durable(self._pending[-1].seq, drain):
                log.warning(
                    "InfluxDB writes still pending after %.0f s; those events will be replayed", drain
                )
            self._commit_durable(asynchronous=False)
        finally:
            writer.close(timeout_s=1.0)
            if self._consumer is not None:
                consumer, self._consumer = self._consumer, None
                consumer.close()
            log.info(
                "scorer stopped: %d events scored, %d poison, %d committed",
                self.stats.scored,
                self.stats.poison,
                self.stats.committed,
            )
