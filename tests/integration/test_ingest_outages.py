"""Outages on private servers: InfluxDB down (the sink catches up) and Kafka down (the collector 503s)."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from fireman.common.influx import InfluxClient
from fireman.common.kafka_io import AckProducer, admin_client, consumer_lag, ensure_topics
from fireman.common.settings import InfluxSettings, KafkaSettings
from fireman.services.manager import ServiceManager
from fireman.streaming.collector import running
from fireman.streaming.settings import CollectorSettings
from tests.conftest import free_port
from tests.integration.test_ingest_support import TopicReader, influx_count, sink_running, wait_for

pytestmark = pytest.mark.integration


def events(count: int, sensor: str = "s-1") -> list[dict]:
    return [
        {"sensor_id": f"{sensor}-{i % 5}", "features": {"Cont_1": float(i), "Cont_2": None}}
        for i in range(count)
    ]


def test_sink_catches_up_after_influxdb_comes_back(
    private_services: ServiceManager, kafka_topics: KafkaSettings
) -> None:
    private_services.start(["influxdb"], on_progress=lambda _: None)
    influx = private_services.settings.influxdb.model_copy(
        update={"database": f"outage_{uuid.uuid4().hex[:8]}"}
    )
    with InfluxClient(influx) as client:
        client.create_database()
    with (
        running(CollectorSettings(port=free_port(), kafka=kafka_topics)) as url,
        httpx.Client(base_url=url, timeout=30) as http,
        sink_running(kafka_topics, influx) as stats,
    ):
        private_services.stop(["influxdb"], on_progress=lambda _: None)
        ids = []
        for start in range(0, 500, 100):  # ingest keeps working while InfluxDB is down
            response = http.post("/v1/events", json=events(500)[start : start + 100])
            assert response.status_code == 202, response.text
            ids += response.json()["event_ids"]
        wait_for(lambda: stats.write_failures >= 2, 60, "the sink to fail and retry")
        assert stats.commits == 0  # nothing is committed that InfluxDB has not stored
        private_services.start(["influxdb"], on_progress=lambda _: None)
        wait_for(lambda: influx_count(influx, "measurements") == 500, 90, "all 500 events in InfluxDB")
        wait_for(lambda: stats.commits >= 1, 30, "the commit after the write")
    with InfluxClient(influx) as client:
        stored = {row["event_id"] for row in client.query('SELECT "event_id" FROM "measurements"')}
    assert stored == set(ids)


def test_sink_stopped_while_influxdb_is_down_leaves_its_offsets_uncommitted(
    kafka_topics: KafkaSettings,
) -> None:
    producer = AckProducer(kafka_topics)
    for i in range(50):
        event = {"event_id": f"ev-{i}", "sensor_id": "s", "timestamp": 1_769_860_800_000 + i, "features": {}}
        producer.produce(kafka_topics.topic_measurements, value=orjson.dumps(event), key=b"s")
    producer.flush()
    producer.close()
    unreachable = InfluxSettings(port=free_port())  # nothing listens there
    group = f"sink-{uuid.uuid4().hex[:8]}"
    with sink_running(kafka_topics, unreachable, group_id=group, shutdown_timeout_s=1) as stats:
        wait_for(lambda: stats.consumed > 0 and stats.write_failures >= 2, 30, "the sink to fail and retry")
    assert (stats.written, stats.commits) == (0, 0)
    topics = [kafka_topics.topic_measurements, kafka_topics.topic_labels]
    lag = consumer_lag(admin_client(kafka_topics), {group: topics})
    assert lag.behind[group] == 50  # the group hands every message out again


def test_collector_answers_503_while_kafka_is_down_and_recovers(private_services: ServiceManager) -> None:
    private_services.start(["kafka"], on_progress=lambda _: None)
    tag = uuid.uuid4().hex[:8]
    kafka: KafkaSettings = private_services.settings.kafka.model_copy(
        update={"topic_measurements": f"m-{tag}", "topic_labels": f"l-{tag}"}
    )
    ensure_topics(kafka, [kafka.topic_measurements, kafka.topic_labels])
    settings = CollectorSettings(port=free_port(), kafka=kafka, readiness_interval_s=0.5, ack_timeout_s=5)
    with running(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        wait_for(lambda: http.get("/readyz").status_code == 200, 30, "the collector to be ready")
        before = http.post("/v1/events", json=events(3, "before"))
        assert before.status_code == 202, before.text

        private_services.stop(["kafka"], on_progress=lambda _: None)
        wait_for(lambda: http.get("/readyz").status_code != 200, 30, "/readyz to report Kafka down")
        assert http.get("/healthz").status_code == 200  # alive, just not ready
        for path, body in (
            ("/v1/events", events(10, "down")),
            ("/v1/labels", {"event_id": "e", "label": 1, "sensor_id": "s", "timestamp": 1_769_860_800_000}),
        ):
            refused = http.post(path, json=body)
            assert refused.status_code == 503, refused.text
            assert "Kafka" in refused.json()["detail"]

        private_services.start(["kafka"], on_progress=lambda _: None)
        wait_for(lambda: http.get("/readyz").status_code == 200, 60, "/readyz after Kafka restarts")
        after = http.post("/v1/events", json=events(3, "after"))
        assert after.status_code == 202, after.text

    accepted = set(before.json()["event_ids"] + after.json()["event_ids"])
    reader = TopicReader(kafka, kafka.topic_measurements)
    try:
        reader.read_until(
            lambda values: {v["event_id"] for v in values} >= accepted, 60, "the accepted events"
        )
        reader.catch_up()
        sensors = {value["sensor_id"].split("-")[0] for value in reader.values()}
    finally:
        reader.close()
    assert len(reader.messages) == 6 and sensors == {"before", "after"}  # nothing of the refused request
