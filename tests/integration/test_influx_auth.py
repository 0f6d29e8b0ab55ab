"""InfluxDB with auth on, run the way the compose stack runs it: fireman is a plain user.

A private InfluxDB (its own ports and data) where ``fireman services`` set up an admin, the database
and fireman's user with rights on that database only. The sink used to crash-loop here: its
``CREATE DATABASE`` was refused (403) and only "unavailable" was forgiven.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from fireman.common.influx import InfluxClient, InfluxError
from fireman.common.kafka_io import AckProducer
from fireman.common.settings import InfluxSettings, KafkaSettings, ServicesSettings
from fireman.services.influxdb import set_up_auth
from fireman.services.manager import ServiceManager
from tests.conftest import REPO_ROOT, free_port
from tests.integration.test_ingest_support import influx_count, wait_for

pytestmark = pytest.mark.integration

USER, PASSWORD = "fireman", "fireman-secret"


@pytest.fixture(scope="module")
def auth_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxSettings]:
    """fireman's settings (a plain user) for a private InfluxDB with auth on."""
    influx = InfluxSettings(
        port=free_port(),
        rpc_port=free_port(),
        database="fireman_auth",
        username=USER,
        password=PASSWORD,
        admin_password="admin-secret",
    )
    settings = ServicesSettings(state={"home": tmp_path_factory.mktemp("influx-auth")}, influxdb=influx)
    manager = ServiceManager(settings, REPO_ROOT)
    manager.start(["influxdb"], on_progress=lambda _: None)
    try:
        yield influx
    finally:
        manager.stop(["influxdb"], on_progress=lambda _: None)


def test_fireman_works_in_the_operators_database_without_admin_rights(auth_influx: InfluxSettings) -> None:
    with InfluxClient(auth_influx) as client:
        with pytest.raises(InfluxError, match="requires admin privilege"):
            client.create_database()  # the user really is not an admin
        client.ensure_database()  # ... and that is fine: the database is there
    wrong = auth_influx.model_copy(update={"password": "wrong"})
    with InfluxClient(wrong) as intruder, pytest.raises(InfluxError, match="401"):
        intruder.query('SELECT * FROM "measurements"')
    set_up_auth(auth_influx)  # a restart of the service finds everything in place


def test_a_database_nobody_created_is_a_clear_error(auth_influx: InfluxSettings) -> None:
    elsewhere = auth_influx.model_copy(update={"database": "never_created"})
    with InfluxClient(elsewhere) as client, pytest.raises(InfluxError) as raised:
        client.ensure_database()
    message = str(raised.value)
    assert "'never_created' is not usable by user 'fireman'" in message
    assert 'GRANT ALL ON "never_created" TO "fireman"' in message


def test_the_sink_says_what_the_operator_must_do_and_exits_2(
    auth_influx: InfluxSettings, kafka_topics: KafkaSettings
) -> None:
    env = sink_env(auth_influx.model_copy(update={"database": "never_created"}), kafka_topics)
    done = subprocess.run(
        [sys.executable, "-m", "fireman.cli", "sink"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert 'An InfluxDB admin must run CREATE DATABASE "never_created"' in " ".join(done.stderr.split())


def sink_env(influx: InfluxSettings, kafka: KafkaSettings) -> dict[str, str]:
    return {
        **os.environ,
        "FIREMAN_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "FIREMAN_KAFKA_TOPIC_MEASUREMENTS": kafka.topic_measurements,
        "FIREMAN_KAFKA_TOPIC_LABELS": kafka.topic_labels,
        "FIREMAN_KAFKA_TOPIC_DLQ": kafka.topic_dlq,
        "FIREMAN_INFLUXDB_URL": influx.url,
        "FIREMAN_INFLUXDB_DATABASE": influx.database,
        "FIREMAN_INFLUXDB_USERNAME": USER,
        "FIREMAN_INFLUXDB_PASSWORD": PASSWORD,
        "FIREMAN_SINK_GROUP_ID": f"sink-{kafka.topic_measurements}",
    }


def test_the_sink_process_ingests_as_a_plain_user(
    auth_influx: InfluxSettings, kafka_topics: KafkaSettings, tmp_path: Path
) -> None:
    producer = AckProducer(kafka_topics)
    for i in range(100):
        event = {
            "event_id": f"auth-{i}",
            "sensor_id": "s-1",
            "timestamp": 1_769_860_800_000 + i,
            "features": {},
        }
        producer.produce(kafka_topics.topic_measurements, value=orjson.dumps(event), key=b"s")
    producer.flush()
    producer.close()
    env = sink_env(auth_influx, kafka_topics)
    log_path = tmp_path / "sink.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fireman.cli", "sink"], env=env, stderr=log)
    try:
        wait_for(
            lambda: proc.poll() is not None or influx_count(auth_influx, "measurements") == 100,
            60,
            "the sink to write 100 events",
        )
        assert proc.poll() is None, log_path.read_text()[-2000:]  # it did not exit on a refused CREATE
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log_path.read_text()[-2000:]
