"""The retraining DAG's tasks as plain functions: one call per task, JSON-able results for XCom.

Settings are built inside each call from ``FIREMAN_TRAIN_*`` (and the embedded ``FIREMAN_MLFLOW_*``,
``FIREMAN_INFLUXDB_*``, ``FIREMAN_HOME``), never when Airflow parses the DAG file. Results carry
URIs, counts and ids, never data: the extracted window travels as an MLflow artifact
(:mod:`fireman.training.handoff`), which every worker can read, not as a local path.

Re-running a DAG run is idempotent: ``train`` looks for an MLflow run already tagged with the same
DAG run before it trains again, so a retried or cleared run reuses its registered version instead of
registering another one.

Errors: a ``UserError`` about the data or the request (an empty window, one label class, an unknown
gate metric) fails the task at once, since a retry would see the same data; one caused by an
unreachable InfluxDB or MLflow is left to Airflow's retries.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, get_args

import httpx
from pydantic import Field

from fireman.common.errors import UserError
from fireman.common.influx import InfluxUnavailable
from fireman.common.model_registry import RegistryClient
from fireman.common.schema import FEATURE_NAMES, LABEL_COLUMN

# workflow and handoff (mlflow, scikit-learn: ~10 s to import) are imported by the tasks that use them, so
# a sensor's every poke and the light tasks start without them.
from fireman.training import live_gate, registry, sources
from fireman.training.gate import PROMOTE_MODES
from fireman.training.retrain_trigger import utc
from fireman.training.settings import TrainingSettings

log = logging.getLogger(__name__)

RUN_TAG = "fireman.airflow_run"
GATE_METRICS: tuple[str, ...] = get_args(TrainingSettings.model_fields["gate_metric"].annotation)

P = ParamSpec("P")
R = TypeVar("R")


class RetrainSettings(TrainingSettings):
    """``TrainingSettings`` plus what only the DAG checks; same ``FIREMAN_TRAIN_`` prefix."""

    min_class_share: float = Field(
        default=0.05, ge=0, lt=0.5, description="Smallest share of the rarer label class the DAG trains on."
    )
    max_missing_share: float = Field(
        default=0.8, gt=0, le=1, description="Largest share of missing feature values the DAG trains on."
    )


def fail_fast_on_bad_input(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a non-transient ``UserError`` into Airflow's no-retry failure, with the same message."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            if _transient(exc):
                raise
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(str(exc)) from exc

    return wrapper


class _LogWriter(io.TextIOBase):
    """A text stream whose lines become INFO records: MLflow prints its registration notes to stderr,
    which Airflow shows as errors."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.logger.info("%s", line.rstrip())
        return len(text)


