"""``monitor_drift`` through ``dag.test()`` on drift, performance and alert points in a real InfluxDB.

Drift: consecutive hourly intervals: no alert (no retrain), alerts (a retrain from the drift onset),
alerts while that retrain is still queued (none), alerts after it failed (a retrain again), alerts
after the second one succeeded (the cool-down: none). Performance: an accuracy alert triggers a
retrain whose run id and conf name the kind, from the alert's own onset.
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
        return {run.run_id: dict(run.conf or {}) for run in runs if "__" in run.run_id}


def finish_retrain(run_id: str, state: str) -> None:
    """What Airflow does when the triggered retrain run ends (in this process the retrain DAG is
    paused, so its runs stay queued)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.run_id == run_id)).one()
        run.state = DagRunState(state)


def states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


@pytest.fixture
def monitor_env(monkeypatch: pytest.MonkeyPatch, influx_db: InfluxSettings) -> InfluxSettings:
    ensure_airflow_db()
    monkeypatch.setenv("FIREMAN_INFLUXDB_URL", influx_db.url)
    monkeypatch.setenv("FIREMAN_INFLUXDB_DATABASE", influx_db.database)
    monkeypatch.setenv("FIREMAN_DRIFT_TRIGGER_COOLDOWN_HOURS", "6")
    return influx_db


def test_drift_alerts_trigger_a_retrain_that_failed_retrain_again_and_a_success_cools_down(
    monitor_env: InfluxSettings,
) -> None:
    from fireman.training import retrain_trigger

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
    onset = hour + timedelta(minutes=10)
    write_drift(
        monitor_env,
        hour - timedelta(hours=1),
        hour + timedelta(hours=5),
        [(onset, hour + timedelta(hours=5))],
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

    # The hour with alerts: one retrain, its window starting where the drift began (walked back
    # over the drift windows: these alerts carry no onset_ns, as before the monitor wrote it).
    drifted = dag.test(logical_date=hour + timedelta(hours=1))

    assert str(drifted.state) == "success", states(drifted)
    assert set(states(drifted).values()) == {"success"}
    first_end = (hour + timedelta(hours=1)).isoformat()
    first = f"drift__{first_end}"
    triggered = {run_id: conf for run_id, conf in retrain_runs().items() if run_id not in before}
    assert list(triggered) == [first]
    conf = triggered[first]
    assert (conf["window_start"], conf["window_end"]) == (onset.isoformat(), first_end)
    assert conf["trigger_kind"] == "drift"
    assert "drift alert" in conf["reason"] and "drift since" in conf["reason"]
    with InfluxClient(monitor_env) as client:
        recorded = client.query("SELECT * FROM retrain_triggers")
    assert [(row["run_id"], row["kind"]) for row in recorded] == [(first, "drift")]
    assert recorded[0]["window_start"] == onset.isoformat()

    # The next hour drifts too, but that retrain is still queued: it is waited for.
    waiting = dag.test(logical_date=hour + timedelta(hours=2))

    assert str(waiting.state) == "success", states(waiting)
    assert states(waiting)["trigger_retrain"] == "skipped"
    assert set(retrain_runs()) == set(before) | {first}

    # The retrain failed: no cool-down, the next hour triggers again, from the same onset.
    finish_retrain(first, "failed")
    retried = dag.test(logical_date=hour + timedelta(hours=3))

    assert set(states(retried).values()) == {"success"}, states(retried)
    second_end = (hour + timedelta(hours=3)).isoformat()
    second = f"drift__{second_end}"
    assert set(retrain_runs()) == set(before) | {first, second}
    assert retrain_runs()[second]["window_start"] == onset.isoformat()

    # That one succeeds; its last task records it (the call the retrain DAG's record_success makes).
    finish_retrain(second, "success")
    second_conf = retrain_runs()[second]
    extracted = {"since": second_conf["window_start"], "until": second_conf["window_end"]}
    retrain_trigger.record_success("retrain_spam_classifier", second, "manual", second_conf, extracted)
    cooling = dag.test(logical_date=hour + timedelta(hours=4))

    assert str(cooling.state) == "success", states(cooling)
    assert states(cooling)["trigger_retrain"] == "skipped"
    assert set(retrain_runs()) == set(before) | {first, second}
    with InfluxClient(monitor_env) as client:
        retrains = client.query("SELECT * FROM retrains")
    assert [(r["run_id"], r["trigger"], r["kind"], r["window_end"]) for r in retrains] == [
        (second, "alert", "drift", second_end)
    ]


def test_a_performance_alert_triggers_a_retrain_named_after_its_kind_from_its_onset(
    monitor_env: InfluxSettings,
) -> None:
    # Hours of their own: the Airflow metadata database is shared by the session's tests.
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=9)
    onset = hour - timedelta(minutes=25)  # the streak began in the interval before
    points = [
        Point(
            "alerts",
            {"accuracy": 0.61, "onset_ns": ns(onset), "message": "accuracy dropped"},
            ns(moment),
            {"kind": "performance", "model_name": "spam-classifier", "model_version": "3"},
        )
        for moment in (hour + timedelta(minutes=5), hour + timedelta(minutes=10))
    ]
    with InfluxClient(monitor_env) as client:
        client.write(points)
    dag = load_dag("monitor_drift")
    before = retrain_runs()

    run = dag.test(logical_date=hour + timedelta(hours=1))

    assert set(states(run).values()) == {"success"}, states(run)
    end = (hour + timedelta(hours=1)).isoformat()
    triggered = {run_id: conf for run_id, conf in retrain_runs().items() if run_id not in before}
    assert list(triggered) == [f"performance__{end}"]
    conf = triggered[f"performance__{end}"]
    assert conf["trigger_kind"] == "performance"
    assert (conf["window_start"], conf["window_end"]) == (onset.isoformat(), end)
    assert "2 performance alert(s)" in conf["reason"] and "performance since" in conf["reason"]
    with InfluxClient(monitor_env) as client:
        recorded = client.query("SELECT * FROM retrain_triggers")
    assert [(row["run_id"], row["kind"]) for row in recorded] == [(f"performance__{end}", "performance")]
