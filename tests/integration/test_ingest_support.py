"""Helpers shared by the ingest integration tests (no tests of its own)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from fireman.common.events import decode_event, is_binary
from fireman.common.influx import InfluxClient
from fireman.common.kafka_io import admin_client, end_offsets
from fireman.common.settings import InfluxSettings, KafkaSettings
from fireman.services.process import wait_until
from fireman.streaming.settings import SinkSettings
from fireman.streaming.sink import SinkStats, run_sink
from tests.conftest import free_port
from tests.support.background import on_thread


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    assert wait_until(check, timeout_s=timeout, interval_s=0.1), (
        f"timed out after {timeout} s waiting for {what}"
    )


def message_value(value: bytes) -> dict[str, Any]:
    """A message as a dict: a binary measurement through the contract's decoder, anything else as JSON."""
    return asdict(decode_event(value)) if is_binary(value) else json.loads(value)


@dataclass(frozen=True)
class Message:
    """A consumed record, as the tests read it."""

    key: bytes | None
    value: bytes
    timestamp: int  # epoch ms, as the broker appended it
    headers: list[tuple[str, bytes]]


class TopicReader:
    """Reads a topic from the beginning (no consumer group), remembering everything seen so far."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.topic = topic
        self.admin = admin_client(kafka)
        # A topic created a moment ago on a fresh broker can be missing from the first metadata.
        partitions: list[int] = []

        def known() -> bool:
            partitions[:] = sorted(p for _, p in end_offsets(self.admin, [topic]))
            return bool(partitions)

        if not wait_until(known, timeout_s=30):
            raise RuntimeError(f"topic {topic} has no partitions in Kafka's metadata after 30 s")
        # Assigned, not subscribed: the group id is never used, nothing joins a group or commits.
        self.consumer = Consumer(
            {"bootstrap.servers": kafka.bootstrap_servers, "group.id": "unused", "enable.auto.commit": False}
        )
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.positions = dict.fromkeys(partitions, 0)
        self.messages: list[Message] = []

    def poll(self) -> list[Message]:
        fresh = []
        for record in self.consumer.consume(num_messages=10_000, timeout=0.2):
            if record.error() is None:
                self.positions[record.partition()] = record.offset() + 1
                fresh.append(
                    Message(record.key(), record.value(), record.timestamp()[1], record.headers() or [])
                )
        self.messages.extend(fresh)
        return fresh

    def catch_up(self, timeout: float = 30) -> None:
        """Read until the position of every partition is at its end offset."""
        ends = end_offsets(self.admin, [self.topic])

        def at_end() -> bool:
            self.poll()
            return all(self.positions[p] >= end for (_, p), end in ends.items())

        wait_for(at_end, timeout, "the end of the topic")

    def values(self) -> list[dict[str, Any]]:
        return [message_value(message.value) for message in self.messages]

    def read_until(self, check: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str) -> None:
        def done() -> bool:
            self.poll()
            return check(self.values())

        wait_for(done, timeout, what)

    def close(self) -> None:
        self.consumer.close()


def influx_count(influx: InfluxSettings, measurement: str, where: str = "") -> int:
    """Points of ``measurement`` (those matching the InfluxQL condition ``where``, if one is given)."""
    with InfluxClient(influx) as client:
        condition = f" WHERE {where}" if where else ""
        rows = client.query(f'SELECT count("event_id") FROM "{measurement}"{condition}')
    return int(rows[0]["count"]) if rows else 0


@contextmanager
def sink_running(kafka: KafkaSettings, influx: InfluxSettings, **overrides: Any) -> Iterator[SinkStats]:
    """The sink on a thread with a group of its own; stopped (drain + commit) on exit."""
    # Short polls and retries at most 1 s apart: the outage tests then see the sink catch up within
    # seconds of InfluxDB's return instead of waiting out a full back-off.
    settings = SinkSettings(
        kafka=kafka,
        influxdb=influx.model_copy(update={"retry_max_s": 1.0}),
        group_id=overrides.pop("group_id", f"sink-{kafka.topic_measurements}"),
        poll_timeout_ms=200,
        **overrides,
    )
    stats = SinkStats()
    with on_thread(lambda stop: run_sink(settings, stop, stats=stats), "sink"):
        yield stats


def collector_port() -> int:
    return free_port()
