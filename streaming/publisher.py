"""The collector's side of Kafka: send a request's records and wait, without blocking, for all acks.

kafka-python's futures complete on its sender thread; a per-request countdown turns them into one
asyncio future, so the event loop keeps serving other requests while Kafka acknowledges (acks=all).
A background thread checks that the broker is reachable: while it is not, writes are refused up
front (503) instead of being buffered, so a rejected request never reaches Kafka later.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from fireman_common.kafka_io import broker_reachable, make_producer
from streaming.payloads import Record
from streaming.settings import CollectorSettings

log = logging.getLogger(__name__)


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge (or is known to be down): the request gets 503."""


class _Countdown:
    """Resolves ``future`` on the event loop once ``pending`` records are acked, or at the first error."""

    __slots__ = ("future", "lock", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, pending: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.pending = pending
        self.lock = threading.Lock()

    def ok(self, _metadata: Any) -> None:
        with self.lock:
            self.pending -= 1
            done = self.pending == 0
        if done:
            self.loop.call_soon_threadsafe(self._resolve, None)

    def failed(self, error: BaseException) -> None:
        self.loop.call_soon_threadsafe(self._resolve, error)

    def _resolve(self, error: BaseException | None) -> None:
        if self.future.done():
            return
        if error is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(error)


class Publisher:
    """Owns the producer; ``ready`` is true while Kafka is reachable and the topics' metadata is known."""

    def __init__(self, settings: CollectorSettings, producer: KafkaProducer | None = None) -> None:
        self.settings = settings
        self.topics = [settings.kafka.topic_measurements, settings.kafka.topic_labels]
        self._producer = producer
        self._owns_producer = producer is None
        self._ready = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self._ready and self._producer is not None

    def start(self) -> None:
        self._check()
        self._thread = threading.Thread(target=self._watch, name="kafka-readiness", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._producer is not None and self._owns_producer:
            try:
                self._producer.flush(timeout=self.settings.ack_timeout_s)
            except KafkaError as exc:
                log.warning("records not acknowledged at shutdown: %s", exc)
            self._producer.close(timeout=5)

    async def publish(self, topic: str, records: Sequence[Record]) -> None:
        """Return once Kafka has acknowledged every record; raise KafkaUnavailable otherwise."""
        producer = self._producer
        if producer is None or not self._ready:
            raise KafkaUnavailable("Kafka is not reachable; nothing was accepted, retry later")
        countdown = _Countdown(asyncio.get_running_loop(), len(records))
        try:
            for record in records:
                future = producer.send(topic, value=record.value, key=record.key)
                future.add_callback(countdown.ok)
                future.add_errback(countdown.failed)
        except KafkaError as exc:
            self._suspect()
            raise KafkaUnavailable(f"Kafka refused the records: {exc}") from exc
        try:
            # The producer's delivery timeout expires records before this, so a 503 means not written.
            await asyncio.wait_for(countdown.future, timeout=self.settings.ack_timeout_s + 5)
        except Exception as exc:  # a KafkaError from the sender thread, or our own timeout
            self._suspect()
            raise KafkaUnavailable(f"Kafka did not acknowledge the records: {exc!r}") from exc

    def _suspect(self) -> None:
        self._ready = False
        self._wake.set()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.readiness_interval_s)
            self._wake.clear()
            if not self._stop.is_set():
                self._check()

    def _check(self) -> None:
        kafka = self.settings.kafka
        try:
            reachable = broker_reachable(kafka, timeout_ms=2000)
            if reachable and self._producer is None:
                self._producer = self._make_producer()
            if reachable and self._producer is not None:
                for topic in self.topics:
                    if not self._producer.partitions_for(topic):
                        reachable = False
        except KafkaError as exc:
            log.warning("Kafka at %s is not usable: %s", kafka.bootstrap_servers, exc)
            reachable = False
        if reachable and not self._ready:
            log.info("Kafka at %s is reachable", kafka.bootstrap_servers)
        elif self._ready and not reachable:
            log.warning("Kafka at %s is DOWN: writes get 503 until it is back", kafka.bootstrap_servers)
        self._ready = reachable

    def _make_producer(self) -> KafkaProducer:
        delivery_ms = int(self.settings.ack_timeout_s * 1000)
        linger = self.settings.linger_ms
        return make_producer(
            self.settings.kafka,
            linger_ms=linger,
            delivery_timeout_ms=delivery_ms,
            request_timeout_ms=max(
                1000, min(self.settings.kafka.request_timeout_ms, delivery_ms - linger - 1)
            ),
            # Metadata is fetched by the readiness thread; a send on the event loop must never wait for it.
            max_block_ms=1000,
        )
