"""Raw history: a consumer group copies ``measurements`` and ``labels`` from Kafka into InfluxDB.

At-least-once: a polled batch is written to InfluxDB, poison messages go to the DLQ, and only then
are the batch's offsets committed. Writes are idempotent (see ``fireman.common.pointtime``),
so a batch written twice after a crash is still one point per event. While InfluxDB is down the
consumer pauses its partitions and keeps polling (an empty poll keeps its group membership), so
nothing more is fetched into memory until the batch in hand is written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fireman.common.dead_letter import dead_letter_headers
from fireman.common.events import decode_event, decode_label
from fireman.common.influx import InfluxClient, InfluxError, InfluxUnavailable, Point
from fireman.common.kafka_io import AckProducer, BatchConsumer, Offsets, Record
from fireman.common.measurements import LABELS, MEASUREMENTS
from fireman.common.metrics import Family, MetricsServer, Snapshot, StatsCollector
from fireman.common.pointtime import point_time_ns
from fireman.common.runtime import freeze_heap
from fireman.streaming.settings import SinkSettings

log = logging.getLogger(__name__)


@dataclass
class SinkStats:
    consumed: int = 0
    written: int = 0
    dead_lettered: int = 0
    commits: int = 0
    write_failures: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Item:
    message: Record
    point: Point | None = None
    error: str | None = None


def event_point(value: bytes, measurement: str) -> Point:
    event = decode_event(value)
    # float(): an integer on the wire would otherwise start an integer field, which InfluxDB then
    # refuses to mix with the float points of the same field.
    fields: dict[str, float | str] = {
        name: float(feature) for name, feature in event.features.items() if feature is not None
    }
    fields["event_id"] = event.event_id
    return Point(
        measurement,
        fields=fields,
        time_ns=point_time_ns(event.timestamp, event.event_id),
        tags={"sensor_id": event.sensor_id},
    )


def label_point(value: bytes, measurement: str) -> Point:
    label = decode_label(value)
    return Point(
        measurement,
        fields={"label": label.label, "event_id": label.event_id},
        time_ns=point_time_ns(label.timestamp, label.event_id),
        tags={"sensor_id": label.sensor_id},
    )


class Sink:
    """The sink's main loop; ``run(stop)`` returns once ``stop`` is set and the batch in hand is done."""

    def __init__(
        self,
        settings: SinkSettings,
        consumer: BatchConsumer,
        producer: AckProducer,
        influx: InfluxClient,
        on_batch: Callable[[SinkStats], None] | None = None,
        stats: SinkStats | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.influx = influx
        self.on_batch = on_batch
        self.stats = stats if stats is not None else SinkStats()
        kafka = settings.kafka
        self._converters: dict[str, Callable[[bytes], Point]] = {
            kafka.topic_measurements: lambda value: event_point(value, MEASUREMENTS.name),
            kafka.topic_labels: lambda value: label_point(value, LABELS.name),
        }

    def run(self, stop: threading.Event) -> SinkStats:
        self._ensure_database()
        while not stop.is_set():
            self.step(stop)
        return self.stats

    def step(self, stop: threading.Event) -> int:
        """Poll one batch and see it through to a commit; returns how many messages it held."""
        messages = self.consumer.poll(self.settings.batch_size, self.settings.poll_timeout_ms / 1000)
        if not messages:
            return 0
        self.stats.consumed += len(messages)
        self.stats.batches += 1
        items = [self._convert(message) for message in messages]
        if not self._write(items, stop):
            # Stopping while InfluxDB is still down: leave the offsets uncommitted so the group
            # hands these messages out again; rewind so a later poll in this process would too.
            self._rewind(messages)
            return len(messages)
        self._dead_letter([item for item in items if item.error is not None])
        self._commit(messages)
        if self.on_batch is not None:
            self.on_batch(self.stats)
        return len(messages)

    def _convert(self, message: Record) -> _Item:
        item = _Item(message)
        convert = self._converters.get(message.topic() or "")
        value = message.value()
        try:
            if convert is None:
                raise ValueError(f"no conversion for topic {message.topic()!r}")
            if value is None:
                raise ValueError("empty message")
            item.point = convert(value.encode() if isinstance(value, str) else value)
        except ValueError as exc:
            item.error = str(exc)
        return item

    def _write(self, items: list[_Item], stop: threading.Event) -> bool:
        """Write the batch's points, waiting out InfluxDB outages; False only when told to stop first."""
        give_up_at: list[float] = []

        def give_up() -> bool:
            if not stop.is_set():
                return False
            if not give_up_at:
                give_up_at.append(time.monotonic() + self.settings.shutdown_timeout_s)
            return time.monotonic() >= give_up_at[0]

        def failed(_error: BaseException) -> None:
            self.stats.write_failures += 1

        retrying = self.settings.influxdb.backoff().retrying(
            InfluxUnavailable,
            sleep=self._idle,
            give_up=give_up,
            failure="InfluxDB unavailable",
            on_retry=failed,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._write_isolating([item for item in items if item.point is not None])
            return True
        except InfluxUnavailable:
            self.stats.write_failures += 1
            log.warning("stopping with %d messages unwritten; they stay uncommitted", len(items))
            return False
        finally:
            self.consumer.resume()

    def _idle(self, seconds: float) -> None:
        """Wait while staying in the group: poll with every partition paused, so nothing is fetched."""
        self.consumer.pause()
        unexpected = self.consumer.poll(1, seconds)
        # Nothing, normally. Should a record ever come back, it is put back: a later commit of a
        # partition it was skipped on would pass over it.
        self._rewind(unexpected)

    def _write_isolating(self, items: list[_Item]) -> None:
        """Write points; when InfluxDB rejects a batch, find the offending points and dead-letter them."""
        if not items:
            return
        try:
            self.influx.write([item.point for item in items if item.point is not None])
            self.stats.written += len(items)
        except InfluxUnavailable:
            raise
        except InfluxError as exc:
            if "database not found" in str(exc):
                self.influx.ensure_database()
                self._write_isolating(items)
            elif len(items) == 1:
                items[0].point, items[0].error = None, f"InfluxDB rejected the point: {exc}"
            else:
                middle = len(items) // 2
                self._write_isolating(items[:middle])
                self._write_isolating(items[middle:])

    def _dead_letter(self, items: list[_Item]) -> None:
        if not items:
            return
        for item in items:
            message = item.message
            value, key = message.value(), message.key()
            headers = dead_letter_headers(
                item.error or "unknown error",
                "sink",
                str(message.topic()),
                message.partition() or 0,
                message.offset() or 0,
            )
            self.producer.produce(
                self.settings.kafka.topic_dlq,
                value.encode() if isinstance(value, str) else (value or b""),
                key.encode() if isinstance(key, str) else key,
                headers=headers,
            )
        # Acknowledged before the batch is committed; KafkaDeliveryError stops the sink uncommitted.
        self.producer.flush(self.settings.kafka.request_timeout_ms / 1000)
        self.stats.dead_lettered += len(items)
        log.warning("sent %d unparseable messages to %s", len(items), self.settings.kafka.topic_dlq)

    def _commit(self, messages: list[Record]) -> None:
        offsets: Offsets = {tp: max(offsets) + 1 for tp, offsets in _positions(messages).items()}
        # A failure (a rebalance, the broker unreachable) is logged: the new owner, or the next commit
        # of this one, covers these messages, and replays overwrite.
        if self.consumer.commit(offsets, asynchronous=False):
            self.stats.commits += 1

    def _rewind(self, messages: list[Record]) -> None:
        """Read these messages again: seek each owned partition back to its first one."""
        self.consumer.seek({tp: min(offsets) for tp, offsets in _positions(messages).items()})

    def _ensure_database(self) -> None:
        try:
            self.influx.ensure_database()
        except InfluxUnavailable as exc:
            log.warning("InfluxDB unavailable at start (the sink will retry): %s", exc)


def _positions(messages: list[Record]) -> dict[tuple[str, int], list[int]]:
    positions: dict[tuple[str, int], list[int]] = {}
    for message in messages:
        tp = (str(message.topic()), message.partition() or 0)
        positions.setdefault(tp, []).append(message.offset() or 0)
    return positions


def sink_metrics(stats: SinkStats, consumer: BatchConsumer) -> StatsCollector:
    families = [
        Family("consumed", "Records read from Kafka."),
        Family("written", "Records written to InfluxDB (replays included)."),
        Family("dead_lettered", "Unparseable records sent to the dead-letter topic."),
        Family("write_failures", "InfluxDB writes that failed and were retried."),
        Family("batches", "Batches polled; consumed / batches is the mean batch size."),
        Family("commits", "Offset commits."),
        Family("lag", "Records behind the end of this member's partitions."),
    ]

    def read() -> Snapshot:
        counters = {name: float(value) for name, value in stats.as_dict().items()}
        return Snapshot(counters=counters, gauges={"lag": consumer.last_lag})

    return StatsCollector("sink", families, read)


def run_sink(
    settings: SinkSettings,
    stop: threading.Event,
    on_batch: Callable[[SinkStats], None] | None = None,
    stats: SinkStats | None = None,
    metrics: bool = False,
) -> SinkStats:
    """Build the clients from settings and run until ``stop`` is set; ``metrics`` serves /metrics."""
    from confluent_kafka import KafkaException

    from fireman.common.kafka_io import ensure_topics

    kafka = settings.kafka
    try:
        ensure_topics(kafka, [kafka.topic_measurements, kafka.topic_labels, kafka.topic_dlq])
    except KafkaException as exc:
        log.warning("could not ensure topics (continuing): %s", exc)
    consumer = BatchConsumer(kafka, settings.group_id, [kafka.topic_measurements, kafka.topic_labels])
    producer = AckProducer(kafka)
    influx = InfluxClient(settings.influxdb)
    sink = Sink(settings, consumer, producer, influx, on_batch, stats)
    server = MetricsServer(sink_metrics(sink.stats, consumer), settings.metrics_host, settings.metrics_port)
    if metrics:
        server.start()
    freeze_heap()
    try:
        return sink.run(stop)
    finally:
        server.stop()
        consumer.close()
        producer.close()
        influx.close()
