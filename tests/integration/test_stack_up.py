"""`fireman up` end to end: the closed loop of the platform, observed from InfluxDB and MLflow.

Everything is real and private to the test: its own state dir and free ports for Kafka, InfluxDB,
MLflow, Airflow, the collector and the dashboard. The demo profiles tell the story in a few minutes:
events flow, version 1 scores them, a shift is injected, the monitor alerts, Airflow's
`monitor_drift` (woken by the alert, not by its hourly schedule) triggers a retrain from the shift's
onset, the gate promotes version 2, the scorer and `fireman serve` switch to it, and online accuracy
comes back. Two cases: a covariate shift (the features move: a `drift` alert) on the standard profile,
the one `make up` runs, and a concept shift (the labels turn against the model while the features stay:
a `performance` alert) on the short one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.exceptions import MlflowException

from fireman.common.influx import InfluxClient, InfluxError
from fireman.common.measurements import PRODUCTION_ONLY
from fireman.common.mlflow_uri import client as mlflow_client
from fireman.common.settings import InfluxSettings, MlflowSettings
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
        # The consumers' metrics ports too: the stack is private, and another process may hold 9101-9103.
        FIREMAN_SINK_METRICS_PORT=str(free_port()),
        FIREMAN_SCORER_METRICS_PORT=str(free_port()),
        FIREMAN_MONITOR_METRICS_PORT=str(free_port()),
        # The log is no terminal: rich would wrap the URL table at 80 columns.
        COLUMNS="200",
    )
    env.pop("FIREMAN_GENERATOR_COLLECTOR_URL", None)
    return env


SHIFTS = {
    # case: (the generator's drift kind, the alert kind it must raise)
    "covariate": ("shift", "drift"),
    "concept": ("labels", "performance"),
}
RECOVERY_MARGIN = 0.02  # online accuracy after the loop, against before the shift
# The demo profile's targets, from the shift's onset (issue #15).
ALERT_WITHIN_S = 60
SERVING_WITHIN_S = 180


@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    ("profile", "case"),
    [
        # The demo as users see it (`make up`): 50 events/s, a covariate shift after 2.5 min.
        ("standard", "covariate"),
        # A label shift, on the short profile (100 events/s, the shift after 15 s): 1.5 min less of CI.
        ("short", "concept"),
    ],
)
def test_fireman_up_closes_the_loop(tmp_path: Path, profile: str, case: str) -> None:
    drift_kind, alert_kind = SHIFTS[case]
    home = tmp_path / "home"
    share_kafka_jars(home)
    env = stack_env(home)
    # Both profiles shift the features; the concept case is the same story with inverted labels.
    env["FIREMAN_GENERATOR_DRIFT_KIND"] = drift_kind
    influx = InfluxClient(InfluxSettings(port=int(env["FIREMAN_INFLUXDB_PORT"])))
    log_path = tmp_path / "up.log"
    started = time.monotonic()
    timeline: dict[str, float] = {}  # step -> wall clock (epoch s) when it was seen

    def rows(query: str) -> list[dict[str, Any]]:
        try:
            return influx.query(query)
        except InfluxError:
            return []

    def count(query: str) -> int:
        found = rows(query)
        return int(found[0]["count"]) if found else 0

    def served_by(version: str) -> int:
        """Production's prediction points of ``version`` (a challenger's shadow points aside)."""
        return count(
            f'SELECT count("event_id") FROM "predictions" WHERE {PRODUCTION_ONLY} AND "model_version" = '
            f"'{version}'"
        )

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
            client = mlflow_client(MlflowSettings(port=int(env["FIREMAN_MLFLOW_PORT"])))
            return str(client.get_model_version_by_alias("spam-classifier", "production").version)
        except (MlflowException, OSError):
            return None

    def accuracy(version: str, since_ns: int = 0, until_ns: int | None = None) -> tuple[float, int]:
        """Online accuracy of ``version`` over its labelled windows in [since, until), and the labels."""
        where = f"\"model_version\" = '{version}' AND time >= {since_ns}"
        if until_ns is not None:
            where += f" AND time < {until_ns}"
        windows = rows(f'SELECT "accuracy", "n_labelled" FROM "performance" WHERE {where}')
        labelled = sum(int(w["n_labelled"] or 0) for w in windows)
        if not labelled:
            return float("nan"), 0
        return sum(
            float(w["accuracy"]) * int(w["n_labelled"]) for w in windows if w["n_labelled"]
        ) / labelled, labelled

    def step(name: str, condition: Callable[[], bool], timeout_s: float) -> None:
        assert wait_until(condition, timeout_s, interval_s=1.0), (
            f"step '{name}' did not happen: see {log_path}"
        )
        timeline[name] = time.time()
        print(f"{time.monotonic() - started:7.1f}s  {name}")

    with log_path.open("w") as log:
        up = subprocess.Popen(
            [FIREMAN, "up", "--profile", profile],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    try:
        step("events flow", lambda: count('SELECT count("event_id") FROM "measurements"') > 0, 900)
        step("predictions carry version 1", lambda: served_by("1") > 0, 300)
        step("online inference answers with version 1", lambda: answered_by() == "1", 300)
        assert inference.removesuffix("/v2/models/spam-classifier") in log_path.read_text()  # URL table
        step(
            f"a {alert_kind} alert",
            lambda: (
                count(f'SELECT count("consecutive_windows") FROM "alerts" WHERE "kind" = \'{alert_kind}\'')
                > 0
            ),
            600,
        )
        alert = rows(f'SELECT * FROM "alerts" WHERE "kind" = \'{alert_kind}\' ORDER BY time LIMIT 1')[0]
        onset_ns = int(alert["onset_ns"])
        step(
            "the drift DAG triggers a retrain",
            lambda: count('SELECT count("run_id") FROM "retrain_triggers"') > 0,
            600,
        )
        step("version 2 is promoted", lambda: production() == "2", 900)
        step("the scorer serves version 2", lambda: served_by("2") > 0, 300)
        step("online inference answers with version 2", lambda: answered_by() == "2", 300)
        switch = influx.query('SELECT "to_version" FROM "model_events" WHERE "event" = \'switch\'')
        assert [row["to_version"] for row in switch] == ["2"]
        before, before_labels = accuracy("1", until_ns=onset_ns)
        assert before_labels >= 500, before_labels
        step(
            "online accuracy recovers",
            lambda: accuracy("2")[1] >= 500 and accuracy("2")[0] >= before - RECOVERY_MARGIN,
            600,
        )
        after, after_labels = accuracy("2")
        print(
            f"online accuracy: {before:.3f} before the shift ({before_labels} labels), "
            f"{after:.3f} with version 2 ({after_labels} labels)"
        )
        kinds = {row["kind"] for row in rows('SELECT * FROM "alerts"')}
        assert alert_kind in kinds, kinds
    finally:
        stop_process(up, signal.SIGINT, timeout_s=180)
        influx.close()
    print(log_path.read_text()[-3000:])
    onset = onset_ns / 1e9
    print(f"timeline of the {case} shift, {profile} profile (s from its onset at {onset:.1f}):")
    for name, moment in timeline.items():
        print(f"  {moment - onset:+8.1f}  {name}")
    if profile == "standard":
        assert timeline[f"a {alert_kind} alert"] - onset <= ALERT_WITHIN_S, timeline
        assert timeline["the scorer serves version 2"] - onset <= SERVING_WITHIN_S, timeline
    assert up.returncode == 0
    assert "nothing fireman started is left running" in log_path.read_text()
    assert wait_until(lambda: not processes_under(home), timeout_s=30), processes_under(home)
