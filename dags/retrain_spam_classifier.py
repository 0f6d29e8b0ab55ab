"""Scheduled and on-demand retraining of the spam classifier from InfluxDB history.

Thin on purpose: each task makes one call into ``fireman.training.dag_tasks`` and passes URIs and ids on.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from fireman.common.settings import AirflowSettings
from fireman.training.gate import PROMOTE_MODES
from fireman.training.settings import TrainingSettings

DAG_ID = "retrain_spam_classifier"

DOC_MD = """
### Retrain the spam classifier

Pulls labelled history from InfluxDB, trains the imputer + random-forest pipeline, registers a new
version in MLflow and moves the `production` alias only if the champion/challenger gate says so.
The stream scorer picks up a new `production` version by itself.

| task | does |
|---|---|
| `await_history` | after a shift: waits for enough labelled rows since the drift onset (see **Window**) |
| `extract` | `measurements` joined with `labels` over the window, as parquet in `$FIREMAN_HOME/retrain/` |
| `validate` | row count, both classes, class balance, missing share; fails with the reason when unusable |
| `train` | logs the run to MLflow and registers a version (a re-run reuses it) |
| `evaluate_and_promote` | the gate: both versions on hold-out rows neither trained on (`live`: see below) |
| `await_live_evidence` | `live` mode: waits for the live evidence; other modes: done at once |
| `decide_on_live_evidence` | `live` mode: promotes on live evidence or leaves production; tags it |
| `report` | the summary, in the log and as `retrain.*` tags on the MLflow run |
| `record_success` | only when all went well: a `retrains` point (`monitor_drift`'s cool-down reads it) |

**Window**: `window_start` (what `monitor_drift` sends, with the alert's `trigger_kind`) until
`window_end` or the run's moment; else, for a scheduled run, its data interval; else (a run you
trigger) the last `window_hours` hours before the moment of the trigger (default
`FIREMAN_TRAIN_HISTORY_HOURS`).

**After a shift** (`window_start` is the drift onset) the new version learns only the world after it:
the window never starts before the onset. If `[onset, window_end)` holds fewer than
`FIREMAN_TRAIN_SHIFT_MIN_ROWS` (2,000) labelled rows, `await_history` moves the window's end forward to
now and waits (rescheduled every `FIREMAN_TRAIN_HISTORY_POKE_INTERVAL_S`, holding no worker) until enough
labelled rows have arrived since the onset; `extract` then trains on `[onset, that moment)`. After
`FIREMAN_TRAIN_HISTORY_TIMEOUT_HOURS` from the trigger the run fails with the counts, nothing is
trained, and the next drift check triggers a new run. Other runs do not wait: too few rows fail a
triggered run and skip a scheduled one.

**Gate on unseen rows**: the hold-out loses every row the production version trained on (inside its
training window `data_since`..`data_until`, or matching the training-row fingerprints each run logs
as `fingerprints/training_rows.parquet`, which also catches Spambase rows replayed by the generator);
with fewer than `FIREMAN_TRAIN_GATE_MIN_ROWS` rows of both classes left the decision is `insufficient`,
production stays and the new version is scored in shadow. The decision's `gate.metrics` tag records
`holdout_rows` (compared) and `holdout_excluded` (left out, by window and by fingerprint).
Gate metric and margin default to `FIREMAN_TRAIN_GATE_METRIC` / `FIREMAN_TRAIN_MARGIN`.
**Promote mode**: `auto` (the hold-out gate; a version it does not promote becomes the `challenger`, scored
in shadow by the scorer), `never`, `force`, or `live`: the version becomes the `challenger`, the sensor
waits (rescheduled every `FIREMAN_TRAIN_LIVE_POKE_INTERVAL_S`, holding no worker) until both versions
scored `FIREMAN_TRAIN_LIVE_MIN_EVENTS` labelled live events, and it is promoted only if it beats
production there on the gate metric (accuracy or f1) by the margin. After
`FIREMAN_TRAIN_LIVE_TIMEOUT_HOURS` the wait gives up and production stays as it is.
Schedule: `FIREMAN_AIRFLOW_RETRAIN_SCHEDULE` (default `@daily`, `none` for manual runs only).

In MLflow, the run carries the tag `fireman.airflow_run` = `retrain_spam_classifier/<run id>`.
"""

METRICS = ["f1", "accuracy", "precision", "recall", "roc_auc"]


# FIREMAN_TRAIN_* read from the environment (no I/O): the form's defaults and the live wait's pace.
DEFAULTS = TrainingSettings()


def _params() -> dict[str, Param]:
    # The form shows the values a run would use.
    return {
        "window_hours": Param(
            DEFAULTS.history_hours,
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
            DEFAULTS.gate_metric,
            type="string",
            enum=METRICS,
            title="Gate metric",
            description="The hold-out metric the new version must beat the production version on. "
            "Default: FIREMAN_TRAIN_GATE_METRIC.",
        ),
        "margin": Param(
            DEFAULTS.margin,
            type="number",
            minimum=0,
            title="Margin",
            description="How much better than production the new version must score on the gate metric. "
            "Default: FIREMAN_TRAIN_MARGIN.",
        ),
        "promote_mode": Param(
            "auto",
            type="string",
            enum=list(PROMOTE_MODES),
            title="Promote mode",
            description="auto: through the gate; never: register only; force: promote, bypassing the gate; "
            "live: shadow-score the new version and promote it only if it beats production on live labelled "
            "events (gate metric accuracy or f1).",
        ),
        "trigger_kind": Param(
            None,
            type=["null", "string"],
            title="Trigger kind (optional)",
            description="The kind of alert that asked for this run (drift, performance); monitor_drift "
            "fills it in. A successful run with a kind starts monitor_drift's cool-down.",
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


def _window_args(context: dict[str, Any]) -> tuple[Any, ...]:
    """What ``dag_tasks.training_window`` reads: params, run type, data interval and ``run_after``."""
    run = context["dag_run"]
    return (
        context["params"],
        run.run_type,
        context.get("data_interval_start"),
        context.get("data_interval_end"),
        run.run_after,
    )


@dag(
    dag_id=DAG_ID,
    schedule=_timetable(),
    doc_md=DOC_MD,
    tags=["fireman", "training", "mlflow"],
    params=_params(),
    **AirflowSettings().dag_arguments(),
)
def retrain_spam_classifier() -> None:
    # After a shift the window starts at the drift onset; too few rows since then: wait for more, in
    # reschedule mode (no worker held). Its own deadline fails the run with the counts first; Airflow's
    # timeout, two pokes later, is only the backstop.
    @task.sensor(
        poke_interval=DEFAULTS.history_poke_interval_s,
        timeout=DEFAULTS.history_timeout_hours * 3600 + 2 * DEFAULTS.history_poke_interval_s,
        mode="reschedule",
    )
    def await_history(**context: Any) -> Any:
        from fireman.training import dag_tasks

        return dag_tasks.await_history(*_window_args(context))

    @task
    def extract(history: dict[str, Any], **context: Any) -> dict[str, Any]:
        from fireman.training import dag_tasks

        return dag_tasks.extract(_run_key(context), *_window_args(context), history)

    @task
    def validate(extracted: dict[str, Any]) -> dict[str, Any]:
        from fireman.training import dag_tasks

        return dag_tasks.validate(extracted["data"])

    @task
    def train(extracted: dict[str, Any], validated: dict[str, Any], **context: Any) -> dict[str, Any]:
        from fireman.training import dag_tasks

        return dag_tasks.train(extracted["data"], _run_key(context))

    @task
    def evaluate_and_promote(trained: dict[str, Any], **context: Any) -> dict[str, Any]:
        from fireman.training import dag_tasks

        params = context["params"]
        return dag_tasks.evaluate_and_promote(
            trained["version"], params.get("gate_metric"), params.get("margin"), params["promote_mode"]
        )

    # Reschedule mode frees the worker slot between pokes. A wait that times out is skipped (soft_fail),
    # not failed: the decision task still runs and records that the evidence fell short.
    @task.sensor(
        poke_interval=DEFAULTS.live_poke_interval_s,
        timeout=DEFAULTS.live_timeout_hours * 3600,
        mode="reschedule",
        soft_fail=True,
    )
    def await_live_evidence(decision: dict[str, Any]) -> Any:
        from fireman.training import dag_tasks

        return dag_tasks.await_live_evidence(decision)

    @task(trigger_rule="none_failed")
    def decide_on_live_evidence(decision: dict[str, Any]) -> dict[str, Any]:
        from fireman.training import dag_tasks

        return dag_tasks.decide_on_live_evidence(decision)

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

    @task
    def record_success(extracted: dict[str, Any], reported: dict[str, Any], **context: Any) -> None:
        from fireman.training import retrain_trigger

        retrain_trigger.record_success(
            DAG_ID, context["run_id"], context["dag_run"].run_type, context["params"], extracted
        )

    # XComArgs at parse time, the tasks' dicts at run time.
    extracted: Any = extract(await_history())
    validated: Any = validate(extracted)
    trained: Any = train(extracted, validated)
    evaluated: Any = evaluate_and_promote(trained)
    decision: Any = decide_on_live_evidence(evaluated)
    await_live_evidence(evaluated) >> decision
    record_success(extracted, report(extracted, validated, trained, decision))


retrain_spam_classifier()
