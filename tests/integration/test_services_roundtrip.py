"""A real round trip through each local service: Kafka, InfluxDB and the MLflow registry."""

from __future__ import annotations

import uuid

import mlflow
import numpy as np
from sklearn.linear_model import LogisticRegression

from fireman.common.influx import InfluxClient, Point
from fireman.common.kafka_io import AckProducer, BatchConsumer
from fireman.common.mlflow_uri import bind
from fireman.common.mlflow_uri import client as mlflow_client
from fireman.common.settings import InfluxSettings, KafkaSettings, MlflowSettings


def test_kafka_consumer_group_reads_exactly_what_was_produced(kafka_topics: KafkaSettings) -> None:
    topic = kafka_topics.topic_measurements
    sent = {f"msg-{i}-{uuid.uuid4().hex[:6]}" for i in range(500)}
    producer = AckProducer(kafka_topics)
    for value in sorted(sent):
        producer.produce(topic, key=value.encode(), value=value.encode())
    producer.flush()  # raises unless every record is acknowledged
    producer.close()

    consumer = BatchConsumer(kafka_topics, f"roundtrip-{uuid.uuid4().hex[:6]}", [topic])
    received: list[str] = []
    next_offsets: dict[tuple[str, int], int] = {}
    try:
        for _ in range(100):
            for record in consumer.poll(10_000, 0.5):
                received.append(bytes(record.value() or b"").decode())
                next_offsets[(topic, record.partition() or 0)] = (record.offset() or 0) + 1
            if len(received) >= len(sent):
                break
        assert consumer.commit(next_offsets, asynchronous=False)
        # One more poll must bring nothing new: exactly N, not at least N.
        extra = len(consumer.poll(10_000, 1.0))
    finally:
        consumer.close()
    assert extra == 0
    assert len(received) == len(sent)
    assert set(received) == sent


def test_influx_points_written_are_read_back_with_influxql(influx_db: InfluxSettings) -> None:
    base_ns = 1_700_000_000_000_000_000
    points = [
        Point(
            "roundtrip",
            {"value": float(i), "event_id": f"e{i}"},
            base_ns + i * 1_000_000,
            {"sensor_id": "s 1"},
        )
        for i in range(100)
    ]
    with InfluxClient(influx_db) as client:
        assert client.write(points) == 100
        # A replay overwrites the same points instead of adding new ones.
        client.write(points[:10])
        rows = client.query('SELECT "value", "event_id" FROM "roundtrip" GROUP BY "sensor_id"')
    assert len(rows) == 100
    assert rows[0]["sensor_id"] == "s 1"
    assert [row["value"] for row in rows] == [float(i) for i in range(100)]
    assert rows[42]["event_id"] == "e42"
    assert rows[1]["time"] - rows[0]["time"] == 1  # epoch milliseconds


def test_mlflow_registers_a_version_and_resolves_it_by_alias(mlflow_names: MlflowSettings) -> None:
    bind(mlflow_names)
    mlflow.set_experiment(mlflow_names.experiment)
    features = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(features, [0, 0, 1, 1])
    with mlflow.start_run() as run:
        mlflow.log_metric("accuracy", 1.0)
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=mlflow_names.model_name)
    assert info.registered_model_version is not None
    version = str(info.registered_model_version)
    client = mlflow_client(mlflow_names)
    client.set_registered_model_alias(mlflow_names.model_name, "production", version)

    resolved = client.get_model_version_by_alias(mlflow_names.model_name, "production")
    assert resolved.version == version
    assert resolved.run_id == run.info.run_id
    loaded = mlflow.sklearn.load_model(f"models:/{mlflow_names.model_name}@production")
    assert list(loaded.predict(np.array([[0.0], [3.0]]))) == [0, 1]
