"""Kafka for every fireman process, on one client library: confluent-kafka (librdkafka).

The design card named kafka-python, and it was measured first on this 2-core machine. With its C CRC
it consumes ~20k and produces ~12k events/s, so one process doing both (the scorer) tops out near
10k events/s before any scoring; librdkafka consumes ~56k and produces ~200k small messages/s, and
the collector takes 32.8k events/s in batch POSTs on it against 13.0k on kafka-python (2.5x). Keeping
kafka-python for admin work and tests as well meant two clients' settings, errors and failure modes
to know, so everything Kafka goes through this module: admin requests (topics, consumer lag), a batch
consumer and an acknowledging producer. The figures are in docs/decisions.md.

Topics are created here, explicitly, with partitions and retention from settings: the local broker
runs with ``auto.create.topics.enable=false`` so a typo in a topic name fails loudly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from fireman.common.retry import Backoff
from fireman.common.settings import KafkaSettings

log = logging.getLogger(__name__)

LEADERS_SETTLE_S = 10.0
# What a partition answers while its leader settles. librdkafka does not flag these retriable when
# they come back per partition from an admin request, so they are named here.
SETTLING = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE})

# How long the consuming thread waits for the committed offsets ``BatchConsumer.lag`` asks for: an
# unanswered ask is repeated at the next lag, and must not hold up the polls meanwhile.
COMMITTED_TIMEOUT_S = 1.0

Offsets = dict[tuple[str, int], int]
Header = tuple[str, str | bytes | None]


class LibrdkafkaLog:
    """librdkafka's own log lines, at DEBUG instead of on raw stderr.

    It logs every refused reconnect (~20 a second) as an error while Kafka is down; ``ClientErrors``
    reports the outage once instead.
    """

    _log = log.getChild("librdkafka")

    def log(self, _level: int, message: str, *args: Any) -> None:
        self._log.debug(message, *args)


class ClientErrors:
    """librdkafka's client-level errors (``error_cb``, served in the client's poll, consume or flush).

    Each refused reconnect is a ``_TRANSPORT`` error, at DEBUG like its log line; librdkafka raises
    ``_ALL_BROKERS_DOWN`` once each time the last broker connection goes, which is the one WARNING
    of an outage, naming the brokers and the last connection error.
    """

    def __init__(self, servers: str) -> None:
        self._servers = servers
        self._last = ""

    def __call__(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            last = f"; last: {self._last}" if self._last else ""
            log.warning("Kafka unreachable at %s (%s%s): retrying", self._servers, error.str(), last)
        elif error.fatal():
            log.error("fatal Kafka client error: %s", error)
        else:
            if error.code() == KafkaError._TRANSPORT:
                self._last = error.str()
            log.debug("Kafka client: %s", error)


def client_config(settings: KafkaSettings) -> dict[str, Any]:
    """What every client built here starts from: the cluster, and librdkafka's logs and errors handled."""
    return {
        **settings.client_config(),
        "logger": LibrdkafkaLog(),
        "error_cb": ClientErrors(settings.bootstrap_servers),
    }


# --- admin requests ---------------------------------------------------------------------------------


def admin_client(settings: KafkaSettings, timeout_ms: int | None = None) -> AdminClient:
    """An admin client whose requests give up after ``timeout_ms`` (default: the settings' timeout).

    Its log lines are handed over only in ``poll()``: a client kept for long should call
    ``admin.poll(0)`` now and then.
    """
    config: dict[str, Any] = {
        **client_config(settings),
        "client.id": "fireman-admin",
        # The default of every admin request's own timeout.
        "socket.timeout.ms": timeout_ms or settings.request_timeout_ms,
    }
    return AdminClient(config)


def broker_reachable(settings: KafkaSettings, timeout_ms: int = 2000) -> bool:
    """True when a metadata request to the cluster succeeds."""
    return broker_count(settings, timeout_ms) > 0