@contextlib.contextmanager
def mlflow_in_task_log() -> Iterator[None]:
    """MLflow inside an Airflow task: its records at their own level, its prints at INFO, and no flood.

    skops (MLflow's sklearn serializer) scans every loaded module's attributes when first imported;
    in a task each of Airflow's deprecated-module shims answers with a warning, ~1,100 per task.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Airflow's DeprecatedImportWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        import mlflow  # noqa: F401 - configures MLflow's logger, which is replaced just below
        import skops.io  # noqa: F401
    mlflow_log = logging.getLogger("mlflow")
    mlflow_log.handlers.clear()
    mlflow_log.propagate = True
    with contextlib.redirect_stderr(_LogWriter(mlflow_log)):
        yield


def _transient(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, InfluxUnavailable | httpx.TransportError | ConnectionError | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# --- the window ------------------------------------------------------------------------------------


# Runs the timetable made: they train on their data interval. Every other run (the UI's Trigger, the
# REST API, ``airflow dags trigger``, monitor_drift) was started by someone now and means "until now".
INTERVAL_RUN_TYPES = frozenset({"scheduled", "backfill"})


def training_window(
    params: Mapping[str, Any],
    run_type: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    run_after: datetime | None,
    default_hours: float,
) -> tuple[datetime, datetime]:
    """The run's history window, first match wins.

    1. ``window_start`` (the drift DAG sends it): until ``window_end``, or until the run's moment;
    2. a scheduled or backfill run: its data interval;
    3. any other run (a trigger): the last ``window_hours`` before the moment it was triggered.

    The run's moment is ``run_after``: when a manual run was triggered, when a scheduled one was due.
    A manual run's data interval is the timetable's last *completed* interval (yesterday, for
    ``@daily``), which is not what a person clicking Trigger means.
    """
    moment = utc(run_after or datetime.now(UTC))
    start_text, end_text = params.get("window_start"), params.get("window_end")
    hours = params.get("window_hours")
    if hours is not None and float(hours) <= 0:
        raise UserError(f"window_hours must be positive, got {hours}")
    if start_text:
        start = _parse(str(start_text), "window_start")
        end = _parse(str(end_text), "window_end") if end_text else moment
    elif end_text:
        raise UserError("window_end was given without window_start")
    elif _interval_run(run_type) and data_interval_start is not None and data_interval_end is not None:
        start, end = utc(data_interval_start), utc(data_interval_end)
    else:
        end = moment
        start = end - timedelta(hours=float(hours if hours is not None else default_hours))
    if start >= end:
        raise UserError(f"empty training window: {start.isoformat()} is not before {end.isoformat()}")
    return start, end


def _interval_run(run_type: str) -> bool:
    return str(getattr(run_type, "value", run_type)) in INTERVAL_RUN_TYPES


def _parse(text: str, what: str) -> datetime:
    try:
        return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise UserError(f"{what} is not an ISO 8601 time: {text!r}") from None


# --- after a shift: enough history since the onset -------------------------------------------------


@dataclass(frozen=True)
class HistoryWait:
    done: bool
    since: datetime | None = None
    until: datetime | None = None
    rows: int | None = None
    note: str = ""

    def xcom(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment is not None else None

        return {"since": iso(self.since), "until": iso(self.until), "rows": self.rows, "note": self.note}


def wait_for_history(
    params: Mapping[str, Any],
    window: tuple[datetime, datetime],
    min_rows: int,
    count: Callable[[datetime, datetime], int],
    now: datetime,
    deadline: datetime,
) -> HistoryWait:
    """The rule of a run that starts at a drift onset (``window_start``): train only on rows since then.

    Enough labelled rows in ``[onset, window_end)``: done with that window. Too few: the end moves
    forward to ``now`` (rows since keep arriving); still too few: wait, and past ``deadline`` fail with
    the counts, for the next drift check to retry. Never reaches back before the onset: a window that
    mixed pre- and post-shift rows would teach the new version the world the shift left behind.
    Runs without ``window_start`` are done at once; their window is ``training_window``'s.
    """
    if not params.get("window_start"):
        return HistoryWait(True, note="no drift onset: the run's window as it is")
    start, end = window
    rows = count(start, end)
    if rows >= min_rows:
        return HistoryWait(True, start, end, rows, f"{rows} labelled rows since the onset")
    moved = utc(now).replace(microsecond=0)
    if moved > end:
        end, rows = moved, count(start, moved)
        if rows >= min_rows:
            note = f"{rows} labelled rows since the onset once the window's end moved to {end.isoformat()}"
            return HistoryWait(True, start, end, rows, note)
    shortfall = (
        f"{rows} labelled rows since the drift onset {start.isoformat()} (until {end.isoformat()}), "
        f"{min_rows} needed (FIREMAN_TRAIN_SHIFT_MIN_ROWS)"
    )
    if utc(now) >= deadline:
        raise sources.TooLittleHistory(
            f"{shortfall}; waited until {deadline.isoformat()} (FIREMAN_TRAIN_HISTORY_TIMEOUT_HOURS). "
            "History before the onset is not used; the next drift check triggers a new retrain"
        )
    return HistoryWait(False, start, end, rows, f"{shortfall}; waiting until {deadline.isoformat()}")


@fail_fast_on_bad_input
def await_history(
    params: Mapping[str, Any],
    run_type: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    run_after: datetime | None,
) -> Any:
    """The sensor's poke before ``extract`` (see ``wait_for_history``); the window as XCom."""
    from airflow.sdk import PokeReturnValue

    settings = RetrainSettings()
    window = training_window(
        params, run_type, data_interval_start, data_interval_end, run_after, settings.history_hours
    )
    started = utc(run_after or datetime.now(UTC))
    wait = wait_for_history(
        params,
        window,
        max(settings.min_rows, settings.shift_min_rows),
        functools.partial(sources.count_labelled, settings),
        datetime.now(UTC),
        started + timedelta(hours=settings.history_timeout_hours),
    )
    log.info("%s", wait.note)
    return PokeReturnValue(is_done=wait.done, xcom_value=wait.xcom())


