"""MLflow and Airflow on the PostgreSQL that ``fireman services`` runs (FIREMAN_POSTGRES_ENABLED).

A private PostgreSQL and MLflow on free ports, in a state dir of their own. The registry's data is
read back from PostgreSQL itself, it survives a restart of PostgreSQL, and Airflow's metadata
database is migrated into PostgreSQL with the environment fireman starts Airflow with.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from pydantic import SecretStr

from fireman.common import mlflow_uri
from fireman.common.settings import AirflowSettings, MlflowSettings, PostgresSettings, ServicesSettings
from fireman.services.airflow import AirflowService
from fireman.services.manager import ServiceManager
from fireman.services.postgres import PostgresService
from fireman.services.process import PidRecord
from tests.conftest import REPO_ROOT, free_port, unique

pytestmark = pytest.mark.integration

PASSWORD = "pg-secret:/@%"  # characters a URI must escape


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def pg_stack() -> Iterator[ServiceManager]:
    # Not pytest's tmp_path: its base (/tmp/pytest-of-root) is 0700, which pytest restores at every session
    # start, and the postgres user must pass through every parent of the data directory. Below /tmp
    # only this directory (FIREMAN_HOME, 0700 too) needs opening, which the service does itself.
    home = Path(tempfile.mkdtemp(prefix="fireman-pg-"))
    settings = ServicesSettings(
        state={"home": home},
        postgres=PostgresSettings(enabled=True, port=free_port(), password=SecretStr(PASSWORD)),
        mlflow=MlflowSettings(port=free_port(), workers=1),
        airflow=AirflowSettings(port=free_port(), worker_log_port=free_port(), trigger_log_port=free_port()),
    )
    manager = ServiceManager(settings, REPO_ROOT)
    try:
        manager.start(["mlflow"], on_progress=quiet)
        yield manager
    finally:
        manager.stop(list(manager.services), on_progress=quiet)
        shutil.rmtree(home, ignore_errors=True)


def query(
    settings: PostgresSettings, database: str, sql: str, *args: Any, **login: Any
) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` as fireman's role over TCP, the way MLflow and Airflow connect."""
    credentials = {"user": settings.user, "password": PASSWORD, **login}
    with (
        closing(
            psycopg2.connect(
                host=settings.host, port=settings.port, dbname=database, connect_timeout=5, **credentials
            )
        ) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute(sql, args)
        return cursor.fetchall()


def registered_version(mlflow: MlflowSettings) -> tuple[str, str]:
    name = unique("pg-model")
    client = mlflow_uri.client(mlflow)
    client.create_registered_model(name)
    version = client.create_model_version(name, source="s3://fireman-tests/no-artifacts", run_id=None).version
    client.set_registered_model_alias(name, "production", version)
    return name, str(version)


def test_mlflow_keeps_its_registry_in_postgresql(pg_stack: ServiceManager) -> None:
    settings = pg_stack.settings
    assert pg_stack.started == ["postgres", "mlflow"]  # started first, because MLflow needs it
    postgres = pg_stack.services["postgres"]
    assert isinstance(postgres, PostgresService)
    if os.geteuid() == 0:  # PostgreSQL refuses root: the server and its files are the postgres user's
        assert pwd.getpwuid(postgres.data_dir.stat().st_uid).pw_name == "postgres"
        record = PidRecord.read(postgres.pid_path)
        server = record.process() if record else None
        assert server is not None and server.username() == "postgres"
    name, version = registered_version(settings.mlflow)
    assert (
        mlflow_uri.client(settings.mlflow).get_model_version_by_alias(name, "production").version == version
    )

    rows = query(
        settings.postgres,
        "mlflow",
        "SELECT m.name, a.version FROM registered_models m "
        "JOIN registered_model_aliases a ON a.name = m.name WHERE m.name = %s AND a.alias = 'production'",
        name,
    )
    assert rows == [(name, int(version))]


def test_only_fireman_role_with_its_password_gets_in_over_tcp(pg_stack: ServiceManager) -> None:
    settings = pg_stack.settings.postgres
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        query(settings, "mlflow", "SELECT 1", password="wrong")
    with pytest.raises(psycopg2.OperationalError, match="rejects connection"):
        query(settings, "postgres", "SELECT 1", user="postgres")


def test_the_registry_survives_a_restart_of_postgresql(pg_stack: ServiceManager) -> None:
    mlflow = pg_stack.settings.mlflow
    name, version = registered_version(mlflow)
    postgres = pg_stack.services["postgres"]
    pg_stack.stop(["postgres"], on_progress=quiet)
    assert "database system is shut down" in postgres.log_path.read_text()
    pg_stack.start(["postgres"], on_progress=quiet)
    log = postgres.log_path.read_text()
    # A shutdown that was not clean would show as recovery on the next start.
    assert "was interrupted" not in log and "automatic recovery" not in log, log[-3000:]
    # MLflow kept running: its pool checks a connection before use and reconnects.
    assert mlflow_uri.client(mlflow).get_model_version_by_alias(name, "production").version == version


def test_airflow_migrates_its_metadata_into_postgresql(pg_stack: ServiceManager) -> None:
    service = pg_stack.services["airflow"]
    assert isinstance(service, AirflowService)
    service.dir.mkdir(parents=True, exist_ok=True)
    env = service.environment()
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://fireman:")
    airflow = [sys.executable, "-m", "airflow", "db"]
    for command in ("migrate", "check"):
        done = subprocess.run(
            [*airflow, command], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    settings = pg_stack.settings.postgres
    assert query(settings, "airflow", "SELECT count(*) FROM alembic_version") == [(1,)]
    tables = query(settings, "airflow", "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert {"dag", "dag_run", "task_instance", "asset_event"} <= {table for (table,) in tables}
    assert not (service.dir / "airflow.db").exists()  # no SQLite file beside it
