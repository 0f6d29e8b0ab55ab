"""The DAG folder as Airflow's own DagBag loads it: no import errors, and each DAG is well formed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_airflow_support import DAGS_FOLDER, RETRAIN_TASKS, configure_airflow

configure_airflow()

EXPECTED = {"retrain_spam_classifier", "monitor_drift"}


@pytest.fixture(scope="module")
def dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    # No include_examples (Airflow 3.3 dropped it): configure_airflow() turns the examples off.
    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_no_import_errors_and_both_dags_load(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) >= EXPECTED


def test_every_dag_has_tags_doc_and_retries_with_backoff(dagbag: Any) -> None:
    for dag_id in dagbag.dag_ids:
        dag = dagbag.dags[dag_id]
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and dag.doc_md.strip(), f"{dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} does not retry"
            assert task.retry_exponential_backoff, f"{dag_id}.{task.task_id} retries without back-off"


def test_retrain_tasks_and_trigger_form(dagbag: Any) -> None:
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags["retrain_spam_classifier"]
    assert [t.task_id for t in dag.topological_sort()] == RETRAIN_TASKS
    # The manual trigger form: window, gate metric, margin and promote mode, with usable defaults.
    assert {"window_hours", "gate_metric", "margin", "promote_mode"} <= set(dag.params)
    assert dag.params["promote_mode"] == "auto"
    assert dag.params.get_param("promote_mode").schema["enum"] == ["auto", "never", "force", "live"]
    assert "f1" in dag.params.get_param("gate_metric").schema["enum"]
    # Compared as timetables: Airflow 3.3 resolves a preset such as "@daily" to its cron expression.
    assert dag.timetable == CronDataIntervalTimetable("@daily", timezone="UTC")


def test_live_mode_waits_in_a_rescheduled_sensor_and_decides_even_after_a_timeout(dagbag: Any) -> None:
    dag = dagbag.dags["retrain_spam_classifier"]
    sensor = dag.get_task("await_live_evidence")
    # Reschedule mode: no worker slot is held while the evidence accumulates (hours, at demo rates minutes).
    assert sensor.mode == "reschedule"
    assert (sensor.poke_interval, sensor.timeout) == (300.0, 12 * 3600.0)  # FIREMAN_TRAIN_LIVE_*
    # A wait that times out is skipped, and the decision still runs and records the shortfall.
    assert sensor.soft_fail
    decide = dag.get_task("decide_on_live_evidence")
    assert decide.trigger_rule == "none_failed"
    assert {t.task_id for t in decide.upstream_list} == {"evaluate_and_promote", "await_live_evidence"}
    assert [t.task_id for t in dag.get_task("report").upstream_list if "live" in t.task_id] == [
        "decide_on_live_evidence"
    ]


def test_monitor_runs_on_each_alert_event_and_hourly_and_triggers_the_retrain_dag(dagbag: Any) -> None:
    from airflow.sdk import Asset, AssetOrTimeSchedule, CronDataIntervalTimetable

    from fireman.common.airflow_api import ALERTS_ASSET_URI

    dag = dagbag.dags["monitor_drift"]
    # The asset `fireman monitor` posts an event of for each alert, or the cron as a safety net.
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert dag.timetable.timetable == CronDataIntervalTimetable("@hourly", timezone="UTC")
    assert [asset.uri for asset in dag.timetable.asset_condition.objects] == [ALERTS_ASSET_URI]
    assert all(isinstance(asset, Asset) for asset in dag.timetable.asset_condition.objects)
    trigger = dag.get_task("trigger_retrain")
    assert trigger.trigger_dag_id == "retrain_spam_classifier"
    assert [t.task_id for t in dag.topological_sort()] == ["check_drift", "trigger_retrain", "record_trigger"]


def test_the_retrain_records_its_success_last_and_its_form_takes_the_alert_kind(dagbag: Any) -> None:
    dag = dagbag.dags["retrain_spam_classifier"]
    record = dag.get_task("record_success")
    # Only after the run's every task succeeded: a failed retrain starts no cool-down.
    assert record.trigger_rule == "all_success"
    assert {t.task_id for t in record.upstream_list} == {"extract", "report"}
    assert dag.params["trigger_kind"] is None


def test_parsing_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is contacted while parsing: unreachable services must not matter."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("FIREMAN_INFLUXDB_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("FIREMAN_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("FIREMAN_AIRFLOW_RETRAIN_SCHEDULE", "0 3 * * *")
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    timetable: Any = bag.dags["retrain_spam_classifier"].timetable
    assert timetable.expression == "0 3 * * *"


@pytest.mark.parametrize("value", ["none", "None", ""])
def test_schedule_none_means_no_cron_for_either_dag(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.timetables.assets import AssetTriggeredTimetable
    from airflow.sdk.definitions.timetables.simple import NullTimetable

    monkeypatch.setenv("FIREMAN_AIRFLOW_RETRAIN_SCHEDULE", value)
    monkeypatch.setenv("FIREMAN_AIRFLOW_DRIFT_CHECK_SCHEDULE", value)
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    assert isinstance(bag.dags["retrain_spam_classifier"].timetable, NullTimetable)
    # No cron for monitor_drift: it still runs on alert events (and on demand).
    assert isinstance(bag.dags["monitor_drift"].timetable, AssetTriggeredTimetable)


def test_the_trigger_form_shows_the_values_a_run_uses(dagbag: Any) -> None:
    # No "null" in the form: every field a run needs starts at the value it would use.
    params = dagbag.dags["retrain_spam_classifier"].params
    assert params["window_hours"] == 168.0  # FIREMAN_TRAIN_HISTORY_HOURS
    assert params["gate_metric"] == "f1" and None not in params.get_param("gate_metric").schema["enum"]
    assert params["margin"] == 0.0


def test_after_a_shift_the_retrain_waits_for_history_in_a_rescheduled_sensor(dagbag: Any) -> None:
    dag = dagbag.dags["retrain_spam_classifier"]
    sensor = dag.get_task("await_history")
    assert sensor.mode == "reschedule" and not sensor.soft_fail  # past its deadline the run fails
    # FIREMAN_TRAIN_HISTORY_*: pokes every 20 s (at 50 events/s the 2,000 rows take 40 s), and the
    # task's own deadline (6 h) fails first; Airflow's timeout, two pokes later, is a backstop.
    assert (sensor.poke_interval, sensor.timeout) == (20.0, 6 * 3600.0 + 40.0)
    assert [t.task_id for t in dag.get_task("extract").upstream_list] == ["await_history"]
    assert "After a shift" in dag.doc_md and "FIREMAN_TRAIN_GATE_MIN_ROWS" in dag.doc_md
