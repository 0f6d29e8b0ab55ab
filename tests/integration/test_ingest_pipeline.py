"""Generator -> collector -> Kafka -> sink -> InfluxDB, on real services."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pandas as pd
import pytest

from fireman.common.dataset import load_spambase
from fireman.common.events import is_binary
from fireman.common.influx import InfluxClient
from fireman.common.kafka_io import AckProducer, admin_client, consumer_lag
from fireman.common.pointtime import point_time_ns
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings, InfluxSettings, KafkaSettings
from fireman.streaming.collector import running
from fireman.streaming.generator import Generator
from fireman.streaming.settings import CollectorSettings, GeneratorSettings
from tests.conftest import free_port
from tests.integration.test_ingest_support import (
    TopicReader,
    influx_count,
    message_value,
    sink_running,
    wait_for,
)

pytestmark = pytest.mark.integration

EVENTS = 2000
LABEL_DELAY_S = 1.0


@pytest.fixture
def collector_url(kafka_topics: KafkaSettings) -> Iterator[str]:
    with running(CollectorSettings(port=free_port(), kafka=kafka_topics)) as url:
        yield url


@pytest.fixture(scope="module")
def spambase(dataset_settings: DatasetSettings) -> pd.DataFrame:
    return load_spambase(dataset_settings)


def test_generated_traffic_lands_on_kafka_and_in_influxdb(
    kafka_topics: KafkaSettings, influx_db: InfluxSettings, collector_url: str, spambase: pd.DataFrame
) -> None:
    settings = GeneratorSettings(
        collector_url=collector_url,
        rate=0,
        batch=20,
        limit=EVENTS,
        missing_rate=0.2,
        label_delay_s=LABEL_DELAY_S,
        label_fraction=0.5,
        seed=7,
    )
    with sink_running(kafka_topics, influx_db) as sink_stats, httpx.Client(base_url=collector_url) as client:
        stats = Generator(settings, client, spambase).run(threading.Event())
        assert (stats.sent, stats.accepted, stats.rejected, stats.failed) == (EVENTS, EVENTS, 0, 0)
        assert stats.labels_accepted == stats.labels_sent > 0.4 * EVENTS
        wait_for(lambda: influx_count(influx_db, "measurements") == EVENTS, 90, "2,000 points in InfluxDB")
        wait_for(lambda: influx_count(influx_db, "labels") == stats.labels_sent, 60, "the labels in InfluxDB")
    assert sink_stats.dead_lettered == 0

    measurements = TopicReader(kafka_topics, kafka_topics.topic_measurements)
    labels = TopicReader(kafka_topics, kafka_topics.topic_labels)
    try:
        measurements.read_until(lambda values: len(values) >= EVENTS, 60, "2,000 events on Kafka")
        labels.read_until(lambda values: len(values) >= stats.labels_sent, 60, "the labels on Kafka")
        events = {value["event_id"]: value for value in measurements.values()}
        assert len(events) == EVENTS
        # Labels are posted after the delay: each one reaches Kafka at least LABEL_DELAY_S after its event.
        # The collector's default format; readers decode it through the contract (fireman.common.events).
        assert all(is_binary(m.value) for m in measurements.messages)
        appended = {message_value(m.value)["event_id"]: m.timestamp for m in measurements.messages}
        for message in labels.messages:
            label = orjson.loads(message.value)
            assert label["timestamp"] == events[label["event_id"]]["timestamp"]
            assert message.timestamp - appended[label["event_id"]] >= LABEL_DELAY_S * 1000 - 50
    finally:
        measurements.close()
        labels.close()

    # Missing features are absent on Kafka and in InfluxDB, never 0.
    present = [len(event["features"]) for event in events.values()]
    missing_share = 1 - sum(present) / (EVENTS * len(FEATURE_NAMES))
    assert 0.18 < missing_share < 0.22
    with InfluxClient(influx_db) as influx:
        rows = {row["event_id"]: row for row in influx.query('SELECT * FROM "measurements"')}
        label_rows = influx.query('SELECT * FROM "labels"')
    assert len(rows) == EVENTS
    for event_id, event in list(events.items())[:300]:
        row = rows[event_id]
        assert row["sensor_id"] == event["sensor_id"]
        assert row["time"] == event["timestamp"]  # the point's time is the event's own millisecond
        stored = {name: row[name] for name in FEATURE_NAMES if row.get(name) is not None}
        assert stored == event["features"]
    label_by_id = {row["event_id"]: row for row in label_rows}
    assert len(label_by_id) == stats.labels_sent
    for event_id, row in label_by_id.items():
        assert row["time"] == events[event_id]["timestamp"] and row["label"] in (0, 1)


def test_replays_overwrite_and_poison_messages_go_to_the_dlq(
    kafka_topics: KafkaSettings, influx_db: InfluxSettings
) -> None:
    good = [
        {"event_id": f"ev-{i}", "sensor_id": "s-1", "timestamp": 1_769_860_800_000, "features": {"Cont_1": i}}
        for i in range(3)
    ]
    poison = [b"{not json", orjson.dumps({"event_id": "x", "sensor_id": "s-1", "features": {"Cont_1": 1}})]
    producer = AckProducer(kafka_topics)
    for value in [orjson.dumps(good[0]), *poison, orjson.dumps(good[1]), orjson.dumps(good[2])]:
        producer.produce(kafka_topics.topic_measurements, value=value, key=b"s-1")
    producer.produce(kafka_topics.topic_labels, value=b'{"event_id": "ev-0", "label": 7}', key=b"s-1")
    producer.flush()
    producer.close()

    with sink_running(kafka_topics, influx_db) as stats:
        wait_for(lambda: stats.commits >= 1 and stats.consumed == 6, 60, "the sink to commit all 6 messages")
    # Three events in the same millisecond of one sensor are three points, not one.
    assert influx_count(influx_db, "measurements") == 3
    assert stats.dead_lettered == 3

    dlq = TopicReader(kafka_topics, kafka_topics.topic_dlq)
    try:
        wait_for(lambda: len(dlq.poll()) >= 0 and len(dlq.messages) == 3, 30, "3 messages on the DLQ")
        errors = {m.value: dict(m.headers)["error"].decode() for m in dlq.messages}
    finally:
        dlq.close()
    assert "invalid JSON" in errors[b"{not json"]
    assert "timestamp" in errors[poison[1]]
    assert "label" in errors[b'{"event_id": "ev-0", "label": 7}']

    # A second consumer group replays everything: the same points are overwritten, not duplicated.
    with sink_running(kafka_topics, influx_db, group_id=f"replay-{uuid.uuid4().hex[:6]}") as replay:
        wait_for(lambda: replay.consumed == 6 and replay.commits >= 1, 60, "the replay")
    assert influx_count(influx_db, "measurements") == 3
    with InfluxClient(influx_db) as influx:
        times = sorted(row["time"] for row in influx.query('SELECT * FROM "measurements"'))
    assert times == [1_769_860_800_000] * 3
    assert len({point_time_ns(1_769_860_800_000, f"ev-{i}") for i in range(3)}) == 3


def test_fireman_sink_drains_and_commits_on_sigterm(
    kafka_topics: KafkaSettings, influx_db: InfluxSettings
) -> None:
    import os
    import signal
    import subprocess
    import sys

    producer = AckProducer(kafka_topics)
    for i in range(200):
        event = {
            "event_id": f"ev-{i}",
            "sensor_id": f"s-{i % 4}",
            "timestamp": 1_769_860_800_000 + i,
            "features": {},
        }
        producer.produce(kafka_topics.topic_measurements, value=orjson.dumps(event), key=b"s")
    producer.flush()
    producer.close()
    group = f"sink-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "FIREMAN_KAFKA_BOOTSTRAP": kafka_topics.bootstrap_servers,
        "FIREMAN_KAFKA_TOPIC_MEASUREMENTS": kafka_topics.topic_measurements,
        "FIREMAN_KAFKA_TOPIC_LABELS": kafka_topics.topic_labels,
        "FIREMAN_KAFKA_TOPIC_DLQ": kafka_topics.topic_dlq,
        "FIREMAN_INFLUXDB_URL": influx_db.url,
        "FIREMAN_INFLUXDB_DATABASE": influx_db.database,
        "FIREMAN_SINK_GROUP_ID": group,
    }
    proc = subprocess.Popen([sys.executable, "-m", "fireman.cli", "sink"], env=env, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: influx_count(influx_db, "measurements") == 200, 60, "the sink to write 200 events")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert b"sink stopped" in stderr
    lag = consumer_lag(admin_client(kafka_topics), {group: [kafka_topics.topic_measurements]})
    assert sum(lag.ends.values()) == 200
    assert lag.behind[group] == 0  # every partition committed at its end
