"""fireman.common.kafka_io against the real broker: the batch consumer's pause, and the admin requests."""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from fireman.common.kafka_io import (
    AckProducer,
    BatchConsumer,
    Record,
    admin_client,
    consumer_lag,
    delete_topics,
    end_offsets,
    ensure_topics,
)
from fireman.common.settings import KafkaSettings
from fireman.services.process import wait_until
from tests.conftest import free_port

pytestmark = pytest.mark.integration

PRODUCED = 200


def produce(kafka: KafkaSettings, count: int) -> None:
    producer = AckProducer(kafka)
    for i in range(count):
        producer.produce(kafka.topic_measurements, value=b"%d" % i, key=b"sensor-%d" % (i % 16))
    producer.flush()
    producer.close()


def poll_for(consumer: BatchConsumer, seconds: float) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        records += consumer.poll(1000, 0.2)
    return records


def values(records: list[Record]) -> list[bytes]:
    return [bytes(record.value() or b"") for record in records]


def test_a_paused_consumer_takes_nothing_even_from_partitions_assigned_while_paused(
    kafka_topics: KafkaSettings,
) -> None:
    """What the sink relies on while InfluxDB is down: polling keeps the member in its group, fetches
    nothing, and a rebalance during the pause hands it partitions that stay paused too."""
    produce(kafka_topics, PRODUCED)
    topic = kafka_topics.topic_measurements
    group = f"paused-{uuid.uuid4().hex[:8]}"
    paused = BatchConsumer(kafka_topics, group, [topic])
    paused.pause()  # before its first assignment: every partition it gets is new to it
    other: BatchConsumer | None = None
    try:
        assert poll_for(paused, 5) == []
        assert len(paused.assignment()) == kafka_topics.partitions  # in the group, owning everything

        # A second member joins: the rebalance is served inside the paused member's polls.
        other = BatchConsumer(kafka_topics, group, [topic])
        taken: list[Record] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (paused.assignment() and other.assignment()):
            taken += other.poll(1000, 0.2)
            assert paused.poll(1000, 0.2) == []
        assert paused.assignment() and other.assignment()
        assert not set(paused.assignment()) & set(other.assignment())
        taken += poll_for(other, 2)
        assert taken  # the unpaused member reads its share meanwhile
        assert paused.poll(1000, 0.5) == []

        # The other member leaves: its partitions move to the paused one, which still takes nothing.
        other.close()
        other = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(paused.assignment()) < kafka_topics.partitions:
            assert paused.poll(1000, 0.2) == []
        assert len(paused.assignment()) == kafka_topics.partitions
        assert poll_for(paused, 2) == []

        # Resumed, it reads the rest from the start (nothing was committed): every record exactly once
        # between the two members, none skipped by the pause.
        paused.resume()
        rest: list[Record] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(rest) < PRODUCED:
            rest += paused.poll(1000, 0.2)
        owned_by_other = {(r.topic(), r.partition()) for r in taken}
        again = [r for r in rest if (r.topic(), r.partition()) in owned_by_other]
        assert set(values(taken)) <= set(values(again))  # uncommitted, so read again
        assert sorted(values(rest), key=int) == [b"%d" % i for i in range(PRODUCED)]
    finally:
        paused.close()
        if other is not None:
            other.close()


