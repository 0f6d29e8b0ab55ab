"""The collector's side of Kafka: send a request's records and wait, without blocking, for all acks.

The producer is librdkafka (confluent-kafka): ``produce()`` only copies a record into librdkafka's
queue, and its own C threads batch, send and retry. A poller thread serves the delivery reports
(acks=all, idempotent) and hands each finished request back to the event loop, one wake-up per
``poll()`` rather than one per record. A readiness thread asks the broker for the topics' metadata:
while that fails, writes are refused up front (503) instead of being queued, and records that were
queued time out (``message.timeout.ms``) before the request stops waiting, so a 503 never turns into
a late write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from fireman.common.kafka_io import LibrdkafkaLog
from fireman.streaming.payloads import Record
from fireman.streaming.settings import CollectorSettings

log = logging.getLogger(__name__)

# Headroom between the producer giving up on a record and the request giving up on the producer.
WAIT_MARGIN_S = 5.0
# librdkafka's local queue; a POST that would overflow it is refused whole (503) before any produce().
QUEUE_MAX_MESSAGES = 1_000_000
QUEUE_MAX_KBYTES = 1024 * 1024


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge (or is known to be down): the request gets 503."""


class _Request:
    """One POST's records in flight: delivery reports count down on the poller thread."""

    __slots__ = ("error", "future", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, pending: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.pending = pending
        self.error: KafkaError | None = None


def _settle(requests: list[_Request]) -> None:
    """On the event loop: complete the futures of finished requests (some may have timed out)."""
    for request in requests:
        if request.future.done():
            continue
        if request.error is None:
            request.future.set_result(None)
        else:
            request.future.set_exception(KafkaUnavailable(f"Kafka did not acknowledge: {request.error}"))


def _servable(topic: Any) -> bool:
    """A topic in the metadata with partitions, every one of them led."""
    return (
        topic is not None
        and topic.error is None
        and bool(topic.partitions)
        and all(p.leader >= 0 for p in topic.partitions.values())
    )


class ConfluentPublisher:
    """librdkafka producer; ``ready`` is true while the broker answers with the topics' metadata."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.topics = [settings.kafka.topic_measurements, settings.kafka.topic_labels]
        self._producer = self._make_producer()
        self._fatal: KafkaError | None = None
        self.ready = False
        # Set by the readiness check when the producer should be replaced though nothing was fatal.
        self._stale = False
        self._down_since = time.monotonic()
        self._replace_after_s = 2 * settings.ack_timeout_s
        # Requests whose last report arrived during the current poll(); only the poller touches it.
        self._finished: list[_Request] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._check()
        for name, target in (("kafka-poller", self._poll), ("kafka-readiness", self._watch)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop taking work; the poller serves the last delivery reports (bounded by the ack timeout)."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=self.settings.ack_timeout_s + WAIT_MARGIN_S)
        if len(self._producer):
            log.warning("%d records not acknowledged at shutdown", len(self._producer))
        self._producer.close()

    async def publish(self, topic: str, records: Sequence[Record]) -> None:
        """Return once Kafka has acknowledged every record; raise KafkaUnavailable otherwise."""
        producer = self._producer
        if not self.ready:
            raise KafkaUnavailable("Kafka is not reachable; nothing was accepted, retry later")
        if len(producer) + len(records) > QUEUE_MAX_MESSAGES:
            raise KafkaUnavailable("the collector's Kafka queue is full; nothing was accepted, retry later")
        request = _Request(asyncio.get_running_loop(), len(records))

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if request.error is not None:
                return
            if error is not None:
                request.error = error
                self._finished.append(request)
                return
            request.pending -= 1
            if request.pending == 0:
                self._finished.append(request)

        try:
            if len(records) == 1:
                producer.produce(topic, records[0].value, records[0].key, on_delivery=delivered)
                queued = 1
            else:
                # One C call for the whole batch: a third of the cost of produce() per record.
                messages = [{"value": record.value, "key": record.key} for record in records]
                queued = producer.produce_batch(topic, messages, on_delivery=delivered)
        except (BufferError, KafkaException) as exc:
            queued, failure = 0, str(exc)
        else:
            failure = "" if queued == len(records) else f"{len(records) - queued} records not queued"
        if failure:
            # Records already queued stay queued (the queue check above makes that unlikely): they may
            # still be written though the answer is 503.
            request.error = KafkaError(KafkaError._FAIL, failure)
            self._suspect()
            raise KafkaUnavailable(f"Kafka refused the records: {failure}")
        try:
            # message.timeout.ms expires the records before this, so a 503 means not written.
            await asyncio.wait_for(request.future, timeout=self.settings.ack_timeout_s + WAIT_MARGIN_S)
        except KafkaUnavailable:
            self._suspect()
            raise
        except TimeoutError as exc:
            self._suspect()
            raise KafkaUnavailable("Kafka did not acknowledge the records in time") from exc

    def _poll(self) -> None:
        """Serve delivery reports and errors; every callback runs on this thread, so no locks."""
        deadline: float | None = None
        while True:
            if self._fatal is not None or self._stale:
                self._replace_producer()
            producer = self._producer
            producer.poll(0.1)
            if self._finished:
                finished, self._finished = self._finished, []
                loops: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
                for request in finished:
                    loops.setdefault(request.loop, []).append(request)
                for loop, requests in loops.items():
                    # A loop closed at shutdown has nobody waiting any more.
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(_settle, requests)
            if self._stop.is_set():
                if deadline is None:
                    deadline = time.monotonic() + self.settings.ack_timeout_s
                if not len(producer) or time.monotonic() > deadline:
                    return

    def _replace_producer(self) -> None:
        """After a fatal error or a long outage: a fresh producer (new idempotence epoch); the old one's
        records fail."""
        old, self._producer = self._producer, self._make_producer()
        self._fatal = None
        self._stale = False
        old.purge()
        old.poll(0)
        old.close()
        self._wake.set()

    def _suspect(self) -> None:
        self.ready = False
        self._wake.set()

    def _watch(self) -> None:
        """Check the broker every readiness interval, or at once when a write looked wrong."""
        while not self._stop.is_set():
            self._wake.wait(self.settings.readiness_interval_s)
            self._wake.clear()
            if not self._stop.is_set():
                self._check()

    def _check(self) -> None:
        """One metadata request (C code, GIL released while waiting): the broker answers and leads."""
        kafka = self.settings.kafka
        reachable = self._fatal is None
        if reachable:
            try:
                metadata = self._producer.list_topics(timeout=2.0)
            except KafkaException as exc:
                log.debug("Kafka metadata request failed: %s", exc)
                reachable = False
            else:
                reachable = all(_servable(metadata.topics.get(name)) for name in self.topics)
        if reachable and not self.ready:
            log.info("Kafka at %s is reachable", kafka.bootstrap_servers)
        elif self.ready and not reachable:
            log.warning("Kafka at %s is DOWN: writes get 503 until it is back", kafka.bootstrap_servers)
            self._down_since = time.monotonic()
        elif not reachable and time.monotonic() - self._down_since > self._replace_after_s:
            # A producer that lived through a broker restart has been seen to stay unable to reach it
            # (see fireman.common.kafka_io.AckProducer.replace); a fresh one is cheap, and it is what a
            # restart of the collector would do.
            log.warning("Kafka still unreachable: starting a fresh producer")
            self._down_since = time.monotonic()
            self._stale = True
        self.ready = reachable

    def _on_error(self, error: KafkaError) -> None:
        # On the poller thread. Transport errors are retried by librdkafka and seen by the readiness
        # check; a fatal one (idempotence state lost) leaves the producer unusable, so it is replaced.
        if error.fatal():
            log.error("fatal Kafka producer error, replacing the producer: %s", error)
            self._fatal = error
            self.ready = False
        else:
            log.debug("Kafka producer: %s", error)

    def _make_producer(self) -> Producer:
        delivery_ms = int(self.settings.ack_timeout_s * 1000)
        linger = self.settings.linger_ms
        request_ms = max(1000, min(self.settings.kafka.request_timeout_ms, delivery_ms - linger - 1))
        config: dict[str, Any] = {
            **self.settings.kafka.client_config(),
            "client.id": "fireman-collector",
            "acks": "all",
            # Retries inside librdkafka then neither duplicate nor reorder a sensor's events.
            "enable.idempotence": True,
            "linger.ms": linger,
            "message.timeout.ms": delivery_ms,
            "request.timeout.ms": request_ms,
            "queue.buffering.max.messages": QUEUE_MAX_MESSAGES,
            "queue.buffering.max.kbytes": QUEUE_MAX_KBYTES,
            # Reconnect within a readiness interval or two once the broker is back.
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self._on_error,
            "logger": LibrdkafkaLog(),
        }
        return Producer(config)
