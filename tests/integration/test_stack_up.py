"""`fireman up` end to end: the whole story of the platform, observed from InfluxDB and MLflow.

Everything is real and private to the test: its own state dir and free ports for Kafka, InfluxDB,
MLflow, Airflow, the collector and the dashboard. The short demo profile compresses the story to a few
minutes: events flow, version 1 scores them, drift is injected, the monitor alerts, Airflow's
`monitor_drift` triggers a retrain, the gate promotes version 2, and the scorer switches to it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fireman.common.influx import InfluxClient, InfluxError
from fireman.common.measurements import PRODUCTION_ONLY
from fireman.common.settings import InfluxSettings
from fireman.services.process import wait_until
from tests.conftest import REPO_ROOT, SHARED_SPAMBASE, free_port, share_kafka_jars
from tests.integration.test_airflow_support import without_in_process_airflow
from tests.integration.test_services_cli import private_env, processes_under
from tests.support.background import stop_process

FIREMAN = str(Path(sys.executable).with_name("fireman"))


def stack_env(home: Path) -> dict[str, str]:
    env = private_env(home, base=without_in_process_airflow(os.environ))
    env.update(
        FIREMAN_SPAMBASE_PATH=os.environ.get("FIREMAN_SPAMBASE_PATH") or str(SHARED_SPAMBASE),
        FIREMAN_AIRFLOW_PORT=str(free_port()),
        FIREMAN_AIRFLOW_WORKER_LOG_PORT=str(free_port()),
        FIREMAN_AIRFLOW_TRIGGER_LOG_PORT=str(free_port()),
        FIREMAN_COLLECTOR_PORT=str(free_port()),
        FIREMAN_DASHBOARD_PORT=str(free_port()),
        FIREMAN_SERVE_PORT=str(free_port()),
        # The log is no terminal: rich would wrap the URL table at 80 columns.
        COLUMNS="200",
    )
    env.pop("FIREMAN_GENERATOR_COLLECTOR_URL", None)
    return env


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fireman_up_tells_the_whole_story(tmp_path: Path) -> None:
    home = tmp_path / "home"
    share_kafka_jars(home)
    env = stack_env(home)
    influx = InfluxClient(InfluxSettings(port=int(env["FIREMAN_INFLUXDB_PORT"])))
    mlflow_uri = f"http://127.0.0.1:{env['FIREMAN_MLFLOW_PORT']}"
    log_path = tmp_path / "up.log"
    started = time.monotonic()
    timings: dict[str, float] = {}

    def served_by(version: str) -> int:
        """Production's prediction points of ``version`` (a challenger's shadow points aside)."""
        return count(
            f'SELECT count("event_id") FROM "predictions" WHERE {PRODUCTION_ONLY} AND "model_version" = '
            f"'{version}'"
        )

    def count(query: str) -> int:
        try:
            rows = influx.query(query)
        except InfluxError:
            return 0
        return int(rows[0]["count"]) if rows else 0

    inference = f"http://127.0.0.1:{env['FIREMAN_SERVE_PORT']}/v2/models/spam-classifier"

    def answered_by() -> str | None:
        """The version ``fireman serve`` answers with (one row, every feature missing)."""
        body = {"inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 57], "data": [None] * 57}]}
        try:
            response = httpx.post(f"{inference}/infer", json=body, timeout=10)
        except httpx.HTTPError:
            return None
        return str(response.json()["model_version"]) if response.status_code == 200 else None

    def production() -> str | None:
        try:
            client = MlflowClient(tracking_uri=mlflow_uri)
            return str(client.get_model_version_by_alias("spam-classifier", "production").version)
        except (MlflowException, OSError):
            return None

    def step(name: str, condition: Callable[[], bool], timeout_s: float) -> None:
        assert wait_until(condition, timeout_s, interval_s=2.0), (
            f"step '{name}' did not happen: see {log_path}"
        )
        timings[name] = time.monotonic() - started
        print(f"{timings[name]:7.1f}s  {name}")

    with log_path.open("w") as log:
        up = subprocess.Popen(
            [FIREMAN, "up", "--profile", "short"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    try:
        step("events flow", lambda: count('SELECT count("event_id") FROM "measurements"') > 0, 900)
        step(
            "predictions carry version 1",
            lambda: served_by("1") > 0,
            300,
        )
        step("online inference answers with version 1", lambda: answered_by() == "1", 300)
        assert inference.removesuffix("/v2/models/spam-classifier") in log_path.read_text()  # URL table
        step(
            "drift alerts appear",
            lambda: count('SELECT count("share_drifted_features") FROM "alerts"') > 0,
            600,
        )
        step(
            "the drift DAG triggers a retrain",
            lambda: count('SELECT count("run_id") FROM "retrain_triggers"') > 0,
            600,
        )
        step("a new version is promoted", lambda: production() == "2", 900)
        step(
            "the scorer switches to it",
            lambda: served_by("2") > 0,
            300,
        )
        step("online inference answers with version 2", lambda: answered_by() == "2", 300)
        switch = influx.query('SELECT "to_version" FROM "model_events" WHERE "event" = \'switch\'')
        assert [row["to_version"] for row in switch] == ["2"]
    finally:
        stop_process(up, signal.SIGINT, timeout_s=180)
        influx.close()
    print(log_path.read_text()[-3000:])
    assert up.returncode == 0
    assert "nothing fireman started is left running" in log_path.read_text()
    assert wait_until(lambda: not processes_under(home), timeout_s=30), processes_under(home)
    print("step timings (s from `fireman up`):", {name: round(t, 1) for name, t in timings.items()})