def broker_count(settings: KafkaSettings, timeout_ms: int = 2000) -> int:
    """How many brokers the cluster's metadata lists (0 while it cannot be reached)."""
    try:
        return len(admin_client(settings, timeout_ms).list_topics(timeout=timeout_ms / 1000).brokers)
    except KafkaException:
        return 0


def ensure_topics(
    settings: KafkaSettings, topics: list[str] | None = None, partitions: int | None = None
) -> list[str]:
    """Create the missing topics; returns the names created. Existing topics are left as they are."""
    wanted = topics if topics is not None else settings.topics()
    timeout_s = settings.request_timeout_ms / 1000
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [name for name in wanted if name not in existing]
    if not missing:
        return []
    new_topics = [
        NewTopic(
            name,
            num_partitions=partitions or settings.partitions,
            replication_factor=settings.topic_replication,
            config={
                "retention.ms": str(settings.retention_ms),
                "min.insync.replicas": str(settings.topic_min_insync),
            },
        )
        for name in missing
    ]
    futures = admin.create_topics(new_topics, operation_timeout=timeout_s, request_timeout=timeout_s)
    # Another process may win the race; the topic then exists, which is all we need.
    _await_all(futures, done_already=KafkaError.TOPIC_ALREADY_EXISTS)
    _await_metadata(admin, {topic.topic: topic.num_partitions for topic in new_topics})
    log.info("created topics %s", ", ".join(missing))
    return missing


class _NotInMetadataYet(Exception):
    pass


def _await_metadata(admin: AdminClient, wanted: Mapping[str, int]) -> None:
    """Wait until every topic in ``wanted`` is described with all its partitions.

    The controller answers a create request before every broker's metadata has the topic, and a
    describe or list-offsets request sent in that gap finds no such topic: a caller that creates a
    topic and then reads its offsets (lag, a bench's end offsets) would see it empty.
    """
    deadline = time.monotonic() + LEADERS_SETTLE_S
    try:
        for attempt in Backoff(0.05, 1.0).retrying(
            _NotInMetadataYet,
            sleep=time.sleep,
            give_up=lambda: time.monotonic() >= deadline,
            failure="new topics are not in the broker's metadata yet",
            level=logging.DEBUG,  # a short wait is the normal course; only the timeout is news
        ):
            with attempt:
                described = _partitions(admin, list(wanted))
                short = [topic for topic, count in wanted.items() if len(described[topic]) < count]
                if short:
                    raise _NotInMetadataYet(", ".join(short))
    except _NotInMetadataYet as exc:
        message = f"topics created but not in the broker's metadata after {LEADERS_SETTLE_S:.0f}s: {exc}"
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, message)) from None


def delete_topics(settings: KafkaSettings, topics: list[str]) -> None:
    timeout_s = settings.request_timeout_ms / 1000
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    doomed = [name for name in topics if name in existing]
    if not doomed:
        return
    futures = admin.delete_topics(doomed, operation_timeout=timeout_s, request_timeout=timeout_s)
    # Deleted by someone else in the meantime: gone is what was asked for.
    _await_all(futures, done_already=KafkaError.UNKNOWN_TOPIC_OR_PART)


def _await_all(futures: Mapping[str, Any], done_already: int) -> None:
    """Wait for each topic's admin request; the error ``done_already`` says another did it first."""
    for future in futures.values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != done_already:
                raise


@dataclass(frozen=True)
class ConsumerLag:
    """What each consumer group has still to read, and the end offsets it was measured against."""

    behind: dict[str, int]  # per group: events between its committed offsets and the end offsets
    partitions: dict[str, int]  # per group: partitions counted, every partition of its topics
    ends: Offsets  # high watermark of every partition of the topics asked about
    # per group: partitions it has committed an offset on; none: the group never ran, or not yet
    committed: dict[str, int] = field(default_factory=dict)


