"""A real Prometheus scrapes the collector's /metrics and the consumers' metrics ports while events flow:
collector -> Kafka -> sink, scorer and monitor, each a `fireman` process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings, InfluxSettings, KafkaSettings, MlflowSettings
from fireman.services.process import wait_until
from tests.conftest import free_port
from tests.support.background import stop_process
from tests.support.prometheus import prometheus_scraping
from tests.support.scoring import fit_pipeline, register_model

pytestmark = pytest.mark.integration

FIREMAN = str(Path(sys.executable).with_name("fireman"))
EVENTS = 300


def test_prometheus_scrapes_the_collector_and_every_consumer(
    kafka_topics: KafkaSettings,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
    dataset_settings: DatasetSettings,
    tmp_path: Path,
) -> None:
    from fireman.common.dataset import load_spambase

    frame = load_spambase(dataset_settings)
    version = register_model(
        mlflow_names, fit_pipeline(dataset_settings, n_estimators=5), frame[list(FEATURE_NAMES)].head(20)
    )
    ports = {"collector": free_port(), "sink": free_port(), "scorer": free_port(), "monitor": free_port()}
    tag = uuid.uuid4().hex[:8]
    env = {key: value for key, value in os.environ.items() if not key.startswith("FIREMAN_")}
    env.update(
        FIREMAN_KAFKA_BOOTSTRAP=kafka_topics.bootstrap_servers,
        FIREMAN_KAFKA_TOPIC_MEASUREMENTS=kafka_topics.topic_measurements,
        FIREMAN_KAFKA_TOPIC_LABELS=kafka_topics.topic_labels,
        FIREMAN_KAFKA_TOPIC_PREDICTIONS=kafka_topics.topic_predictions,
        FIREMAN_KAFKA_TOPIC_DLQ=kafka_topics.topic_dlq,
        FIREMAN_INFLUXDB_URL=influx_db.url,
        FIREMAN_INFLUXDB_DATABASE=influx_db.database,
        FIREMAN_MLFLOW_TRACKING_URI=mlflow_names.tracking_uri,
        FIREMAN_MLFLOW_MODEL_NAME=mlflow_names.model_name,
        FIREMAN_COLLECTOR_PORT=str(ports["collector"]),
        FIREMAN_SINK_GROUP_ID=f"sink-{tag}",
        FIREMAN_SCORER_GROUP_ID=f"scorer-{tag}",
        FIREMAN_MONITOR_GROUP_ID=f"monitor-{tag}",
        # Free ports instead of the defaults (9101-9103): other tests' processes may hold those.
        FIREMAN_SINK_METRICS_PORT=str(ports["sink"]),
        FIREMAN_SCORER_METRICS_PORT=str(ports["scorer"]),
        FIREMAN_MONITOR_METRICS_PORT=str(ports["monitor"]),
    )
    processes: list[subprocess.Popen[Any]] = []
    for command in ("collector", "sink", "scorer", "monitor"):
        with (tmp_path / f"{command}.log").open("wb") as log:
            processes.append(
                subprocess.Popen([FIREMAN, command], env=env, stdout=log, stderr=subprocess.STDOUT)
            )
    jobs = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    collector = f"http://{jobs['collector']}"
    try:
        with prometheus_scraping(jobs, tmp_path / "prometheus") as prometheus:

            def logs() -> str:
                return "\n".join(
                    (tmp_path / f"{c}.log").read_text()[-1500:] for c in ("collector", "sink", "scorer")
                )

            assert wait_until(lambda: set(prometheus.targets().values()) == {"up"}, 120, 0.5), (
                prometheus.target_errors(),
                logs(),
            )
            rows = frame.head(EVENTS)
            for start in range(0, EVENTS, 100):
                batch = [
                    {"sensor_id": "s-1", "features": {k: (None if v != v else v) for k, v in row.items()}}
                    for row in rows.iloc[start : start + 100][list(FEATURE_NAMES)].to_dict("records")
                ]
                assert httpx.post(f"{collector}/v1/events", json=batch, timeout=30).status_code == 202
            bad = httpx.post(f"{collector}/v1/events", json={"sensor_id": "s-1", "features": {"Cont_1": "x"}})
            assert bad.status_code == 422

            def at_least(expression: str, minimum: float) -> bool:
                value = prometheus.value(expression)
                return value is not None and value >= minimum

            expectations = {
                'fireman_collector_requests_total{route="/v1/events",status="202"}': EVENTS / 100,
                'fireman_collector_rejects_total{reason="invalid_field"}': 1,
                f'fireman_collector_records_total{{topic="{kafka_topics.topic_measurements}"}}': EVENTS,
                "fireman_collector_publish_seconds_count": EVENTS / 100,
                "fireman_sink_written_total": EVENTS,
                "fireman_sink_batches_total": 1,
                "fireman_scorer_scored_total": EVENTS,
                "fireman_scorer_committed_total": EVENTS,
                f'fireman_scorer_model{{role="production",version="{version}"}}': 1,
                'fireman_scorer_latency_ms{quantile="0.99"}': 0,
                "fireman_monitor_measurements_total": EVENTS,
                "fireman_monitor_predictions_total": EVENTS,
            }
            for expression, minimum in expectations.items():
                assert wait_until(lambda e=expression, m=minimum: at_least(e, m), 90, 0.5), (
                    expression,
                    logs(),
                )
            assert wait_until(lambda: prometheus.value("fireman_scorer_lag") == 0, 30, 0.5)
            assert wait_until(lambda: prometheus.value("fireman_sink_lag") == 0, 30, 0.5)
            # The monitor watches the scorer's group (FIREMAN_SCORER_GROUP_ID above), which has caught up.
            assert wait_until(lambda: prometheus.value("fireman_monitor_giving_way") == 0, 30, 0.5)
    finally:
        for process in processes:
            stop_process(process)
