"""The DAG task functions' own rules: which window a run trains on, when a window is unusable, and
which failures skip Airflow's retries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pendulum
import pytest

from fireman.common.errors import UserError
from fireman.common.influx import InfluxUnavailable
from fireman.common.schema import FEATURE_NAMES
from fireman.training import dag_tasks, retrain_trigger, sources
from tests.integration.test_airflow_support import configure_airflow

configure_airflow()

END = datetime(2026, 11, 28, tzinfo=UTC)
DAY = (END - timedelta(days=1), END)


TRIGGERED = END + timedelta(minutes=5)


def window(
    params: Mapping[str, object], run_type: str = "scheduled", interval: tuple[datetime, datetime] = DAY
) -> tuple[datetime, datetime]:
    return dag_tasks.training_window(params, run_type, *interval, TRIGGERED, default_hours=168)


def test_a_trigger_with_the_form_at_its_defaults_trains_on_the_hours_before_the_click() -> None:
    # Airflow gives a manual run the timetable's last completed interval (yesterday for @daily); the
    # person who clicked Trigger means the history up to now.
    assert window({}, "manual") == (TRIGGERED - timedelta(hours=168), TRIGGERED)
    assert window({"window_hours": 1}, "manual") == (TRIGGERED - timedelta(hours=1), TRIGGERED)
    assert window({"window_hours": 1}, "asset_triggered") == (TRIGGERED - timedelta(hours=1), TRIGGERED)


def test_scheduled_and_backfill_runs_keep_their_data_interval() -> None:
    assert window({}) == DAY
    assert window({"window_hours": 6}) == DAY
    assert window({}, "backfill") == DAY


def test_an_explicit_start_wins_and_without_an_end_means_until_the_run() -> None:
    explicit = {"window_start": "2026-11-27T10:00:00Z", "window_end": "2026-11-27T12:00:00+00:00"}
    for run_type in ("manual", "scheduled"):
        assert window(explicit, run_type) == (
            datetime(2026, 11, 27, 10, tzinfo=UTC),
            datetime(2026, 11, 27, 12, tzinfo=UTC),
        )
    assert window({"window_start": "2026-11-27T22:00:00+00:00"}, "manual") == (
        END - timedelta(hours=2),
        TRIGGERED,
    )


def test_window_accepts_airflow_pendulum_times() -> None:
    start, end = pendulum.datetime(2026, 11, 27, tz="UTC"), pendulum.datetime(2026, 11, 28, tz="UTC")
    assert dag_tasks.training_window({}, "scheduled", start, end, None, 168) == DAY
    assert dag_tasks.training_window({"window_hours": 2}, "manual", start, end, end, 168) == (
        END - timedelta(hours=2),
        END,
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"window_end": "2026-11-27T12:00:00+00:00"}, "window_end was given without window_start"),
        ({"window_hours": 0}, "window_hours must be positive"),
        ({"window_start": "yesterday"}, "window_start is not an ISO 8601 time: 'yesterday'"),
        ({"window_start": "2026-11-28T01:00:00+00:00"}, "empty training window"),
    ],
)
def test_window_errors_name_the_parameter(params: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        window(params)


def frame(rows: int, positive: int, missing: float) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(rows, len(FEATURE_NAMES)))
    data[rng.random(data.shape) < missing] = np.nan
    result = pd.DataFrame(data, columns=list(FEATURE_NAMES))
    result["label"] = np.array([1] * positive + [0] * (rows - positive), dtype="int64")
    return result


Writer = Callable[[pd.DataFrame], Path]


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Writer:
    monkeypatch.setenv("FIREMAN_TRAIN_MIN_ROWS", "50")

    def to_file(data: pd.DataFrame) -> Path:
        path = tmp_path / "window.parquet"
        info = sources.DataInfo(
            source="influx", since="2026-11-27T00:00:00+00:00", until="2026-11-28T00:00:00+00:00"
        )
        return sources.write_parquet(sources.Dataset(data, info), path)

    return to_file


def test_validate_reports_a_usable_window(write: Writer) -> None:
    summary = dag_tasks.validate_window(write(frame(200, 80, 0.2)), "in the test's window")
    assert summary["rows"] == 200
    assert summary["positive_share"] == 0.4
    assert 0.15 < summary["missing_share"] < 0.25


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (frame(20, 10, 0.0), "too few labelled rows to train.*: 20 labelled rows found"),
        (frame(200, 0, 0.0), "missing label class"),
        (frame(200, 4, 0.0), r"unusable window: the rarer label class is 2\.0% of 200 rows"),
        (frame(200, 80, 0.9), r"unusable window: 9\d\.\d% of feature values are missing"),
    ],
)
def test_unusable_window_fails_without_retry(write: Writer, data: pd.DataFrame, message: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=message):
        dag_tasks.validate_window(write(data), "in the test's window")


def test_only_unreachable_services_are_retried() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    @dag_tasks.fail_fast_on_bad_input
    def unreachable() -> None:
        try:
            raise InfluxUnavailable("InfluxDB at http://127.0.0.1:8086 is unreachable")
        except InfluxUnavailable as exc:
            raise UserError("could not read training history") from exc

    @dag_tasks.fail_fast_on_bad_input
    def bad_request() -> None:
        raise UserError("unknown gate metric 'auc'")

    with pytest.raises(UserError, match="could not read"):
        unreachable()
    with pytest.raises(AirflowFailException, match="unknown gate metric 'auc'"):
        bad_request()


def test_gate_overrides_are_checked_before_any_io() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="unknown gate metric 'auc': use one of f1, accuracy"):
        dag_tasks.evaluate_and_promote("1", gate_metric="auc")
    with pytest.raises(AirflowFailException, match="unknown promote mode 'maybe'"):
        dag_tasks.evaluate_and_promote("1", promote="maybe")


def test_live_mode_needs_a_metric_live_predictions_can_give() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(
        AirflowFailException, match="the live gate compares accuracy or f1; the gate metric is 'roc_auc'"
    ):
        dag_tasks.evaluate_and_promote("1", gate_metric="roc_auc", promote="live")


def test_other_modes_pass_through_the_live_tasks_without_waiting_or_io() -> None:
    decision = {
        "version": "3",
        "promoted": False,
        "decision": "rejected",
        "promote": "auto",
        "challenger": True,
    }
    waited = dag_tasks.await_live_evidence(decision)
    assert (waited.is_done, waited.xcom_value) == (True, {"waited": False})
    assert dag_tasks.decide_on_live_evidence(decision) == decision
    # Live mode with no champion promoted the first version as usual: nothing to wait for either.
    first = {**decision, "promoted": True, "decision": "first", "promote": "live", "challenger": False}
    assert dag_tasks.await_live_evidence(first).is_done
    assert dag_tasks.decide_on_live_evidence(first) == first


def test_a_run_that_skipped_before_evaluating_skips_the_live_decision_too() -> None:
    """A scheduled run on an empty window skips extract and what follows; the live decision runs anyway
    (its trigger rule lets a timed-out sensor through) and must skip, not fail and retry: a failing task
    kept the DAG's one active run busy for minutes while an alert's retrain waited."""
    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException, match="nothing was evaluated"):
        dag_tasks.decide_on_live_evidence(None)


def test_monitor_interval_for_scheduled_and_manual_runs() -> None:
    assert retrain_trigger.monitor_interval(END - timedelta(hours=1), END, END) == (
        END - timedelta(hours=1),
        END,
    )
    # Triggered by hand without a logical date: the hour before the run.
    assert retrain_trigger.monitor_interval(None, None, END) == (END - timedelta(hours=1), END)


# --- after a shift: the window starts at the onset and its end waits for enough rows ---------------

ONSET = datetime(2026, 11, 27, 22, tzinfo=UTC)
CHECK_END = datetime(2026, 11, 27, 23, tzinfo=UTC)
DRIFT_RUN = {"window_start": ONSET.isoformat(), "window_end": CHECK_END.isoformat()}


def labelled_every(minutes: float) -> Callable[[datetime, datetime], int]:
    """A history with one labelled row every ``minutes`` from two days before the onset on."""
    times = [
        ONSET - timedelta(days=2) + timedelta(minutes=minutes * i) for i in range(int(4 * 1440 / minutes))
    ]
    return lambda since, until: sum(since <= moment < until for moment in times)


def wait(count: Callable[[datetime, datetime], int], now: datetime, params: Mapping[str, object] = DRIFT_RUN):
    return dag_tasks.wait_for_history(
        params, (ONSET, CHECK_END), 200, count, now, CHECK_END + timedelta(hours=6)
    )


def test_enough_rows_since_the_onset_train_on_the_onset_to_the_checks_end() -> None:
    done = wait(labelled_every(0.25), CHECK_END + timedelta(minutes=1))
    assert (done.done, done.since, done.until, done.rows) == (True, ONSET, CHECK_END, 240)


def test_too_few_rows_since_the_onset_move_the_end_forward_never_the_start_back() -> None:
    count = labelled_every(0.5)  # 120 rows in the hour since the onset, thousands before it
    waiting = wait(count, CHECK_END + timedelta(minutes=30))
    assert (waiting.done, waiting.since, waiting.rows) == (False, ONSET, 180)
    assert (
        "180 labelled rows since the drift onset" in waiting.note
        and "FIREMAN_TRAIN_SHIFT_MIN_ROWS" in waiting.note
    )
    later = CHECK_END + timedelta(minutes=41, microseconds=5)
    done = wait(count, later)
    assert (done.done, done.since, done.until, done.rows) == (True, ONSET, later.replace(microsecond=0), 202)
    assert done.xcom()["until"] == later.replace(microsecond=0).isoformat()


def test_past_the_deadline_the_run_fails_with_the_counts_for_the_next_check_to_retry() -> None:
    with pytest.raises(
        sources.TooLittleHistory, match=r"1 labelled rows since the drift onset .*next drift check"
    ):
        wait(labelled_every(600), CHECK_END + timedelta(hours=7))


def test_runs_without_an_onset_do_not_wait() -> None:
    assert wait(labelled_every(600), CHECK_END, params={"window_hours": 1}).done
    assert wait(labelled_every(600), CHECK_END, params={}).xcom()["until"] is None
