"""The real thing: ``airflow standalone`` started by fireman, a retrain triggered through the REST API.

The Airflow here is private (a temporary state dir and free ports), so it never meets one a
developer runs. The DAG's tasks run in Airflow's own worker processes, which get the test's
InfluxDB database and MLflow names through the environment, as ``fireman services start`` passes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from fireman.services.airflow import ADMIN_USER, AirflowService
from fireman.services.manager import ServiceManager
from fireman_common.settings import (
    AirflowSettings,
    DatasetSettings,
    InfluxSettings,
    MlflowSettings,
    ServicesSettings,
)
from tests.conftest import REPO_ROOT, free_port
from tests.integration.test_airflow_support import (
    EVENTS,
    UNLABELLED,
    forget_in_process_airflow,
    wait_for,
    write_history,
)

DAG_ID = "retrain_spam_classifier"


@pytest.fixture
def standalone(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
) -> Iterator[ServiceManager]:
    home = tmp_path_factory.mktemp("fireman-airflow")
    forget_in_process_airflow(monkeypatch)
    # Read by the Airflow processes (and so by the DAG's tasks) when the service starts.
    for key, value in {
        "FIREMAN_HOME": str(home),
        "FIREMAN_INFLUXDB_URL": influx_db.url,
        "FIREMAN_INFLUXDB_DATABASE": influx_db.database,
        "FIREMAN_MLFLOW_TRACKING_URI": mlflow_names.tracking_uri,
        "FIREMAN_MLFLOW_EXPERIMENT": mlflow_names.experiment,
        "FIREMAN_MLFLOW_MODEL_NAME": mlflow_names.model_name,
        "FIREMAN_TRAIN_N_ESTIMATORS": "30",
        "FIREMAN_TRAIN_N_JOBS": "1",
        "FIREMAN_TRAIN_MIN_ROWS": "100",
        # No scheduled runs of either DAG during the test: only the one it triggers.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    }.items():
        monkeypatch.setenv(key, value)
    settings = ServicesSettings(
        state={"home": home},
        start_timeout_s=600,
        airflow=AirflowSettings(port=free_port(), worker_log_port=free_port(), trigger_log_port=free_port()),
    )
    manager = ServiceManager(settings, REPO_ROOT)
    try:
        yield manager
    finally:
        manager.stop(["airflow"], on_progress=lambda _: None)


@pytest.mark.slow
def test_trigger_retrain_through_the_rest_api(
    standalone: ServiceManager,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
    dataset_settings: DatasetSettings,
) -> None:
    from mlflow import MlflowClient

    now = datetime.now(UTC).replace(microsecond=0)
    write_history(influx_db, dataset_settings, now - timedelta(hours=2), timedelta(hours=1))
    progress: list[str] = []

    standalone.start(["airflow"], on_progress=progress.append)

    service = standalone.services["airflow"]
    assert isinstance(service, AirflowService)
    # The password was generated into the state dir and shown once, by the start that created it.
    password = service.admin_password()
    assert password and service.password_file.parent == standalone.settings.state.root / "airflow"
    assert password in progress[0]
    # Later commands (`fireman services status`) name the file instead.
    later = AirflowService(standalone.settings, REPO_ROOT).describe()
    assert password not in later and str(service.password_file) in later
    api = httpx.Client(base_url=standalone.settings.airflow.url, timeout=30)
    token = api.post("/auth/token", json={"username": ADMIN_USER, "password": password})
    assert token.status_code == 201, token.text
    api.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    wait_for(lambda: api.get(f"/api/v2/dags/{DAG_ID}").status_code == 200, 300, "the DAG to be parsed")
    assert api.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
    conf = {"window_hours": 3, "promote_mode": "auto", "gate_metric": "f1", "margin": 0.0}
    created = api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    assert created.status_code == 200, created.text
    run_id = created.json()["dag_run_id"]

    def finished() -> bool:
        state = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
        return state in ("success", "failed")

    wait_for(finished, 600, f"DAG run {run_id} to finish", interval_s=3)
    run: dict[str, Any] = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()
    tasks = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    assert run["state"] == "success", {t["task_id"]: t["state"] for t in tasks}
    assert {t["task_id"]: t["state"] for t in tasks} == dict.fromkeys(
        ["extract", "validate", "train", "evaluate_and_promote", "report"], "success"
    )

    client = MlflowClient(mlflow_names.tracking_uri)
    production = client.get_model_version_by_alias(mlflow_names.model_name, "production")
    mlflow_run = client.get_run(str(production.run_id))
    assert mlflow_run.data.tags["fireman.airflow_run"] == f"{DAG_ID}/{run_id}"
    assert mlflow_run.data.tags["retrain.decision"] == "first"
    assert mlflow_run.data.tags["retrain.rows"] == str(EVENTS - UNLABELLED)
