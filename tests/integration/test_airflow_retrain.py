"""``retrain_spam_classifier`` end to end through Airflow's own ``dag.test()``, on real InfluxDB and MLflow.

History is written to InfluxDB the way the sink writes it (``measurements`` and ``labels`` joined on
``event_id``); the DAG's tasks run in this process against a metadata database of the test's own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fireman.common.influx import InfluxClient
from fireman.common.mlflow_uri import client as mlflow_client
from fireman.common.settings import DatasetSettings, InfluxSettings, MlflowSettings
from tests.integration.test_airflow_support import (
    EVENTS,
    UNLABELLED,
    configure_airflow,
    ensure_airflow_db,
    load_dag,
    write_history,
)

configure_airflow()


@pytest.fixture
def retrain_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, influx_db: InfluxSettings, mlflow_names: MlflowSettings
) -> MlflowSettings:
    """What the DAG's tasks read: the test's database, experiment and model, and a small forest."""
    ensure_airflow_db()
    monkeypatch.setenv("FIREMAN_HOME", str(tmp_path))
    monkeypatch.setenv("FIREMAN_INFLUXDB_URL", influx_db.url)
    monkeypatch.setenv("FIREMAN_INFLUXDB_DATABASE", influx_db.database)
    monkeypatch.setenv("FIREMAN_MLFLOW_TRACKING_URI", mlflow_names.tracking_uri)
    monkeypatch.setenv("FIREMAN_MLFLOW_EXPERIMENT", mlflow_names.experiment)
    monkeypatch.setenv("FIREMAN_MLFLOW_MODEL_NAME", mlflow_names.model_name)
    monkeypatch.setenv("FIREMAN_TRAIN_N_ESTIMATORS", "30")
    monkeypatch.setenv("FIREMAN_TRAIN_N_JOBS", "1")
    monkeypatch.setenv("FIREMAN_TRAIN_MIN_ROWS", "100")
    # The runs here pass a window_start, as monitor_drift does after a shift; their 440 labelled rows are
    # enough to show the DAG's steps, while the default (2,000) would make them wait for more.
    monkeypatch.setenv("FIREMAN_TRAIN_SHIFT_MIN_ROWS", "100")
    return mlflow_names


def set_running(run: Any) -> None:
    """Put a finished DAG run back to running; ``dag.test()`` then clears and re-runs its tasks."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        stored = session.get(DagRun, run.id)
        assert stored is not None
        stored.state = DagRunState.RUNNING


def retrains(influx: InfluxSettings) -> list[tuple[str, str, str, str]]:
    with InfluxClient(influx) as client:
        rows = client.query("SELECT * FROM retrains")
    return [(row["run_id"], row["trigger"], row["window_start"], row["window_end"]) for row in rows]


def task_states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_retrain_end_to_end_registers_and_promotes_idempotently(
    retrain_env: MlflowSettings, influx_db: InfluxSettings, dataset_settings: DatasetSettings
) -> None:

    now = datetime.now(UTC).replace(microsecond=0)
    window_start = now - timedelta(hours=3)
    window_end = now - timedelta(hours=1)
    write_history(influx_db, dataset_settings, window_start, timedelta(hours=1))
    dag = load_dag("retrain_spam_classifier")
    conf = {
        "window_start": window_start.isoformat(),
        "window_end": window_end.isoformat(),
        "promote_mode": "auto",
    }

    run: Any = dag.test(logical_date=now, run_after=now, run_conf=conf)

    assert str(run.state) == "success", task_states(run)
    client = mlflow_client(retrain_env)
    name = retrain_env.model_name
    versions = client.search_model_versions(f"name = '{name}'")
    assert [v.version for v in versions] == ["1"]
    production = client.get_model_version_by_alias(name, "production")
    assert production.version == "1"
    # The promotion decision, as the gate recorded it on the version.
    assert production.tags["gate.decision"] == "first"
    mlflow_run = client.get_run(str(production.run_id))
    assert mlflow_run.data.tags["fireman.airflow_run"] == f"retrain_spam_classifier/{run.run_id}"
    assert mlflow_run.data.tags["retrain.decision"] == "first"
    assert mlflow_run.data.tags["retrain.rows"] == str(EVENTS - UNLABELLED)
    assert "v1 trained on" in mlflow_run.data.tags["retrain.summary"]
    assert mlflow_run.data.params["rows_total"] == str(EVENTS - UNLABELLED)
    assert mlflow_run.data.params["unlabelled_excluded"] == str(UNLABELLED)
    assert mlflow_run.data.params["data_since"] == window_start.isoformat()
    # Its last task recorded the success (what monitor_drift's cool-down reads, for alert-triggered runs).
    success = [(run.run_id, "manual", window_start.isoformat(), window_end.isoformat())]
    assert retrains(influx_db) == success

    # Clearing the DAG run and running it again (what "Clear" does in the UI) trains nothing new.
    set_running(run)
    again: Any = dag.test(logical_date=now, run_after=now, run_conf=conf)

    assert again.run_id == run.run_id
    assert str(again.state) == "success", task_states(again)
    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    assert client.get_model_version_by_alias(name, "production").version == "1"
    assert retrains(influx_db) == success  # the same point, written again


def test_unusable_window_fails_at_once_without_training(
    retrain_env: MlflowSettings, influx_db: InfluxSettings
) -> None:

    now = datetime.now(UTC).replace(microsecond=0)
    dag = load_dag("retrain_spam_classifier")

    run: Any = dag.test(logical_date=now, run_conf={"window_hours": 1})

    states = task_states(run)
    assert str(run.state) == "failed", states
    # An empty window is not worth a retry: the task fails on its first try, nothing downstream runs.
    extract = next(ti for ti in run.get_task_instances() if ti.task_id == "extract")
    assert (str(extract.state), extract.try_number) == ("failed", 1)
    assert states["train"] == "upstream_failed"
    assert states["record_success"] == "upstream_failed"
    assert retrains(influx_db) == []  # a failed retrain starts no cool-down
    client = mlflow_client(retrain_env)
    assert client.search_model_versions(f"name = '{retrain_env.model_name}'") == []
