"""Helpers shared by the ingest integration tests (no tests of its own)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from fireman.services.process import wait_until
from fireman_common.influx import InfluxClient
from fireman_common.settings import InfluxSettings, KafkaSettings
from streaming.settings import SinkSettings
from streaming.sink import SinkStats, run_sink
from tests.conftest import free_port


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    assert wait_until(check, timeout_s=timeout, interval_s=0.1), (
        f"timed out after {timeout} s waiting for {what}"
    )


class TopicReader:
    """Reads a topic from the beginning (no consumer group), remembering everything seen so far."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False, bootstrap_timeout_ms=10_000
        )
        # A topic created a moment ago on a fresh broker can be missing from the first metadata.
        partitions: set[int] = set()

        def known() -> bool:
            partitions.update(self.consumer.partitions_for_topic(topic) or ())
            return bool(partitions)

        if not wait_until(known, timeout_s=30):
            raise RuntimeError(f"topic {topic} has no partitions in Kafka's metadata after 30 s")
        self.partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(self.partitions)
        self.consumer.seek_to_beginning(*self.partitions)
        self.messages: list[Any] = []

    def poll(self) -> list[Any]:
        fresh = []
        for records in self.consumer.poll(timeout_ms=200, max_records=10_000).values():
            fresh.extend(records)
        self.messages.extend(fresh)
        return fresh

    def catch_up(self, timeout: float = 30) -> None:
        """Read until the position of every partition is at its end offset."""
        ends = self.consumer.end_offsets(self.partitions)

        def at_end() -> bool:
            self.poll()
            return all(self.consumer.position(tp) >= end for tp, end in ends.items())

        wait_for(at_end, timeout, "the end of the topic")

    def values(self) -> list[dict[str, Any]]:
        return [json.loads(message.value) for message in self.messages]

    def read_until(self, check: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str) -> None:
        def done() -> bool:
            self.poll()
            return check(self.values())

        wait_for(done, timeout, what)

    def close(self) -> None:
        self.consumer.close()


def influx_count(influx: InfluxSettings, measurement: str) -> int:
    with InfluxClient(influx) as client:
        rows = client.query(f'SELECT count("event_id") FROM "{measurement}"')
    return int(rows[0]["count"]) if rows else 0


@contextmanager
def sink_running(kafka: KafkaSettings, influx: InfluxSettings, **overrides: Any) -> Iterator[SinkStats]:
    """The sink on a thread with a group of its own; stopped (drain + commit) on exit."""
    settings = SinkSettings(
        kafka=kafka,
        influxdb=influx,
        group_id=overrides.pop("group_id", f"sink-{kafka.topic_measurements}"),
        poll_timeout_ms=200,
        retry_initial_s=0.2,
        retry_max_s=1.0,
        **overrides,
    )
    stop = threading.Event()
    stats = SinkStats()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            run_sink(settings, stop, stats=stats)
        except BaseException as exc:
            failure.append(exc)
            raise

    thread = threading.Thread(target=target, name="sink", daemon=True)
    thread.start()
    try:
        yield stats
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive(), "the sink did not stop"
    assert not failure, f"the sink crashed: {failure[0]!r}"


def collector_port() -> int:
    return free_port()
