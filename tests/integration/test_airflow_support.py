"""Shared by the Airflow tests: an Airflow home of this test session's own, set before Airflow loads.

Airflow reads its configuration (home, metadata database, DAG folder) once, on first import, so
every Airflow test module calls ``configure_airflow()`` at import time, before importing Airflow.
All of them get the same per-process home, so the order pytest imports them in does not matter.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fireman.common.influx import InfluxClient, Point
from fireman.common.settings import DatasetSettings, InfluxSettings
from fireman.services.process import wait_until
from tests.conftest import REPO_ROOT

DAGS_FOLDER = REPO_ROOT / "dags"
# retrain_spam_classifier's tasks in order; the live ones finish at once unless the run's mode is live,
# await_history unless the run starts at a drift onset with too few rows since.
RETRAIN_TASKS = [
    "await_history",
    "extract",
    "validate",
    "train",
    "evaluate_and_promote",
    "await_live_evidence",
    "decide_on_live_evidence",
    "report",
    "record_success",
]
EVENTS = 500
UNLABELLED = 60
AIRFLOW_HOME = Path(tempfile.gettempdir()) / f"fireman-airflow-tests-{os.getpid()}"
_JWT_SECRET = secrets.token_urlsafe(32)


# The in-process Airflow's configuration. It is set in os.environ at collection time, so it must never
# reach an Airflow that a test starts as a server: paused-at-creation DAGs there never get scheduled.
IN_PROCESS_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    # The in-process Execution API signs task tokens; a fresh home has no secret yet.
    "AIRFLOW__API_AUTH__JWT_SECRET": _JWT_SECRET,
}


def without_in_process_airflow(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a process a test starts: without this process's own Airflow configuration."""
    return {key: value for key, value in env.items() if key not in IN_PROCESS_ENV}


def forget_in_process_airflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test that starts Airflow servers from this process (fireman.services reads os.environ)."""
    for key in IN_PROCESS_ENV:
        monkeypatch.delenv(key, raising=False)


def configure_airflow() -> Path:
    env = IN_PROCESS_ENV
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != env["AIRFLOW_HOME"]:
        raise RuntimeError("Airflow was imported before the tests could point it at their own home")
    if not AIRFLOW_HOME.exists():
        AIRFLOW_HOME.mkdir(parents=True)
        atexit.register(shutil.rmtree, AIRFLOW_HOME, True)
    os.environ.update(env)
    return AIRFLOW_HOME


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval_s: float = 1.0) -> None:
    if not wait_until(check, timeout, interval_s=interval_s):
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


_db_ready = False


def ensure_airflow_db() -> None:
    """Create the metadata tables once per session (``dag.test()`` needs a real database)."""
    global _db_ready
    if _db_ready:
        return
    from airflow.utils.db import initdb

    initdb()
    _share_warm_execution_api()
    _db_ready = True


def _share_warm_execution_api() -> None:
    """Give ``dag.test()`` one in-process Execution API whose start-up has finished.

    Airflow 3.2.2 builds a new in-process API app for every task and starts its lifespan without
    waiting for it, so a task's first request can reach the app before the lifespan has set up
    its services ("'State' object has no attribute 'svcs_registry'"). One shared app, started and
    awaited here, removes that race and the per-task start-up cost.
    """
    from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI
    from airflow.sdk.execution_time import supervisor

    api = InProcessExecutionAPI()
    assert api.transport is not None  # starts the lifespan on the app's event loop
    wait_for(lambda: hasattr(api.app.state, "svcs_registry"), 60, "the in-process Execution API", 0.05)
    supervisor.in_process_api_server = lambda: api


def load_dag(dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


def write_history(influx: InfluxSettings, dataset: DatasetSettings, start: datetime, span: timedelta) -> None:
    """``EVENTS`` Spambase rows with 20% MCAR over ``span``; the last ``UNLABELLED`` get no label."""
    from fireman.common.dataset import load_spambase, mask_completely_at_random

    frame = mask_completely_at_random(load_spambase(dataset), 0.2, seed=7)
    frame = frame.sample(n=EVENTS, random_state=7).reset_index(drop=True)
    step_ns = int(span.total_seconds() * 1e9) // EVENTS
    start_ns = int(start.timestamp()) * 1_000_000_000
    points = []
    for i, row in enumerate(frame.to_dict("records")):
        event_id = f"ev-{i}"
        time_ns = start_ns + i * step_ns
        fields: dict[str, Any] = {str(k): v for k, v in row.items() if k != "label" and v == v}
        points.append(Point("measurements", {**fields, "event_id": event_id}, time_ns, {"sensor_id": "s1"}))
        if i < EVENTS - UNLABELLED:
            label: dict[str, Any] = {"label": int(row["label"]), "event_id": event_id}
            points.append(Point("labels", label, time_ns, {"sensor_id": "s1"}))
    with InfluxClient(influx) as client:
        client.write(points)