def consumer_lag(admin: AdminClient, groups: Mapping[str, Sequence[str]]) -> ConsumerLag:
    """Lag of each group over every partition of its topics, asked of the broker.

    Asking the broker works whatever state the consumers are in: a dead or stuck consumer reports
    nothing itself, which is exactly when lag matters. A partition the group never committed counts
    from its earliest offset: the consumers start there (``auto.offset.reset=earliest``), so
    everything retained is still to be read. A topic that does not exist has no partitions to count.
    Raises KafkaException when the broker cannot be asked.
    """
    partitions = _partitions(admin, sorted({topic for wanted in groups.values() for topic in wanted}))
    every = [TopicPartition(topic, p) for topic, ids in partitions.items() for p in ids]
    ends = _list_offsets(admin, every, OffsetSpec.latest())
    starts = _list_offsets(admin, every, OffsetSpec.earliest())
    behind: dict[str, int] = {}
    counted: dict[str, int] = {}
    with_commits: dict[str, int] = {}
    for group, wanted in groups.items():
        # One request per group: librdkafka lists the offsets of a single group per call.
        request = [ConsumerGroupTopicPartitions(group)]
        listed = admin.list_consumer_group_offsets(request)[group].result().topic_partitions or []
        committed = {(tp.topic, tp.partition): tp.offset for tp in listed}
        lag = count = done_count = 0
        for topic in wanted:
            for p in partitions.get(topic, []):
                done = committed.get((topic, p), -1)
                position = done if done >= 0 else starts.get((topic, p), 0)
                lag += max(0, ends.get((topic, p), 0) - position)
                count += 1
                done_count += done >= 0
        behind[group], counted[group], with_commits[group] = lag, count, done_count
    return ConsumerLag(behind, counted, ends, with_commits)


def end_offsets(admin: AdminClient, topics: Sequence[str]) -> Offsets:
    """The high watermark (the offset the next record will get) of every partition of ``topics``."""
    partitions = _partitions(admin, topics)
    every = [TopicPartition(topic, p) for topic, ids in partitions.items() for p in ids]
    return _list_offsets(admin, every, OffsetSpec.latest())


def _partitions(admin: AdminClient, topics: Sequence[str]) -> dict[str, list[int]]:
    """Partition ids of each topic; a topic that does not exist has none."""
    partitions: dict[str, list[int]] = {topic: [] for topic in topics}
    if topics:
        for topic, future in admin.describe_topics(TopicCollection(list(topics))).items():
            try:
                partitions[topic] = [p.id for p in future.result().partitions]
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
    return partitions


def _settling(error: KafkaError) -> bool:
    return bool(error.retriable() or error.code() in SETTLING)


def _list_offsets(admin: AdminClient, partitions: list[TopicPartition], spec: OffsetSpec) -> Offsets:
    if not partitions:
        return {}
    # A topic created a moment ago can answer "not leader for partition" until its leaders settle.
    deadline = time.monotonic() + LEADERS_SETTLE_S
    retrying = Backoff(0.05, 1.0).retrying(
        KafkaException,
        sleep=time.sleep,
        give_up=lambda: time.monotonic() >= deadline,
        failure="Kafka could not list offsets",
        only_if=lambda error: bool(error.args) and _settling(error.args[0]),
    )
    for attempt in retrying:
        with attempt:
            futures = admin.list_offsets(dict.fromkeys(partitions, spec))
            return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}
    raise AssertionError("unreachable: the last error is raised")


# --- consuming and producing ------------------------------------------------------------------------


