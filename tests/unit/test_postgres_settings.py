"""FIREMAN_POSTGRES_*: off, MLflow and Airflow keep their SQLite files and the services are today's; on,
PostgreSQL is a service started before them and both connect to it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from fireman.common.settings import ServicesSettings
from fireman.services.manager import SERVICE_TYPES, ServiceManager, parse_names
from fireman.services.postgres import PostgresService, can_pass
from fireman.services.process import ServiceError
from tests.conftest import REPO_ROOT


def manager(monkeypatch: pytest.MonkeyPatch, home: Path, **env: str) -> ServiceManager:
    monkeypatch.setenv("FIREMAN_HOME", str(home))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return ServiceManager(ServicesSettings(), REPO_ROOT)


def test_by_default_mlflow_and_airflow_keep_sqlite_and_the_services_are_unchanged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    services = manager(monkeypatch, tmp_path)
    assert not services.settings.postgres.enabled
    assert list(services.services) == ["kafka", "influxdb", "mlflow", "airflow"] == list(SERVICE_TYPES)
    assert parse_names(None, available=services.services) == ["kafka", "influxdb", "mlflow"]
    assert services.with_needs(["mlflow", "airflow"]) == ["mlflow", "airflow"]
    mlflow_env = services.services["mlflow"].environment()
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    airflow_env = services.services["airflow"].environment()
    assert (
        airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        == f"sqlite:///{tmp_path.resolve()}/airflow/airflow.db"
    )
    with pytest.raises(ServiceError, match="postgres: with FIREMAN_POSTGRES_ENABLED=true"):
        parse_names("postgres,mlflow", available=services.services)


def test_enabled_postgres_starts_first_and_mlflow_and_airflow_use_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    password = "p@ss:w/rd%$HOME"  # every character a URL or Airflow's config would otherwise eat
    services = manager(
        monkeypatch,
        tmp_path,
        FIREMAN_POSTGRES_ENABLED="true",
        FIREMAN_POSTGRES_PORT="15432",
        FIREMAN_POSTGRES_PASSWORD=password,
    )
    assert list(services.services) == ["postgres", "kafka", "influxdb", "mlflow", "airflow"]
    assert parse_names(None, available=services.services) == ["postgres", "kafka", "influxdb", "mlflow"]
    assert services.with_needs(["kafka", "mlflow", "airflow"]) == ["kafka", "postgres", "mlflow", "airflow"]
    assert services.with_needs(["kafka"]) == ["kafka"]

    mlflow_uri = services.services["mlflow"].environment()["MLFLOW_BACKEND_STORE_URI"]
    airflow_uri = services.services["airflow"].environment()["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert "$" not in airflow_uri  # Airflow expands $VARIABLES in its settings from the environment
    for uri, database in ((mlflow_uri, "mlflow"), (airflow_uri, "airflow")):
        url = make_url(uri)  # how MLflow and Airflow read it: SQLAlchemy
        # psycopg2 named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed
        assert (url.drivername, url.username, url.password) == ("postgresql+psycopg2", "fireman", password)
        assert (url.host, url.port, url.database) == ("127.0.0.1", 15432, database)
    assert services.services["postgres"].ports() == [15432]


def test_without_a_password_the_uri_has_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    services = manager(monkeypatch, tmp_path, FIREMAN_POSTGRES_ENABLED="1", FIREMAN_POSTGRES_USER="mlops")
    uri = services.services["mlflow"].environment()["MLFLOW_BACKEND_STORE_URI"]
    assert uri == "postgresql+psycopg2://mlops@127.0.0.1:5432/mlflow"


def test_fireman_role_may_not_be_the_superuser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    services = manager(monkeypatch, tmp_path, FIREMAN_POSTGRES_ENABLED="1", FIREMAN_POSTGRES_USER="postgres")
    with pytest.raises(ServiceError, match="FIREMAN_POSTGRES_USER may not be 'postgres'"):
        services.services["postgres"].check_prerequisites()


def test_a_state_dir_too_deep_for_the_socket_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    deep = tmp_path / ("d" * 100)
    service = manager(monkeypatch, deep, FIREMAN_POSTGRES_ENABLED="1").services["postgres"]
    assert isinstance(service, PostgresService)
    with pytest.raises(ServiceError, match="set FIREMAN_HOME to a shorter path"):
        service.prepare()
    assert not service.data_dir.exists()


@pytest.mark.parametrize(
    ("mode", "owner", "group", "passes"),
    [
        (0o700, 0, 0, False),  # root's private directory
        (0o711, 0, 0, True),
        (0o750, 0, 104, True),  # the server's group may enter
        (0o705, 0, 104, False),  # its group is denied, even though others may enter
        (0o700, 101, 104, True),  # its own
        (0o070, 101, 104, False),  # owner bits alone count for the owner
    ],
)
def test_who_may_enter_a_directory(mode: int, owner: int, group: int, passes: bool) -> None:
    assert can_pass(stat.S_IFDIR | mode, owner, group, uid=101, gids={104}) is passes
