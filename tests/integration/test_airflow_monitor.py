"""``monitor_drift`` through ``dag.test()`` on drift and alert points written to a real InfluxDB.

Three consecutive hourly intervals: no alert (no retrain), alerts (a retrain from the drift onset),
alerts again within the cool-down (no second retrain).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fireman.common.influx import InfluxClient, Point
from fireman.common.settings import InfluxSettings
from tests.integration.test_airflow_support import configure_airflow, ensure_airflow_db, load_dag

configure_airflow()

WINDOW = timedelta(minutes=5)
THRESHOLD = 0.5
K = 2  # consecutive drifting windows that raise an alert


def ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000


def write_drift(
    influx: InfluxSettings, start: datetime, end: datetime, drifting: list[tuple[datetime, datetime]]
) -> None:
    """Windows of ``WINDOW`` from ``start`` to ``end`` as the monitor writes them: one window point,
    per-feature points, and an alert for each window that closes K or more drifting windows."""
    points = []
    streak = 0
    moment = start
    while moment < end:
        drifts = any(first <= moment < last for first, last in drifting)
        share = 0.7 if drifts else 0.1
        streak = streak + 1 if drifts else 0
        tags = {"model_version": "1"}
        window = {
            "share_drifted_features": share,
            "drifted_features": int(share * 57),
            "dataset_drift": int(drifts),
        }
        points.append(Point("drift", {**window, "window_size": 1000, "missing_share": 0.2}, ns(moment), tags))
        # A drifting feature even in calm windows: the onset search must read window points only.
        feature = {"drift_score": 0.001, "drifted": 1, "missing_share": 0.2}
        points.append(Point("drift", feature, ns(moment), {**tags, "feature": "Cont_1"}))
        if streak >= K:
            alert = {"share_drifted_features": share, "threshold": THRESHOLD, "consecutive_windows": streak}
            points.append(Point("alerts", alert, ns(moment), {"kind": "drift", "model_version": "1"}))
        moment += WINDOW
    with InfluxClient(influx) as client:
        client.write(points)


def retrain_runs() -> dict[str, Any]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == "retrain_spam_classifier")).all()
        return {run.run_id: dict(run.conf or {}) for run in runs if run.run_id.startswith("drift__")}


def states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


@pytest.fixture
def monitor_env(monkeypatch: pytest.MonkeyPatch, influx_db: InfluxSettings) -> InfluxSettings:
    ensure_airflow_db()
    monkeypatch.setenv("FIREMAN_INFLUXDB_URL", influx_db.url)
    monkeypatch.setenv("FIREMAN_INFLUXDB_DATABASE", influx_db.database)
    monkeypatch.setenv("FIREMAN_DRIFT_TRIGGER_COOLDOWN_HOURS", "6")
    return influx_db


def test_alerts_trigger_one_retrain_from_the_onset_then_cool_down(monitor_env: InfluxSettings) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    onset = hour + timedelta(minutes=10)
    second_onset = hour + timedelta(hours=1, minutes=20)
    write_drift(
        monitor_env,
        hour - timedelta(hours=1),
        hour + timedelta(hours=2),
        [(onset, hour + timedelta(minutes=40)), (second_onset, hour + timedelta(hours=1, minutes=50))],
    )
    dag = load_dag("monitor_drift")
    before = retrain_runs()

    # The hour before: windows but no alert.
    calm = dag.test(logical_date=hour)

    assert str(calm.state) == "success", states(calm)
    assert states(calm) == {
        "check_drift": "success",
        "trigger_retrain": "skipped",
        "record_trigger": "skipped",
    }
    assert retrain_runs() == before

    # The hour with alerts: one retrain, its window starting where the drift began.
    drifted = dag.test(logical_date=hour + timedelta(hours=1))

    assert str(drifted.state) == "success", states(drifted)
    assert set(states(drifted).values()) == {"success"}
    interval_end = (hour + timedelta(hours=1)).isoformat()
    triggered = {run_id: conf for run_id, conf in retrain_runs().items() if run_id not in before}
    assert list(triggered) == [f"drift__{interval_end}"]
    conf = triggered[f"drift__{interval_end}"]
    assert conf["window_start"] == onset.isoformat()
    assert conf["window_end"] == interval_end
    assert "drift since" in conf["reason"]
    with InfluxClient(monitor_env) as client:
        recorded = client.query("SELECT * FROM retrain_triggers")
    assert [row["run_id"] for row in recorded] == [f"drift__{interval_end}"]
    assert recorded[0]["window_start"] == onset.isoformat()

    # The next hour drifts again, but within the cool-down: no second retrain.
    cooling = dag.test(logical_date=hour + timedelta(hours=2))

    assert str(cooling.state) == "success", states(cooling)
    assert states(cooling)["trigger_retrain"] == "skipped"
    assert set(retrain_runs()) == set(before) | {f"drift__{interval_end}"}
