"""On each alert (within seconds) and hourly: when the monitor's alerts hold, trigger
``retrain_spam_classifier`` from the onset of the streak that raised them.

Thin on purpose: the decision and the cool-down live in ``fireman.training.retrain_trigger``.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Asset, AssetOrTimeSchedule, CronDataIntervalTimetable, dag, task

from fireman.common.airflow_api import ALERTS_ASSET_NAME, ALERTS_ASSET_URI
from fireman.common.settings import AirflowSettings

DAG_ID = "monitor_drift"
RETRAIN_DAG_ID = "retrain_spam_classifier"
# `fireman monitor` posts an event of this asset through the REST API for every alert it writes.
ALERTS = Asset(name=ALERTS_ASSET_NAME, uri=ALERTS_ASSET_URI)

DOC_MD = """
### Watch the monitor's alerts, trigger retraining

Runs when `fireman monitor` raises an alert (an event of the asset `fireman-alerts`, posted through
the REST API the moment the alert is written: seconds) and every hour
(`FIREMAN_AIRFLOW_DRIFT_CHECK_SCHEDULE`, `none` for alerts only), as a safety net for alerts whose
event did not get through. It reads the `alerts` of any kind (`drift`, `performance`) that the monitor
wrote to InfluxDB for the run's interval (an alert's run: the hour before it).

| task | does |
|---|---|
| `check_drift` | no alert in the interval, a retrain in the cool-down or still running: skip the rest |
| `trigger_retrain` | runs `retrain_spam_classifier` (run id `<kind>__<interval end>`) on onset to end |
| `record_trigger` | writes a `retrain_triggers` point to InfluxDB: the run the next checks wait for |

The onset is the start of the streak of bad windows that raised the interval's first alert (its
`onset_ns`; for old drift alerts, found by walking back over the `drift` windows). The retrain's conf
names the alert kind (`trigger_kind`, and in `reason`).

The cool-down (`FIREMAN_DRIFT_TRIGGER_COOLDOWN_HOURS`, default 6 h) starts when a retrain it triggered
**succeeds**: the retrain DAG's last task writes a `retrains` point. A failed retrain starts none, so
the next check triggers again; one still queued or running is waited for. Both live in InfluxDB, so
they hold across Airflow restarts and re-runs of an interval.
"""


DECISION = "ti.xcom_pull(task_ids='check_drift')"


def _schedule() -> AssetOrTimeSchedule | list[Asset]:
    # Reads FIREMAN_AIRFLOW_DRIFT_CHECK_SCHEDULE from the environment only: no I/O at parse time.
    cron = AirflowSettings.cron(AirflowSettings().drift_check_schedule)
    if cron is None:
        return [ALERTS]
    return AssetOrTimeSchedule(timetable=CronDataIntervalTimetable(cron, timezone="UTC"), assets=[ALERTS])


@dag(
    dag_id=DAG_ID,
    schedule=_schedule(),
    doc_md=DOC_MD,
    tags=["fireman", "monitoring", "drift"],
    render_template_as_native_obj=True,
    **AirflowSettings().dag_arguments(),
)
def monitor_drift() -> None:
    @task.short_circuit
    def check_drift(**context: Any) -> dict[str, Any] | bool:
        from fireman.training import retrain_trigger

        ti = context["ti"]
        return retrain_trigger.check(
            context.get("data_interval_start"),
            context.get("data_interval_end"),
            context["dag_run"].run_after,
            # Through the Execution API: tasks cannot read Airflow's database.
            pending=lambda run_ids: ti.get_dr_count(
                RETRAIN_DAG_ID, run_ids=run_ids, states=["queued", "running"]
            ),
        )

    trigger = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id=RETRAIN_DAG_ID,
        # One retrain per monitored interval: a re-run of this interval finds it and skips.
        trigger_run_id=f"{{{{ {DECISION}['retrain_run_id'] }}}}",
        # Rendered as a dict: the DAG renders templates as native objects.
        conf=f"{{{{ {DECISION}['retrain_conf'] }}}}",  # type: ignore[arg-type]
        skip_when_already_exists=True,
        wait_for_completion=False,
    )

    @task
    def record_trigger(**context: Any) -> None:
        from fireman.training import retrain_trigger

        retrain_trigger.record(context["ti"].xcom_pull(task_ids="check_drift"), RETRAIN_DAG_ID)

    check_drift() >> trigger >> record_trigger()


monitor_drift()
