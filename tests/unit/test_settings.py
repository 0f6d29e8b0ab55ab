"""Settings come from FIREMAN_* variables, and the service list parser rejects unknown names."""

from __future__ import annotations

import pytest

from fireman.common.settings import InfluxSettings, KafkaSettings, MlflowSettings, ServicesSettings
from fireman.services.manager import parse_names
from fireman.services.process import ServiceError


def test_defaults_are_the_documented_ports() -> None:
    settings = ServicesSettings()
    assert (settings.kafka.port, settings.influxdb.port, settings.mlflow.port, settings.airflow.port) == (
        9092,
        8086,
        5000,
        8080,
    )


def test_every_port_and_url_follows_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIREMAN_KAFKA_PORT", "19092")
    monkeypatch.setenv("FIREMAN_INFLUXDB_PORT", "18086")
    monkeypatch.setenv("FIREMAN_MLFLOW_PORT", "15000")
    monkeypatch.setenv("FIREMAN_HOME", "/tmp/somewhere")
    settings = ServicesSettings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.influxdb.url == "http://127.0.0.1:18086"
    assert settings.mlflow.tracking_uri == "http://127.0.0.1:15000"
    assert str(settings.state.root) == "/tmp/somewhere"


def test_explicit_remote_endpoints_override_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIREMAN_KAFKA_BOOTSTRAP", "kafka:29092")
    monkeypatch.setenv("FIREMAN_INFLUXDB_URL", "http://influxdb:8086")
    monkeypatch.setenv("FIREMAN_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert KafkaSettings().bootstrap_servers == "kafka:29092"
    assert InfluxSettings().url == "http://influxdb:8086"
    assert MlflowSettings().tracking_uri == "http://mlflow:5000"


def test_service_names_are_started_in_dependency_order() -> None:
    assert parse_names(None) == ["kafka", "influxdb", "mlflow"]
    assert parse_names("mlflow, kafka") == ["kafka", "mlflow"]
    assert parse_names("airflow") == ["airflow"]


@pytest.mark.parametrize("only", ["kafak", "kafka,zookeeper", " , ", "", ",,"])
def test_unknown_or_empty_service_names_are_an_error(only: str) -> None:
    with pytest.raises(ServiceError, match="choose from kafka, influxdb, mlflow, airflow"):
        parse_names(only)


def test_the_gate_and_the_monitor_read_one_live_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from fireman.monitoring.settings import MonitorSettings
    from fireman.training.settings import TrainingSettings

    monkeypatch.setenv("FIREMAN_LIVE_MAX_EVENTS", "5000")
    monkeypatch.setenv("FIREMAN_LIVE_LOOKBACK_HOURS", "6")
    assert TrainingSettings().live == MonitorSettings().live
    assert (MonitorSettings().live.max_events, MonitorSettings().live.lookback_hours) == (5000, 6.0)
    # A window that can never hold N events would leave live promotion waiting forever.
    monkeypatch.setenv("FIREMAN_TRAIN_LIVE_MIN_EVENTS", "6000")
    with pytest.raises(ValidationError, match=r"FIREMAN_LIVE_MAX_EVENTS \(5000\) is below"):
        TrainingSettings()


def test_every_kafka_client_gets_the_sasl_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert KafkaSettings().client_config() == {"bootstrap.servers": "127.0.0.1:9092"}
    monkeypatch.setenv("FIREMAN_KAFKA_BOOTSTRAP", "kafka.example:9096")
    monkeypatch.setenv("FIREMAN_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FIREMAN_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("FIREMAN_KAFKA_SASL_USERNAME", "fireman")
    monkeypatch.setenv("FIREMAN_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("FIREMAN_KAFKA_SSL_CA_LOCATION", "/etc/ssl/kafka-ca.pem")
    settings = KafkaSettings()
    assert settings.client_config() == {
        "bootstrap.servers": "kafka.example:9096",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "fireman",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ssl/kafka-ca.pem",
    }
    assert "s3cret" not in repr(settings)  # never in a log line
