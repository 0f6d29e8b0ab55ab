"""The scorer's Kafka client: a batch consumer and an acknowledging producer, on confluent-kafka.

kafka-python (the design card's client) was measured first on this 2-core machine: with its C CRC
it consumes ~20k and produces ~12k events/s, so one process doing both tops out near 10k events/s
before any scoring; librdkafka consumes ~56k and produces ~200k small messages/s. The interface is
small (poll a batch, produce, flush with acks, commit, pause/resume) so the client stays swappable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from fireman_common.settings import KafkaSettings

log = logging.getLogger(__name__)

Offsets = dict[tuple[str, int], int]
Header = tuple[str, str | bytes | None]


class Record(Protocol):
    """What the scorer reads of a consumed message (confluent-kafka's ``Message`` has this shape)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> str | bytes | None: ...
    def value(self) -> str | bytes | None: ...


class BatchConsumer:
    """A group member that never commits on its own; ``on_revoke`` runs before partitions move."""

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        topics: Sequence[str],
        on_revoke: Callable[[list[tuple[str, int]]], None] | None = None,
        on_lost: Callable[[list[tuple[str, int]]], None] | None = None,
    ) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.session_timeout_ms,
                "socket.timeout.ms": settings.request_timeout_ms,
                "fetch.max.bytes": 32 * 1024 * 1024,
            }
        )
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self._paused = False
        # Kept from the rebalance callbacks: calling into librdkafka from another thread while this one
        # serves a rebalance inside consume() deadlocks on the GIL.
        self._owned: frozenset[tuple[str, int]] = frozenset()
        self._consumer.subscribe(
            list(topics), on_revoke=self._revoked, on_assign=self._assigned, on_lost=self._lost
        )

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", _describe(partitions))
        self._owned = self._owned | {(tp.topic, tp.partition) for tp in partitions}
        if self._paused and partitions:
            consumer.pause(partitions)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", _describe(partitions))
        self._owned = self._owned - {(tp.topic, tp.partition) for tp in partitions}
        if self._on_revoke is not None:
            self._on_revoke([(tp.topic, tp.partition) for tp in partitions])

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("lost %s (the group moved on without this member)", _describe(partitions))
        self._owned = self._owned - {(tp.topic, tp.partition) for tp in partitions}
        callback = self._on_lost or self._on_revoke
        if callback is not None:
            callback([(tp.topic, tp.partition) for tp in partitions])

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        records: list[Record] = []
        for message in self._consumer.consume(num_messages=max_records, timeout=timeout_s):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", error)
                    if error.fatal():
                        raise KafkaException(error)
                continue
            records.append(message)
        return records

    def commit(self, offsets: Offsets, asynchronous: bool = True) -> None:
        """Commit ``offsets`` (the next offset to read, per partition)."""
        if not offsets:
            return
        partitions = [TopicPartition(topic, part, offset) for (topic, part), offset in offsets.items()]
        try:
            if asynchronous:
                self._consumer.commit(offsets=partitions, asynchronous=True)
            else:
                self._consumer.commit(offsets=partitions, asynchronous=False)
        except KafkaException as exc:
            # A commit racing a rebalance fails; the events are replayed, and replays overwrite.
            log.warning("offset commit failed (events will be replayed): %s", exc)

    def seek(self, positions: Offsets) -> None:
        """Read each owned partition again from the given offset; partitions no longer owned are skipped."""
        for (topic, partition), offset in positions.items():
            if (topic, partition) not in self._owned:
                continue
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # Not fetching yet (e.g. just assigned): it starts from the committed offset anyway.
                log.warning("could not seek %s[%d] to %d: %s", topic, partition, offset, exc)

    def pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._consumer.pause(self._consumer.assignment())

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._consumer.resume(self._consumer.assignment())

    def assignment(self) -> list[tuple[str, int]]:
        """The owned partitions; safe to call from any thread."""
        return sorted(self._owned)

    @property
    def paused(self) -> bool:
        return self._paused

    def lag(self) -> int | None:
        """Events behind the end of the assigned partitions, or None if unknown.

        Local only: positions and the high watermarks of the last fetch responses, no broker call.
        """
        total = 0
        try:
            for tp in self._consumer.position(self._consumer.assignment()):
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset < 0 or high < 0:
                    return None
                total += max(0, high - tp.offset)
        except KafkaException:
            return None
        return total

    def close(self) -> None:
        self._consumer.close()


class AckProducer:
    """Produces asynchronously; ``flush`` returns only once every record is acknowledged by all ISRs."""

    def __init__(self, settings: KafkaSettings, delivery_timeout_ms: int = 30_000) -> None:
        self._errors: list[str] = []
        self._config: dict[str, Any] = {
            "bootstrap.servers": settings.bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "message.timeout.ms": delivery_timeout_ms,
            "delivery.report.only.error": True,
            "on_delivery": self._delivered,
        }
        self._producer = Producer(self._config)

    def replace(self) -> None:
        """Drop every queued record and start a fresh producer: new connections, new producer id.

        A librdkafka producer whose records timed out while the broker was gone has been seen to stay
        unable to deliver after the broker was back (every record "Message timed out" for minutes,
        no new producer id requested), while a fresh one delivered at once. Callers replay what was
        dropped: nothing unacknowledged was committed.
        """
        old, self._producer = self._producer, Producer(self._config)
        old.purge()
        old.poll(0)
        self._errors.clear()

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.topic()}: {error}")

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Sequence[Header] | None = None
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=list(headers) if headers else None
                )
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: serve delivery reports, then retry

    def produce_many(self, topic: str, values: Sequence[bytes], keys: Sequence[bytes]) -> None:
        """One C call per batch instead of one ``produce`` per record (keys still pick partitions)."""
        messages: list[dict[str, Any]] = [
            {"value": value, "key": key} for value, key in zip(values, keys, strict=True)
        ]
        while messages:
            try:
                queued = self._producer.produce_batch(topic, messages)
            except BufferError as exc:  # some may be queued: the batch is redone, replays are harmless
                raise KafkaDeliveryError(f"the producer's local queue is full: {exc}") from exc
            if queued == len(messages):
                return
            # The rest found the local queue full: serve delivery reports, then queue them again.
            messages = [{"value": m["value"], "key": m["key"]} for m in messages if "_error" in m]
            self._producer.poll(0.05)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Raise KafkaDeliveryError unless every record produced so far is acknowledged."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise KafkaDeliveryError(f"{remaining} records not acknowledged within {timeout_s:.0f} s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise KafkaDeliveryError(f"{len(errors)} records failed: {errors[0]}")

    def close(self) -> None:
        self._producer.flush(10.0)


class KafkaDeliveryError(RuntimeError):
    """Records were not acknowledged: the batch's offsets must not be committed."""


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