class Record(Protocol):
    """What consumers read of a consumed message (confluent-kafka's ``Message`` has this shape)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> str | bytes | None: ...
    def value(self) -> str | bytes | None: ...


class BatchConsumer:
    """A group member that never commits on its own; ``on_revoke`` runs before partitions move.

    The interface is small (poll a batch, commit, seek, pause/resume) so the client stays swappable.
    """

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
                **client_config(settings),
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # A member that died keeps its partitions this long; the default (45 s) is too long.
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
        self.last_lag: int | None = None  # events behind, as of the last poll (at most 1 s old)
        self._lag_due = 0.0
        # The group's committed offset of each owned partition, once asked or committed by this
        # member: where a partition with nothing consumed yet stands, without a broker call per lag.
        self._committed: Offsets = {}
        self._consumer.subscribe(
            list(topics), on_revoke=self._revoked, on_assign=self._assigned, on_lost=self._lost
        )

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", _describe(partitions))
        self._owned = self._owned | {(tp.topic, tp.partition) for tp in partitions}
        for tp in partitions:  # another member may have committed since this one last owned it
            self._committed.pop((tp.topic, tp.partition), None)
        # Assigned here rather than by the library after this callback: pausing a partition this
        # member never owned before is silently ignored until it is assigned, and it then fetched
        # (and poll returned) records while the consumer was meant to be paused.
        consumer.assign(partitions)
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
        """Up to ``max_records`` records, waiting up to ``timeout_s`` for the first.

        Also what keeps the member in its group (rebalances are served here), so a paused consumer
        keeps calling it: it then returns nothing, even from partitions assigned during the pause.
        """
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
        now = time.monotonic()
        if now >= self._lag_due:
            # Sampled here, on the consuming thread, for readers on other threads (metrics): calling
            # into librdkafka from those could deadlock during a rebalance (see ``_owned``).
            self.last_lag = self.lag()
            self._lag_due = now + 1.0
        return records

    def commit(self, offsets: Offsets, asynchronous: bool = True) -> bool:
        """Commit ``offsets`` (the next offset to read, per partition).

        Returns False when a synchronous commit failed (it is logged); an asynchronous one is only sent.
        """
        if not offsets:
            return True
        partitions = [TopicPartition(topic, part, offset) for (topic, part), offset in offsets.items()]
        self._committed.update(offsets)
        try:
            if asynchronous:
                self._consumer.commit(offsets=partitions, asynchronous=True)
                return True
            done = self._consumer.commit(offsets=partitions, asynchronous=False) or []
        except KafkaException as exc:
            # A commit racing a rebalance fails; the events are replayed, and replays overwrite.
            log.warning("offset commit failed (events will be replayed): %s", exc)
            return False
        failed = [tp for tp in done if tp.error is not None]
        if failed:
            log.warning("offset commit failed for %s (events will be replayed)", _describe(failed))
        return not failed

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
        """Stop fetching from every partition, owned now or assigned later, until ``resume``."""
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

        Local (positions and the high watermarks of the last fetch responses), for a consumer's own
        progress line; ``consumer_lag`` is the broker's view of a group. A partition with nothing
        consumed yet counts from the group's committed offset, asked of the broker once per assignment.
        """
        total = 0
        try:
            positions = self._consumer.position(self._consumer.assignment())
            unknown = [
                tp for tp in positions if tp.offset < 0 and (tp.topic, tp.partition) not in self._committed
            ]
            if unknown:
                for tp in self._consumer.committed(unknown, timeout=COMMITTED_TIMEOUT_S):
                    self._committed[(tp.topic, tp.partition)] = tp.offset
            for tp in positions:
                low, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    return None
                start = tp.offset if tp.offset >= 0 else self._committed.get((tp.topic, tp.partition), -1)
                # Never committed either: the group starts at the earliest offset (empty: none ahead).
                total += max(0, high - (start if start >= 0 else max(low, 0)))
        except KafkaException:
            return None
        return total

    def close(self) -> None:
        """Leave the group without committing anything."""
        self._consumer.close()


class AckProducer:
    """Produces asynchronously; ``flush`` returns only once every record is acknowledged by all ISRs."""

    def __init__(self, settings: KafkaSettings, delivery_timeout_ms: int = 30_000) -> None:
        self._errors: list[str] = []
        self._config: dict[str, Any] = {
            **client_config(settings),
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
