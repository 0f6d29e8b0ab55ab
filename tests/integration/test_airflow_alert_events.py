"""An alert reaches Airflow in seconds: the monitor's notifier posts an asset event through the REST API,
the scheduler runs ``monitor_drift`` on it, and that run triggers the retrain.

Against a private ``airflow standalone`` (free ports, a temporary state dir): slow. The body,
:func:`alert_to_retrain`, takes any running Airflow whose tasks read ``influx``, so it can also be run
by hand against one started with ``fireman services start --only airflow`` (docs/decisions.md has the
delays it measured).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fireman.common.airflow_api import ALERTS_ASSET_URI, AirflowApi, AlertNotifier, credentials
from fireman.common.influx import InfluxClient, Point
from fireman.common.settings import AirflowSettings, InfluxSettings, MlflowSettings, StateSettings
from fireman.services.airflow import AirflowService
from fireman.services.manager import ServiceManager
from tests.integration.test_airflow_standalone import private_airflow
from tests.integration.test_airflow_support import wait_for

MONITOR, RETRAIN = "monitor_drift", "retrain_spam_classifier"


def _time(text: str | None) -> float:
    assert text, "no timestamp"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _runs(api: AirflowApi, dag_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})[
        "dag_runs"
    ]
    return runs


def alert_to_retrain(
    airflow: AirflowSettings, state: StateSettings, influx: InfluxSettings
) -> dict[str, float]:
    """Write a performance alert, notify as ``fireman monitor`` does, and time what Airflow does with it.

    Returns seconds from the alert written to: the ``monitor_drift`` run created (queued) and started,
    and the retrain run created. The retrain DAG stays paused: its run is created and waits, untrained.
    """
    found = credentials(airflow, state)
    assert found is not None, "no Airflow password"
    with AirflowApi(airflow.url, *found, timeout_s=30) as api:
        wait_for(lambda: _parsed(api), 300, "monitor_drift and its asset to be parsed", interval_s=2)
        api.request("PATCH", f"/api/v2/dags/{MONITOR}", json={"is_paused": False})
        # A rejected token is renewed once, on the spot: what a monitor running for days meets when
        # its token expired or the standalone restarted with a new signing secret.
        api._token = "expired"
        assert api.request("GET", f"/api/v2/dags/{MONITOR}")["dag_id"] == MONITOR
        before = {run["dag_run_id"] for run in _runs(api, MONITOR) + _runs(api, RETRAIN)}

        now = datetime.now(UTC)
        onset = now - timedelta(minutes=10)
        alert = Point(
            "alerts",
            {"accuracy": 0.6, "onset_ns": int(onset.timestamp() * 1e9), "message": "accuracy dropped"},
            int((now - timedelta(minutes=1)).timestamp() * 1e9),
            {"kind": "performance", "model_name": "spam-classifier", "model_version": "1"},
        )
        with InfluxClient(influx) as client:
            client.write([alert])
        written = time.time()
        notifier = AlertNotifier(airflow, state).start()
        try:
            notifier.notify(alert)
        finally:
            notifier.close(timeout_s=60)
        assert notifier.sent == 1

        def new_run() -> dict[str, Any] | None:
            runs = [r for r in _runs(api, MONITOR) if r["dag_run_id"] not in before]
            return runs[0] if runs else None

        wait_for(lambda: new_run() is not None, 120, "an asset-triggered monitor_drift run", interval_s=0.2)
        run = new_run()
        assert run is not None and run["run_type"] == "asset_triggered", run
        run_id = run["dag_run_id"]

        def finished() -> dict[str, Any] | None:
            got: dict[str, Any] = api.request("GET", f"/api/v2/dags/{MONITOR}/dagRuns/{run_id}")
            return got if got["state"] in ("success", "failed") else None

        wait_for(lambda: finished() is not None, 300, f"{run_id} to finish", interval_s=0.5)
        done = finished()
        assert done is not None and done["state"] == "success", done
        retrains = [r for r in _runs(api, RETRAIN) if r["dag_run_id"] not in before]
        assert len(retrains) == 1, retrains
        retrain = retrains[0]
        assert (
            retrain["dag_run_id"].startswith("performance__")
            and retrain["conf"]["trigger_kind"] == "performance"
        )
        assert _time(retrain["conf"]["window_start"]) == pytest.approx(onset.timestamp(), abs=1e-3)
        events = api.request("GET", "/api/v2/assets/events", params={"limit": 100, "order_by": "-timestamp"})
        ours = [e for e in events["asset_events"] if e["uri"] == ALERTS_ASSET_URI]
        assert ours and ours[0]["extra"]["alerts"][0]["kind"] == "performance"
        return {
            "monitor_drift_queued_s": _time(done["queued_at"]) - written,
            "monitor_drift_started_s": _time(done["start_date"]) - written,
            "monitor_drift_ended_s": _time(done["end_date"]) - written,
            "retrain_created_s": _time(retrain["queued_at"]) - written,
        }


def _parsed(api: AirflowApi) -> bool:
    try:
        api.request("GET", f"/api/v2/dags/{MONITOR}")
        api.asset_id(ALERTS_ASSET_URI)
    except Exception:
        return False
    return True


@pytest.fixture
def airflow_for_alerts(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
) -> Iterator[ServiceManager]:
    with private_airflow(
        tmp_path_factory.mktemp("fireman-airflow"),
        monkeypatch,
        influx_db,
        mlflow_names,
        # Only what the alert starts: no cron run of monitor_drift, and the retrain's run waits, paused.
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        FIREMAN_AIRFLOW_DRIFT_CHECK_SCHEDULE="none",
    ) as manager:
        yield manager


@pytest.mark.slow
def test_an_alert_reaches_monitor_drift_and_the_retrain_in_seconds(
    airflow_for_alerts: ServiceManager, influx_db: InfluxSettings
) -> None:
    airflow_for_alerts.start(["airflow"], on_progress=lambda _: None)
    service = airflow_for_alerts.services["airflow"]
    assert isinstance(service, AirflowService)
    settings = airflow_for_alerts.settings
    # As `fireman monitor` finds it: the standalone's password file under FIREMAN_HOME.
    airflow = settings.airflow
    assert Path(service.password_file).exists()

    delays = alert_to_retrain(airflow, settings.state, influx_db)

    print(delays)
    assert delays["monitor_drift_queued_s"] < 30, delays
    assert delays["retrain_created_s"] < 120, delays
