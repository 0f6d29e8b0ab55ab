"""The real thing: ``airflow standalone`` started by fireman, a retrain triggered through the REST API.

The Airflow here is private (a temporary state dir and free ports), so it never meets one a
developer runs. The DAG's tasks run in Airflow's own worker processes, which get the test's
InfluxDB database and MLflow names through the environment, as ``fireman services start`` passes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import sync_playwright

from fireman.common.mlflow_uri import client as mlflow_client
from fireman.common.settings import (
    AirflowSettings,
    DatasetSettings,
    InfluxSettings,
    MlflowSettings,
    ServicesSettings,
)
from fireman.services.airflow import ADMIN_USER, AirflowService
from fireman.services.manager import ServiceManager
from tests.conftest import REPO_ROOT, free_port
from tests.integration.airflow_ui import log_in, trigger_with_defaults
from tests.integration.test_airflow_support import (
    EVENTS,
    RETRAIN_TASKS,
    UNLABELLED,
    forget_in_process_airflow,
    wait_for,
    write_history,
)
from tests.integration.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS

DAG_ID = "retrain_spam_classifier"
TASKS = RETRAIN_TASKS


@contextmanager
def private_airflow(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
    **settings_env: str,
) -> Iterator[ServiceManager]:
    """A standalone Airflow on free ports whose tasks use the test's InfluxDB database and model names."""
    forget_in_process_airflow(monkeypatch)
    # Read by the Airflow processes (and so by the DAG's tasks) when the service starts. Names of the
    # test's own, not behaviour: every other setting is the caller's to change, with its reason.
    for key, value in {
        "FIREMAN_HOME": str(home),
        "FIREMAN_INFLUXDB_URL": influx_db.url,
        "FIREMAN_INFLUXDB_DATABASE": influx_db.database,
        "FIREMAN_MLFLOW_TRACKING_URI": mlflow_names.tracking_uri,
        "FIREMAN_MLFLOW_EXPERIMENT": mlflow_names.experiment,
        "FIREMAN_MLFLOW_MODEL_NAME": mlflow_names.model_name,
        **settings_env,
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


@pytest.fixture
def standalone(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
) -> Iterator[ServiceManager]:
    home = tmp_path_factory.mktemp("fireman-airflow")
    with private_airflow(
        home,
        monkeypatch,
        influx_db,
        mlflow_names,
        # A smaller, single-threaded forest and a lower row minimum: this test is about the REST API.
        FIREMAN_TRAIN_N_ESTIMATORS="30",
        FIREMAN_TRAIN_N_JOBS="1",
        FIREMAN_TRAIN_MIN_ROWS="100",
        # No scheduled runs of either DAG during the test: only the one it triggers. Paused at creation
        # keeps monitor_drift out; unpausing this DAG would still create a `@daily` run as soon as a
        # day boundary has passed (a CI run crossing 00:00 UTC met one), which trains and promotes in
        # turn with the triggered run. The default schedules have their own test below.
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        FIREMAN_AIRFLOW_RETRAIN_SCHEDULE="none",
    ) as manager:
        yield manager


def api_client(manager: ServiceManager) -> httpx.Client:
    service = manager.services["airflow"]
    assert isinstance(service, AirflowService)
    api = httpx.Client(base_url=manager.settings.airflow.url, timeout=30)
    token = api.post("/auth/token", json={"username": ADMIN_USER, "password": service.admin_password()})
    assert token.status_code == 201, token.text
    api.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return api


def wait_for_run(api: httpx.Client, dag_id: str, run_id: str) -> dict[str, Any]:
    def finished() -> bool:
        state = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
        return state in ("success", "failed")

    wait_for(finished, 600, f"DAG run {run_id} to finish", interval_s=3)
    run: dict[str, Any] = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()
    tasks = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    run["tasks"] = {task["task_id"]: task["state"] for task in tasks}
    return run


@pytest.mark.slow
def test_trigger_retrain_through_the_rest_api(
    standalone: ServiceManager,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
    dataset_settings: DatasetSettings,
) -> None:

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
    api = api_client(standalone)

    wait_for(lambda: api.get(f"/api/v2/dags/{DAG_ID}").status_code == 200, 300, "the DAG to be parsed")
    assert api.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
    conf = {"window_hours": 3, "promote_mode": "auto", "gate_metric": "f1", "margin": 0.0}
    created = api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    assert created.status_code == 200, created.text
    run_id = created.json()["dag_run_id"]

    run = wait_for_run(api, DAG_ID, run_id)
    assert run["state"] == "success", run["tasks"]
    assert run["tasks"] == dict.fromkeys(TASKS, "success")

    client = mlflow_client(mlflow_names)
    production = client.get_model_version_by_alias(mlflow_names.model_name, "production")
    mlflow_run = client.get_run(str(production.run_id))
    assert mlflow_run.data.tags["fireman.airflow_run"] == f"{DAG_ID}/{run_id}"
    assert mlflow_run.data.tags["retrain.decision"] == "first"
    assert mlflow_run.data.tags["retrain.rows"] == str(EVENTS - UNLABELLED)


@pytest.fixture
def airflow_at_defaults(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
) -> Iterator[ServiceManager]:
    """Everything at fireman's defaults: DAGs unpaused, `@daily` and `@hourly` schedules, the real forest."""
    with private_airflow(
        tmp_path_factory.mktemp("fireman-airflow"), monkeypatch, influx_db, mlflow_names
    ) as m:
        yield m


def task_log(manager: ServiceManager, run_id: str, task_id: str) -> list[dict[str, Any]]:
    folder = manager.settings.state.root / "airflow" / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    lines = (folder / f"task_id={task_id}" / "attempt=1.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.slow
def test_retrain_from_the_airflow_ui_with_the_trigger_form_at_its_defaults(
    airflow_at_defaults: ServiceManager,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
    dataset_settings: DatasetSettings,
) -> None:

    now = datetime.now(UTC)
    write_history(influx_db, dataset_settings, now - timedelta(hours=1), timedelta(minutes=50))
    airflow_at_defaults.start(["airflow"], on_progress=lambda _: None)
    service = airflow_at_defaults.services["airflow"]
    assert isinstance(service, AirflowService)
    url = airflow_at_defaults.settings.airflow.url
    shots = airflow_at_defaults.settings.state.root / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            log_in(page, url, ADMIN_USER, str(service.admin_password()))
            run_id = trigger_with_defaults(page, url, DAG_ID, form_screenshot=str(shots / "trigger-form.png"))
        finally:
            browser.close()

    api = api_client(airflow_at_defaults)
    run = wait_for_run(api, DAG_ID, run_id)
    assert run["run_type"] == "manual"
    assert run["conf"]["window_hours"] == 168 and run["conf"]["window_start"] is None
    assert run["state"] == "success", run["tasks"]
    assert run["tasks"] == dict.fromkeys(TASKS, "success")
    # The form's default window is the 168 hours before the click, so the last hour's history is in it.
    client = mlflow_client(mlflow_names)
    production = client.get_model_version_by_alias(mlflow_names.model_name, "production")
    tags = client.get_run(str(production.run_id)).data.tags
    assert tags["fireman.airflow_run"] == f"{DAG_ID}/{run_id}"
    assert tags["retrain.rows"] == str(EVENTS - UNLABELLED)

    # A fresh stack shows no red run: the schedule's first run (yesterday, no history) was skipped.
    runs = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
    scheduled = [r for r in runs if r["run_type"] == "scheduled"]
    assert scheduled, runs
    for other in scheduled:
        done = wait_for_run(api, DAG_ID, other["dag_run_id"])
        assert done["state"] == "success" and done["tasks"]["extract"] == "skipped", done

    # Quiet task logs: no warning flood, MLflow's notes at INFO, and the summary stands out.
    for task_id in ("train", "evaluate_and_promote"):
        records = task_log(airflow_at_defaults, run_id, task_id)
        warnings = [r for r in records if r.get("logger") == "py.warnings"]
        errors = [r for r in records if r.get("level") == "error"]
        assert len(warnings) < 10, [r["event"] for r in warnings[:5]]
        assert not errors, [r["event"] for r in errors]
    report = [r["event"] for r in task_log(airflow_at_defaults, run_id, "report")]
    assert any("RETRAIN SUMMARY" in str(event) for event in report), report
