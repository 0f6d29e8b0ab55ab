"""Hourly: when the monitor's drift alerts hold, trigger ``retrain_spam_classifier`` from the drift onset.

Thin on purpose: the decision and the cool-down live in ``fireman.training.retrain_trigger``.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronDataIntervalTimetable, dag, task

from fireman.common.settings import AirflowSettings

DAG_ID = "monitor_drift"
RETRAIN_DAG_ID = "retrain_spam_classifier"

DOC_MD = """
### Watch drift, trigger retraining

Every hour (`FIREMAN_AIRFLOW_DRIFT_CHECK_SCHEDULE`), or on demand, this reads the `alerts` and
`drift` measurements that `fireman monitor` writes to InfluxDB for the run's interval.

| task | does |
|---|---|
| `check_drift` | no alert in the interval, or a retrain within the cool-down: skip the rest |
| `trigger_retrain` | runs `retrain_spam_classifier` on the window from the drift onset to the interval end |
| `record_trigger` | writes a `retrain_triggers` point to InfluxDB: the cool-down's memory |

The drift onset is the first of the consecutive drifting windows that led to the interval's first
alert. The cool-down (`FIREMAN_DRIFT_TRIGGER_COOLDOWN_HOURS`, default 6 h) is kept in InfluxDB
(`retrain_triggers`), so it holds across Airflow restarts and re-runs of an interval.
"""


DECISION = "ti.xcom_pull(task_ids='check_drift')"


def _timetable() -> CronDataIntervalTimetable | None:
    # Reads FIREMAN_AIRFLOW_DRIFT_CHECK_SCHEDULE from the environment only: no I/O at parse time.
    cron = AirflowSettings.cron(AirflowSettings().drift_check_schedule)
    return CronDataIntervalTimetable(cron, timezone="UTC") if cron else None


@dag(
    dag_id=DAG_ID,
    schedule=_timetable(),
    doc_md=DOC_MD,
    tags=["fireman", "monitoring", "drift"],
    render_template_as_native_obj=True,
    **AirflowSettings().dag_arguments(),
)
def monitor_drift() -> None:
    @task.short_circuit
    def check_drift(**context: Any) -> dict[str, Any] | bool:
        from fireman.training import retrain_trigger

        return retrain_trigger.check(
            context.get("data_interval_start"),
            context.get("data_interval_end"),
            context["dag_run"].run_after,
        )

    trigger = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id=RETRAIN_DAG_ID,
        # One retrain per monitored interval: a re-run of this interval finds it and skips.
        trigger_run_id=f"drift__{{{{ {DECISION}['interval_end'] }}}}",
        # Rendered as a dict: the DAG renders templates as native objects.
        conf=f"{{{{ {DECISION}['retrain_conf'] }}}}",  # type: ignore[arg-type]
        skip_when_already_exists=True,
        wait_for_completion=False,
    )

    @task
    def record_trigger(**context: Any) -> None:
        from fireman.training import retrain_trigger

        decision = context["ti"].xcom_pull(task_ids="check_drift")
        retrain_trigger.record(decision, RETRAIN_DAG_ID, f"drift__{decision['interval_end']}")

    check_drift() >> trigger >> record_trigger()


monitor_drift()
