"""The configuration users deploy with: Kafka with SASL, InfluxDB with auth, MLflow on PostgreSQL.

A private broker (its own ports and storage) that ``fireman services`` formats with a SCRAM user and
starts with a SASL_PLAINTEXT listener, beside a private InfluxDB with auth on, where ``fireman
services`` made the database and a non-admin user for fireman. fireman's clients get the credentials
from the ``FIREMAN_KAFKA_*`` and ``FIREMAN_INFLUXDB_*`` settings. The last test runs ingest, scoring
and monitoring as `fireman` processes in that configuration, with MLflow on a private PostgreSQL
(FIREMAN_POSTGRES_ENABLED), as deployments run it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from fireman.common.dataset import load_spambase
from fireman.common.influx import InfluxClient
from fireman.common.kafka_io import AckProducer, BatchConsumer, broker_reachable, ensure_topics
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import (
    DatasetSettings,
    InfluxSettings,
    KafkaSettings,
    MlflowSettings,
    PostgresSettings,
    ServicesSettings,
)
from fireman.services.manager import ServiceManager
from fireman.services.process import ServiceError, wait_until
from tests.conftest import REPO_ROOT, free_port, share_kafka_jars
from tests.support.background import answers, stop_process

pytestmark = pytest.mark.integration


FIREMAN = str(Path(sys.executable).with_name("fireman"))
SECURED = ["kafka", "influxdb", "mlflow"]  # mlflow needs postgres, which starts first


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServicesSettings]:
    """A private broker that only talks SASL/SCRAM-SHA-256, a private InfluxDB with auth on, and a
    private MLflow on PostgreSQL."""
    # Not pytest's tmp_path: its base is 0700, and the postgres OS user must pass through every parent
    # of its data directory (see test_postgres_backends.py).
    home = Path(tempfile.mkdtemp(prefix="fireman-secured-"))
    share_kafka_jars(home)
    kafka = KafkaSettings(
        port=free_port(),
        controller_port=free_port(),
        security_protocol="SASL_PLAINTEXT",
        sasl_username="fireman",
        sasl_password=SecretStr("fireman-secret"),
    )
    influx = InfluxSettings(
        port=free_port(),
        rpc_port=free_port(),
        username="fireman",
        password="fireman-influx-secret",
        admin_password=SecretStr("admin-secret"),
    )
    settings = ServicesSettings(
        state={"home": home},
        kafka=kafka,
        influxdb=influx,
        postgres=PostgresSettings(enabled=True, port=free_port(), password=SecretStr("pg-secret")),
        mlflow=MlflowSettings(port=free_port(), workers=1),
    )
    manager = ServiceManager(settings, REPO_ROOT)
    try:
        manager.start(SECURED, on_progress=lambda _: None)
        yield settings
    finally:
        manager.stop(list(manager.services), on_progress=lambda _: None)
        shutil.rmtree(home, ignore_errors=True)


def test_fireman_clients_authenticate_and_round_trip(sasl_kafka: ServicesSettings) -> None:
    kafka = sasl_kafka.kafka.model_copy(update={"topic_measurements": f"sasl-{uuid.uuid4().hex[:8]}"})
    ensure_topics(kafka)  # the admin client authenticates too
    producer = AckProducer(kafka)
    for i in range(100):
        producer.produce(kafka.topic_measurements, value=f"{i}".encode(), key=b"s")
    producer.flush()
    producer.close()
    consumer = BatchConsumer(kafka, f"sasl-{uuid.uuid4().hex[:8]}", [kafka.topic_measurements])
    seen: list[bytes] = []
    try:
        for _ in range(60):
            seen.extend(record.value() or b"" for record in consumer.poll(500, 1.0))
            if len(seen) >= 100:
                break
    finally:
        consumer.close()
    assert sorted(int(value) for value in seen) == list(range(100))


def test_clients_without_the_right_credentials_are_refused(sasl_kafka: ServicesSettings) -> None:
    kafka = sasl_kafka.kafka
    assert broker_reachable(kafka)
    wrong = kafka.model_copy(update={"sasl_password": SecretStr("not-the-password")})
    assert not broker_reachable(wrong)
    anonymous = kafka.model_copy(update={"security_protocol": "PLAINTEXT"})
    assert not broker_reachable(anonymous)


def test_a_restart_with_a_user_the_storage_never_had_says_what_to_do(sasl_kafka: ServicesSettings) -> None:
    # The storage was formatted with "fireman"; SCRAM users live in the cluster metadata from then on.
    other = sasl_kafka.model_copy(
        update={"kafka": sasl_kafka.kafka.model_copy(update={"sasl_username": "someone-else"})}
    )
    service = ServiceManager(other, REPO_ROOT).services["kafka"]
    with pytest.raises(ServiceError, match="formatted without the SCRAM user 'someone-else'"):
        service.prepare()


# One drift window at the monitor's default size. (A second would wait out Evidently's CPU budget.)
EVENTS = 1000
LABELLED_AT = 1_769_860_800_000  # epoch ms of the first label


def test_ingest_score_and_monitor_as_a_plain_user_over_sasl(
    sasl_kafka: ServicesSettings, dataset_settings: DatasetSettings, tmp_path: Path
) -> None:
    from fireman.training.settings import TrainingSettings
    from fireman.training.workflow import run_training

    # A real training run: the monitor needs the drift reference and hold-out metrics it logs.
    mlflow_names = sasl_kafka.mlflow.model_copy(update={"experiment": "secured", "model_name": "secured"})
    training = TrainingSettings(mlflow=mlflow_names, dataset=dataset_settings, n_estimators=40, n_jobs=1)
    run_training(training, source="file", promote="force")
    kafka, influx = sasl_kafka.kafka, sasl_kafka.influxdb
    assert kafka.sasl_password is not None and influx.password is not None
    collector = f"http://127.0.0.1:{free_port()}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("FIREMAN_")}
    env.update(
        FIREMAN_KAFKA_BOOTSTRAP=kafka.bootstrap_servers,
        FIREMAN_KAFKA_SECURITY_PROTOCOL=kafka.security_protocol,
        FIREMAN_KAFKA_SASL_USERNAME=str(kafka.sasl_username),
        FIREMAN_KAFKA_SASL_PASSWORD=kafka.sasl_password.get_secret_value(),
        FIREMAN_INFLUXDB_URL=influx.url,
        FIREMAN_INFLUXDB_DATABASE=influx.database,
        FIREMAN_INFLUXDB_USERNAME=str(influx.username),
        FIREMAN_INFLUXDB_PASSWORD=influx.password,
        FIREMAN_MLFLOW_TRACKING_URI=mlflow_names.tracking_uri,
        FIREMAN_MLFLOW_MODEL_NAME=mlflow_names.model_name,
        FIREMAN_COLLECTOR_PORT=collector.rsplit(":", 1)[1],
        # Free ports: other tests' processes may hold the default metrics ports (9101-9103).
        FIREMAN_SINK_METRICS_PORT=str(free_port()),
        FIREMAN_SCORER_METRICS_PORT=str(free_port()),
        FIREMAN_MONITOR_METRICS_PORT=str(free_port()),
    )
    processes: list[subprocess.Popen[Any]] = []
    for command in ("collector", "sink", "scorer", "monitor"):
        with (tmp_path / f"{command}.log").open("wb") as log:
            processes.append(
                subprocess.Popen([FIREMAN, command], env=env, stdout=log, stderr=subprocess.STDOUT)
            )

    def logs() -> str:
        return "\n".join(
            f"--- {c}\n" + (tmp_path / f"{c}.log").read_text()[-1500:]
            for c in ("collector", "sink", "scorer", "monitor")
        )

    def count(query: str) -> int:
        with InfluxClient(influx) as client:
            rows = client.query(query)
        return int(rows[0]["count"]) if rows else 0

    try:
        assert wait_until(lambda: answers(f"{collector}/healthz"), 60, 0.5), logs()
        frame = load_spambase(dataset_settings).sample(EVENTS, random_state=0)  # mixed, as served
        rows = frame[list(FEATURE_NAMES)].to_dict("records")
        for start in range(0, EVENTS, 200):
            batch = [
                {
                    "event_id": f"secured-{i}",
                    "sensor_id": "s-1",
                    "features": {k: (None if v != v else v) for k, v in rows[i].items()},
                }
                for i in range(start, start + 200)
            ]
            response = httpx.post(f"{collector}/v1/events", json=batch, timeout=30)
            assert response.status_code == 202, response.text
        labels = [
            {
                "event_id": f"secured-{i}",
                "sensor_id": "s-1",
                "label": int(label),
                "timestamp": LABELLED_AT + i,
            }
            for i, label in enumerate(frame["label"])
        ]
        for start in range(0, EVENTS, 500):
            response = httpx.post(f"{collector}/v1/labels", json=labels[start : start + 500], timeout=30)
            assert response.status_code == 202, response.text

        def stored() -> tuple[int, int, int, int]:
            return (
                count('SELECT count("event_id") FROM "measurements"'),
                count('SELECT count("event_id") FROM "predictions"'),
                count('SELECT count("share_drifted_features") FROM "drift" WHERE "tested" = 1'),
                count('SELECT count("accuracy") FROM "performance"'),
            )

        assert wait_until(lambda: stored()[:2] == (EVENTS, EVENTS), 120, 1.0), (stored(), logs())
        assert wait_until(lambda: stored()[2] >= 1 and stored()[3] >= 1, 180, 1.0), (stored(), logs())
    finally:
        for process in processes:
            stop_process(process)
    # Each consumer drained and committed; uvicorn re-raises SIGTERM once its graceful shutdown is done.
    assert [process.returncode for process in processes] == [-signal.SIGTERM, 0, 0, 0], logs()