def test_consumer_lag_counts_from_the_committed_offset_or_the_earliest(kafka_topics: KafkaSettings) -> None:
    produce(kafka_topics, PRODUCED)
    topic, labels = kafka_topics.topic_measurements, kafka_topics.topic_labels
    group = f"lag-{uuid.uuid4().hex[:8]}"
    consumer = BatchConsumer(kafka_topics, group, [topic])
    try:
        records: list[Record] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(records) < PRODUCED:
            records += consumer.poll(1000, 0.2)
        first = records[0]
        # One partition committed halfway through what it holds; the others never.
        same = [r for r in records if r.partition() == first.partition()]
        halfway = same[len(same) // 2]
        assert consumer.commit({(topic, halfway.partition() or 0): halfway.offset() or 0}, asynchronous=False)
    finally:
        consumer.close()

    admin = admin_client(kafka_topics)
    never = f"never-{uuid.uuid4().hex[:8]}"
    lag = consumer_lag(admin, {group: [topic], never: [topic, labels, "no-such-topic"]})
    assert lag.behind[group] == PRODUCED - (halfway.offset() or 0)
    assert lag.behind[never] == PRODUCED
    assert lag.partitions == {group: kafka_topics.partitions, never: 2 * kafka_topics.partitions}
    assert lag.committed == {group: 1, never: 0}
    assert lag.ends == end_offsets(admin, [topic, labels])
    assert sum(lag.ends.values()) == PRODUCED


def test_ensure_topics_creates_only_what_is_missing(kafka_topics: KafkaSettings) -> None:
    fresh = f"fresh-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(kafka_topics, [kafka_topics.topic_measurements]) == []
    try:
        assert ensure_topics(kafka_topics, [kafka_topics.topic_measurements, fresh], partitions=2) == [fresh]
        assert len(end_offsets(admin_client(kafka_topics), [fresh])) == 2
    finally:
        delete_topics(kafka_topics, [fresh])


def test_lag_of_a_restarted_member_counts_from_the_committed_offsets(kafka_topics: KafkaSettings) -> None:
    """A member that starts where its group committed everything, with nothing new: no position yet
    on any partition, and nothing ahead (it once counted from the earliest offset instead)."""
    produce(kafka_topics, PRODUCED)
    topic = kafka_topics.topic_measurements
    group = f"restart-{uuid.uuid4().hex[:8]}"
    first = BatchConsumer(kafka_topics, group, [topic])
    try:
        records: list[Record] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(records) < PRODUCED:
            records += first.poll(1000, 0.2)
        ends = {(r.topic(), r.partition()): (r.offset() or 0) + 1 for r in records}
        assert first.commit(ends, asynchronous=False)  # type: ignore[arg-type]
    finally:
        first.close()

    restarted = BatchConsumer(kafka_topics, group, [topic])
    try:
        # Assigned, and every partition's high watermark known from a fetch: lag is then measured.
        assert wait_until(lambda: restarted.poll(1000, 0.2) == [] and restarted.lag() is not None, 30)
        assert len(restarted.assignment()) == kafka_topics.partitions
        assert restarted.lag() == 0
    finally:
        restarted.close()


def test_an_unreachable_broker_is_one_warning_and_librdkafka_lines_stay_at_debug(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every refused reconnect (~20 a second) was a raw librdkafka line on stderr, and fireman itself
    said nothing of the outage."""
    nowhere = KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}")
    caplog.set_level(logging.DEBUG, logger="fireman.common.kafka_io")
    consumer = BatchConsumer(nowhere, f"down-{uuid.uuid4().hex[:8]}", ["measurements"])
    producer = AckProducer(nowhere)
    try:
        producer.produce("measurements", b"x")

        def retried_a_while() -> bool:
            consumer.poll(10, 0.2)
            producer._producer.poll(0)  # serves the producer's callbacks, as its flush does
            failed = [
                r for r in caplog.records if r.name.endswith(".librdkafka") and "FAIL" in r.getMessage()
            ]
            return len(failed) >= 10

        assert wait_until(retried_a_while, 30)
    finally:
        consumer.close()
        producer._producer.purge()
    raw = [r for r in caplog.records if r.name.endswith(".librdkafka")]
    assert {r.levelno for r in raw} == {logging.DEBUG}
    assert "FAIL" not in capfd.readouterr().err
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # One per client (the consumer, the producer), however many reconnects failed.
    assert len(warnings) == 2, warnings
    assert all(f"Kafka unreachable at {nowhere.bootstrap_servers}" in w for w in warnings), warnings