# --- tasks -----------------------------------------------------------------------------------------


def data_name(run_key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_key).strip("_")
    return f"{safe}.parquet"


@fail_fast_on_bad_input
def extract(
    run_key: str,
    params: Mapping[str, Any],
    run_type: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    run_after: datetime | None,
    history: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's labelled history from InfluxDB into a parquet file, logged as an MLflow artifact.

    ``history`` is ``await_history``'s result: after a shift, the window whose end it moved forward.
    """
    from fireman.training import handoff, workflow

    settings = RetrainSettings()
    since, until = training_window(
        params, run_type, data_interval_start, data_interval_end, run_after, settings.history_hours
    )
    if history and history.get("until"):
        until = _parse(str(history["until"]), "the awaited window's end")
    with tempfile.TemporaryDirectory(prefix="fireman-extract-") as directory:
        try:
            local = Path(directory) / data_name(run_key)
            extracted = workflow.extract_history(settings, local, since, until)
            window = f" between {extracted.since} and {extracted.until}"
            sources.require_rows(extracted.rows, settings.min_rows, window)
        except sources.TooLittleHistory as exc:
            if not _interval_run(run_type):
                raise
            # A schedule that fires before there is history (a fresh stack) is not a failure to page on.
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"skipped: {exc}") from exc
        with mlflow_in_task_log():
            data = handoff.publish(settings.mlflow, Path(extracted.path), run_key, settings.health_timeout_s)
    log.info(
        "extracted %d labelled rows (%d unlabelled events excluded) from %s to %s into %s",
        extracted.rows,
        extracted.unlabelled_excluded,
        extracted.since,
        extracted.until,
        data,
    )
    return {
        "data": data,
        "rows": extracted.rows,
        "unlabelled_excluded": extracted.unlabelled_excluded,
        "since": extracted.since,
        "until": extracted.until,
    }


@fail_fast_on_bad_input
def validate(data: str) -> dict[str, Any]:
    """The extracted window (``extract``'s artifact URI) checked by :func:`validate_window`."""
    from fireman.training import handoff

    settings = RetrainSettings()
    with handoff.fetched(settings.mlflow, data, settings.health_timeout_s) as path:
        return validate_window(path, f"in {data}")


@fail_fast_on_bad_input
def validate_window(path: Path, where: str) -> dict[str, Any]:
    """Row count and both classes (training's checks), then class balance and missing share."""
    from fireman.training import workflow

    settings = RetrainSettings()
    rows = workflow.validate_file(settings, path)
    frame = sources.read_parquet(path).frame
    positive = float(frame[LABEL_COLUMN].mean())
    minority = min(positive, 1.0 - positive)
    if minority < settings.min_class_share:
        raise UserError(
            f"unusable window: the rarer label class is {minority:.1%} of {rows} rows {where}, below "
            f"{settings.min_class_share:.1%} (FIREMAN_TRAIN_MIN_CLASS_SHARE)"
        )
    missing = float(frame[list(FEATURE_NAMES)].isna().to_numpy().mean())
    if missing > settings.max_missing_share:
        raise UserError(
            f"unusable window: {missing:.1%} of feature values are missing {where}, above "
            f"{settings.max_missing_share:.1%} (FIREMAN_TRAIN_MAX_MISSING_SHARE)"
        )
    summary = {"rows": rows, "positive_share": round(positive, 4), "missing_share": round(missing, 4)}
    log.info("window is usable: %s", summary)
    return summary


@fail_fast_on_bad_input
def train(data: str, run_key: str) -> dict[str, Any]:
    """Train and register; a run already tagged with ``run_key`` is reused instead (idempotence)."""
    settings = RetrainSettings()
    from fireman.training.tracking import connect

    client = connect(settings.mlflow, settings.health_timeout_s)
    with mlflow_in_task_log(), RegistryClient(settings.mlflow) as registry_client:
        from fireman.training import handoff, workflow

        found = _registered_for(client, registry_client, settings, run_key)
        if found is not None:
            log.info("DAG run %s already trained MLflow run %s (version %s): reusing it", run_key, *found)
            run_id, version = found
            run_metrics = registry_client.run_metrics(run_id) or {}
            metrics = {k: v for k, v in run_metrics.items() if k != "missing_rate"}
            return {"run_id": run_id, "version": version, "metrics": metrics, "reused": True}
        with handoff.fetched(settings.mlflow, data, settings.health_timeout_s) as path:
            registered = workflow.train_from_file(settings, path)
        client.set_tag(registered.run_id, RUN_TAG, run_key)
        log.info(
            "MLflow run %s registered %s version %s: %s",
            registered.run_id,
            settings.mlflow.model_name,
            registered.version,
            _metrics_text(registered.metrics),
        )
        return {
            "run_id": registered.run_id,
            "version": registered.version,
            "metrics": registered.metrics,
            "reused": False,
        }


def _registered_for(
    client: Any, registry_client: RegistryClient, settings: TrainingSettings, run_key: str
) -> tuple[str, str] | None:
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    if experiment is None:
        return None
    quoted = run_key.replace("\\", "\\\\").replace("'", "\\'")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{RUN_TAG}` = '{quoted}' and attributes.status = 'FINISHED'",
        max_results=5,
    )
    for run in runs:
        for version in registry_client.search_versions(f"run_id = '{run.info.run_id}'"):
            if version.name == settings.mlflow.model_name:
                return run.info.run_id, str(version.version)
    return None


@fail_fast_on_bad_input
def evaluate_and_promote(
    version: str, gate_metric: str | None = None, margin: float | None = None, promote: str = "auto"
) -> dict[str, Any]:
    """The champion/challenger gate; the trigger form's gate metric and margin override the settings."""
    from fireman.training import workflow

    settings = RetrainSettings()
    if promote not in PROMOTE_MODES:
        raise UserError(f"unknown promote mode {promote!r}: use one of {', '.join(PROMOTE_MODES)}")
    overrides: dict[str, Any] = {}
    if gate_metric:
        if gate_metric not in GATE_METRICS:
            raise UserError(f"unknown gate metric {gate_metric!r}: use one of {', '.join(GATE_METRICS)}")
        overrides["gate_metric"] = gate_metric
    if margin is not None:
        if float(margin) < 0:
            raise UserError(f"margin must be zero or more, got {margin}")
        overrides["margin"] = float(margin)
    settings = settings.model_copy(update=overrides)
    if promote == "live":
        live_gate.require_live_metric(settings)
    with mlflow_in_task_log():
        decision = workflow.evaluate_and_promote(settings, str(version), promote)
    log.info(
        "version %s: %s (%s); champion was %s",
        decision.version,
        decision.decision,
        decision.reason,
        decision.champion or "none",
    )
    # The decision's every field (version, promoted, decision, reason, champion, metrics, challenger,
    # holdout), and the gate it was taken with.
    return {
        **asdict(decision),
        "gate_metric": settings.gate_metric,
        "margin": settings.margin,
        "promote": promote,
    }


# --- live mode: the candidate is the challenger until live evidence decides --------------------------


def _awaits_live_evidence(decision: Mapping[str, Any]) -> bool:
    return decision.get("promote") == "live" and decision.get("decision") == "challenger"


def _live_settings(decision: Mapping[str, Any]) -> RetrainSettings:
    """The run's settings with the gate metric and margin its evaluation used (the trigger form's)."""
    update = {"gate_metric": decision["gate_metric"], "margin": float(decision["margin"])}
    return RetrainSettings().model_copy(update=update)


@fail_fast_on_bad_input
def await_live_evidence(decision: Mapping[str, Any]) -> Any:
    """The sensor's poke: done once ``live_min_events`` labelled events were scored by both versions.

    Also done when there is nothing to wait for: another mode, or the version is no longer comparable
    (promoted or unknown meanwhile); ``decide_on_live_evidence`` then says why. Returns Airflow's
    ``PokeReturnValue`` with the counts as XCom.
    """
    from airflow.sdk import PokeReturnValue

    if not _awaits_live_evidence(decision):
        return PokeReturnValue(is_done=True, xcom_value={"waited": False})
    settings = _live_settings(decision)
    with RegistryClient(settings.mlflow) as client:
        try:
            challenger, champion = live_gate.versions(client, settings, str(decision["version"]))
        except UserError as exc:
            log.info("no live evidence to wait for: %s", exc)
            return PokeReturnValue(is_done=True, xcom_value={"waited": True, "note": str(exc)})
    evidence = live_gate.gather(settings, challenger, champion)
    needed = settings.live_min_events
    log.info(
        "v%s (challenger) against v%s (production): %d of %d live labelled events (%d shadow predictions)",
        challenger,
        champion,
        evidence.events,
        needed,
        evidence.shadow_predictions,
    )
    counts = {"waited": True, "events": evidence.events, "needed": needed, "champion": champion}
    return PokeReturnValue(is_done=evidence.events >= needed, xcom_value=counts)


@fail_fast_on_bad_input
def decide_on_live_evidence(decision: Mapping[str, Any] | None) -> dict[str, Any]:
    """Live mode: promote the challenger if it wins on live evidence, else leave production alone; the
    outcome is tagged on both versions either way (also when the wait timed out with too little).
    Other modes pass the evaluation's decision through."""
    if decision is None:
        # It runs even when the sensor timed out (trigger rule none_failed), so also when every task before
        # it was skipped (a scheduled run with no history yet); failing there would hold the DAG's one
        # active run through its retries while an alert-triggered retrain waits in the queue.
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException("skipped: nothing was evaluated in this run")
    if not _awaits_live_evidence(decision):
        return dict(decision)
    settings = _live_settings(decision)
    with RegistryClient(settings.mlflow) as client:
        try:
            live = live_gate.decide(
                settings, client, str(decision["version"]), registry.actor(), record_insufficient=True
            )
        except UserError as exc:
            if _transient(exc):
                raise
            log.warning("no live decision for version %s: %s", decision["version"], exc)
            return {**decision, "decision": "undecided", "reason": f"no live decision: {exc}"}
    log.info("version %s on live evidence: %s (%s)", live.version, live.decision, live.reason)
    return {
        **decision,
        "promoted": live.promoted,
        "decision": live.decision,
        "reason": live.reason,
        "champion": live.champion,
        "metrics": live.evidence(settings.live_min_events),
    }


@fail_fast_on_bad_input
def report(
    run_key: str,
    extracted: Mapping[str, Any],
    validated: Mapping[str, Any],
    trained: Mapping[str, Any],
    decision: Mapping[str, Any],
) -> dict[str, Any]:
    """One summary: logged, and set as tags on the MLflow run so the run explains itself."""
    settings = RetrainSettings()
    from fireman.training.tracking import connect

    client = connect(settings.mlflow, settings.health_timeout_s)
    summary = (
        f"{settings.mlflow.model_name} v{trained['version']} trained on {validated['rows']} rows "
        f"from {extracted['since']} to {extracted['until']}: {_metrics_text(trained.get('metrics') or {})}. "
        f"Gate ({decision['gate_metric']}, margin {decision['margin']}, mode {decision['promote']}): "
        f"{decision['decision']} - {decision['reason']}"
    )
    tags = {
        RUN_TAG: run_key,
        "retrain.window_since": extracted["since"],
        "retrain.window_until": extracted["until"],
        "retrain.rows": validated["rows"],
        "retrain.positive_share": validated["positive_share"],
        "retrain.missing_share": validated["missing_share"],
        "retrain.decision": decision["decision"],
        "retrain.promoted": decision["promoted"],
        "retrain.champion": decision["champion"] or "none",
        **{f"retrain.{key}": value for key, value in (decision.get("holdout") or {}).items()},
        "retrain.summary": summary,
    }
    for key, value in tags.items():
        client.set_tag(trained["run_id"], key, str(value))
    experiment_id = client.get_run(trained["run_id"]).info.experiment_id
    url = f"{settings.mlflow.tracking_uri}/#/experiments/{experiment_id}/runs/{trained['run_id']}"
    rule = "=" * 72
    log.info("%s\nRETRAIN SUMMARY\n%s\nMLflow run: %s\n%s", rule, summary, url, rule)
    return {"run_id": trained["run_id"], "version": trained["version"], "summary": summary, "url": url}


def _metrics_text(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items())) or "no metrics"
