"""Scheduled and on-demand retraining of the spam classifier from InfluxDB history.

Thin on purpose: each task makes one call into ``fireman.training.dag_tasks`` and passes paths and ids on.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from fireman.common.settings import AirflowSettings
from fireman.training.settings import TrainingSettings

DAG_ID = "retrain_spam_classifier"

DOC_MD = """
### Retrain the spam classifier

Pulls labelled history from InfluxDB, trains the imputer + random-forest pipeline, registers a new
version in MLflow and moves the `production` alias only if the champion/challenger gate says so.
The stream scorer picks up a new `production` version by itself.

| task | does |
|---|---|
| `extract` | `measurements` joined with `labels` over the window, as parquet in `$FIREMAN_HOME/retrain/` |
| `validate` | row count, both classes, class balance, missing share; fails with the reason when unusable |
| `train` | logs the run to MLflow and registers a version (a re-run reuses it) |
| `evaluate_and_promote` | the gate: challenger vs champion on the same hold-out |
| `report` | the summary, in the log and as `retrain.*` tags on the MLflow run |

**Window**: `window_start` (what `monitor_drift` sends) until `window_end` or the run's moment; else,
for a scheduled run, its data interval; else (a run you trigger) the last `window_hours` hours before the
moment of the trigger (default `FIREMAN_TRAIN_HISTORY_HOURS`).
Gate metric and margin default to `FIREMAN_TRAIN_GATE_METRIC` / `FIREMAN_TRAIN_MARGIN`.
Schedule: `FIREMAN_AIRFLOW_RETRAIN_SCHEDULE` (default `@daily`, `none` for manual runs only).

In MLflow, the run carries the tag `fireman.airflow_run` = `retrain_spam_classifier/<run id>`.
"""

METRICS = ["f1", "accuracy", "precision", "recall", "roc_auc"]


def _params() -> dict[str, Param]:
    # The form shows the values a run would use: FIREMAN_TRAIN_* read from the environment (no I/O).
    defaults = TrainingSettings()
    return {
        "window_hours": Param(
            defaults.history_hours,
            type="number",
            exclusiveMinimum=0,
            title="Window (hours)",
            description=(
                "A triggered run trains on the labelled history of the last N hours before the moment "
                "you click Trigger. Scheduled runs train on their data interval instead. "
                "Default: FIREMAN_TRAIN_HISTORY_HOURS."
            ),
        ),
        "window_start": Param(
            None,
            type=["null", "string"],
            title="Window start (optional)",
            description="Train from this time instead (ISO 8601, e.g. 2026-11-28T00:00:00+00:00); "
            "wins over the window in hours.",
        ),
        "window_end": Param(
            None,
            type=["null", "string"],
            title="Window end (optional)",
            description="Used with a window start. Empty: until the moment of the trigger.",
        ),
        "gate_metric": Param(
            defaults.gate_metric,
            type="string",
            enum=METRICS,
            title="Gate metric",
            description="The hold-out metric the new version must beat the production version on. "
            "Default: FIREMAN_TRAIN_GATE_METRIC.",
        ),
        "margin": Param(
            defaults.margin,
            type="number",
            minimum=0,
            title="Margin",
            description="How much better than production the new version must score on the gate metric. "
            "Default: FIREMAN_TRAIN_MARGIN.",
        ),
        "promote_mode": Param(
            "auto",
            type="string",
            enum=["auto", "never", "force"],
            title="Promote mode",
            description="auto: through the gate; never: register only; force: promote, bypassing the gate.",
        ),
        "reason": Param(
            None,
            type=["null", "string"],
            title="Reason (optional)",
            description="Why this run was started; monitor_drift fills it in.",
        ),
    }


def _timetable() -> CronDataIntervalTimetable | None:
    # Reads FIREMAN_AIRFLOW_RETRAIN_SCHEDULE from the environment only: no I/O at parse time.
    cron = AirflowSettings.cron(AirflowSettings().retrain_schedule)
    return CronDataIntervalTimetable(cron, timezone="UTC") if cron else None


def _run_key(context: dict[str, Any]) -> str:
    return f"{DAG_ID}/{context['run_id']}"


@dag(
    dag_id=DAG_ID,
    schedule=_timetable(),
    doc_md=DOC_MD,
    tags=["fireman", "training", "mlflow"],
    params=_params(),
    **AirflowSettings().dag_arguments(),
)
def retrain_spam_classifier() -> None:
    @task
    def extract(**context: Any) -> dict[str, Any]:
        from fireman.training import dag_tasks

        return dag_tasks.extract(
            _run_key(context),
            context["params"],
            context["dag_run"].run_type,
            context.get("data_interval_start"),
            context.get("data_interval_end"),
            context["dag_run"].run_after,
        )

    @task
    def validate(extracted: dict[str, Any]) -> dict[str, Any]:
        from fireman.training import dag_tasks

        return dag_tasks.validate(extracted["path"])

    @task
    def train(extracted: dict[str, Any], validated: dict[str, Any], **context: Any) -> dict[str, Any]:
        from fireman.training import dag_tasks

        return dag_tasks.train(extracted["path"], _run_key(context))

    @task
    def evaluate_and_promote(trained: dict[str, Any], **context: Any) -> dict[str, Any]:
        from fireman.training import dag_tasks

        params = context["params"]
        return dag_tasks.evaluate_and_promote(
            trained["version"], params.get("gate_metric"), params.get("margin"), params["promote_mode"]
        )

    @task
    def report(
        extracted: dict[str, Any],
        validated: dict[str, Any],
        trained: dict[str, Any],
        decision: dict[str, Any],
        **context: Any,
    ) -> dict[str, Any]:
        from fireman.training import dag_tasks

        return dag_tasks.report(_run_key(context), extracted, validated, trained, decision)

    # XComArgs at parse time, the tasks' dicts at run time.
    extracted: Any = extract()
    validated: Any = validate(extracted)
    trained: Any = train(extracted, validated)
    decision: Any = evaluate_and_promote(trained)
    report(extracted, validated, trained, decision)


retrain_spam_classifier()
