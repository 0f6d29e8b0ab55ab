"""`fireman scorer` as a real process: SIGKILL mid-stream then restart, SIGTERM exits 0 after committing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from fireman.bench.workload import make_events, produce_events, spambase_rows
from fireman.common.influx import InfluxClient
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings, InfluxSettings, KafkaSettings, MlflowSettings
from tests.support.scoring import fit_pipeline, read_topic, register_model, wait_for

# Two process starts (MLflow import, model load) and 20,000 events: ~1-2 min on 2 cores.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIREMAN = Path(sys.executable).parent / "fireman"
EVENTS = 20_000


def scorer_env(
    kafka: KafkaSettings, influx: InfluxSettings, mlflow: MlflowSettings, group: str
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FIREMAN_")}
    env.update(
        {
            "FIREMAN_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
            "FIREMAN_KAFKA_TOPIC_MEASUREMENTS": kafka.topic_measurements,
            "FIREMAN_KAFKA_TOPIC_PREDICTIONS": kafka.topic_predictions,
            "FIREMAN_KAFKA_TOPIC_DLQ": kafka.topic_dlq,
            "FIREMAN_INFLUXDB_URL": influx.url,
            "FIREMAN_INFLUXDB_DATABASE": influx.database,
            "FIREMAN_MLFLOW_TRACKING_URI": mlflow.tracking_uri,
            "FIREMAN_MLFLOW_MODEL_NAME": mlflow.model_name,
            "FIREMAN_SCORER_GROUP_ID": group,
            # Small batches keep the run long enough to be killed in the middle of it.
            "FIREMAN_SCORER_MAX_BATCH": "50",
            "FIREMAN_SCORER_LOG_INTERVAL_S": "1",
        }
    )
    return env


def count(influx: InfluxSettings, query: str) -> int:
    with InfluxClient(influx) as client:
        rows = client.query(query)
    return int(rows[0]["count"]) if rows else 0


def committed_lag(kafka: KafkaSettings, group: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": group})
    try:
        partitions = [TopicPartition(kafka.topic_measurements, p) for p in range(kafka.partitions)]
        lag = 0
        for tp in consumer.committed(partitions, timeout=10):
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def start(env: dict[str, str], log: Path) -> subprocess.Popen[Any]:
    with log.open("ab") as handle:
        return subprocess.Popen([str(FIREMAN), "scorer"], env=env, stdout=handle, stderr=subprocess.STDOUT)


def test_sigkill_mid_stream_then_restart_scores_every_event_once_in_influx(
    kafka_topics: KafkaSettings,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
    dataset_settings: DatasetSettings,
    tmp_path: Path,
) -> None:
    rows = spambase_rows(dataset_settings, EVENTS)
    register_model(
        mlflow_names, fit_pipeline(dataset_settings, n_estimators=10), rows[list(FEATURE_NAMES)].head(20)
    )
    events = make_events(rows, sensors=4)
    produce_events(kafka_topics, events)
    group = f"scorer-{uuid.uuid4().hex[:8]}"
    env = scorer_env(kafka_topics, influx_db, mlflow_names, group)
    log = tmp_path / "scorer.log"
    points = "SELECT count(event_id) FROM predictions"

    first = start(env, log)
    try:
        assert wait_for(lambda: count(influx_db, points) >= 2000, 120), log.read_text()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
    assert first.returncode == -signal.SIGKILL
    assert count(influx_db, points) < EVENTS, "the scorer finished before it was killed"

    second = start(env, log)
    try:
        assert wait_for(lambda: count(influx_db, points) >= EVENTS, 180), log.read_text()[-3000:]
        assert wait_for(lambda: committed_lag(kafka_topics, group) == 0, 60)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    finally:
        second.kill()

    ids = {
        orjson.loads(m.value())["event_id"]
        for m in read_topic(kafka_topics, kafka_topics.topic_predictions, EVENTS)
    }
    assert ids == {e.event_id for e in events}
    assert count(influx_db, points) == EVENTS
    assert count(influx_db, "SELECT count(distinct(event_id)) FROM predictions") == EVENTS
    assert "scorer stopped" in log.read_text()
