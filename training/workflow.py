"""Training end to end, and the same work cut into steps for the retraining DAG.

``run_training`` does everything in one process. The DAG calls one step per task and passes only
ids and paths between them (XCom): ``extract_history`` -> parquet path, ``validate_file`` -> row
count, ``train_from_file`` -> run id and version, ``evaluate_and_promote`` -> the decision. Data is
validated before an MLflow run starts, so bad data never leaves a model behind.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fireman.common import onnx_export
from fireman.common.errors import UserError
from fireman.common.model_registry import RegistryClient
from fireman.common.schema import FEATURE_NAMES, LABEL_COLUMN
from fireman.training import evaluation, live_gate, registry, sources, unseen
from fireman.training.gate import PROMOTE_MODES, GateRule, Verdict, decide, holdout_verdict
from fireman.training.pipeline import PARAM_NAMES, build_pipeline, check_params, fit_params_for
from fireman.training.settings import TrainingSettings
from fireman.training.tracking import connect

FEATURES = list(FEATURE_NAMES)
MODEL_ARTIFACT = "model"
REFERENCE_ARTIFACT = "reference/reference.parquet"
HOLDOUT_ARTIFACT = "holdout/holdout.parquet"
FEATURES_ARTIFACT = "features.json"
FINGERPRINT_DIR = "fingerprints"
FINGERPRINT_ARTIFACT = f"{FINGERPRINT_DIR}/training_rows.parquet"
CONFUSION_ARTIFACT = "confusion_matrix.png"
# skops (MLflow's safe default format) refuses types it has not been told to trust; these are the
# forest's node storage and numpy dtypes, both written by this process.
SKOPS_TRUSTED_TYPES = ["numpy.dtype", "sklearn.tree._tree.Tree"]
# Training rows the ONNX export is checked on at registration (twice: as they are, and with gaps).
ONNX_CHECK_ROWS = 1000


@dataclass
class Decision:
    version: str
    promoted: bool
    decision: str
    reason: str
    champion: str | None
    metrics: dict[str, dict[str, float]]
    challenger: bool = False  # left as the challenger alias, scored in shadow beside production
    # Rows compared and left out (the champion trained on them): holdout_rows, holdout_excluded, ...
    holdout: dict[str, int] = field(default_factory=dict)


@dataclass
class Registered:
    run_id: str
    version: str
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainingOutcome:
    run_id: str
    version: str
    metrics: dict[str, float]
    promoted: bool
    reason: str
    rows: int
    decision: str = ""
    champion: str | None = None
    challenger: bool = False
    source: str = "file"
    since: str | None = None
    until: str | None = None
    unlabelled_excluded: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    holdout: dict[str, int] = field(default_factory=dict)  # see Decision.holdout
    # The fitted pipeline itself, for callers in the same process; not part of the JSON form.
    model: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        # Not asdict(): it would deep-copy the fitted model.
        return {item.name: getattr(self, item.name) for item in fields(self) if item.name != "model"}


@dataclass
class Extracted:
    path: str
    rows: int
    unlabelled_excluded: int
    since: str | None
    until: str | None


def _pipeline_params(settings: TrainingSettings, overrides: dict[str, Any] | None) -> dict[str, Any]:
    if unknown := sorted(set(overrides or {}) - set(PARAM_NAMES)):
        raise UserError(f"unknown model parameters: {', '.join(unknown)} (known: {', '.join(PARAM_NAMES)})")
    params = settings.pipeline_params()
    # The settings, then one override at a time, so the error names the value at fault.
    changes: list[tuple[str, dict[str, Any]]] = [("model settings (FIREMAN_TRAIN_*)", {})]
    changes += [(f"--param {key}={value}", {key: value}) for key, value in (overrides or {}).items()]
    for name, change in changes:
        params.update(change)
        try:
            check_params(params)
        except (ValueError, TypeError) as exc:
            raise UserError(f"{name}: {exc}") from exc
    return params


# --- DAG steps -------------------------------------------------------------------------------------


def extract_history(
    settings: TrainingSettings,
    out_path: str | Path,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Extracted:
    """Read the InfluxDB training window into a parquet file (with the window in its metadata)."""
    dataset = sources.load_influx(settings, since, until)
    path = sources.write_parquet(dataset, Path(out_path))
    info = dataset.info
    return Extracted(str(path), dataset.rows, info.unlabelled_excluded, info.since, info.until)


def validate_file(settings: TrainingSettings, path: str | Path) -> int:
    """Validate an extracted file; returns its row count or raises UserError."""
    dataset = sources.read_parquet(Path(path))
    sources.validate(dataset, settings.min_rows)
    return dataset.rows


def train_from_file(
    settings: TrainingSettings, path: str | Path, params: dict[str, Any] | None = None
) -> Registered:
    dataset = sources.read_parquet(Path(path))
    sources.validate(dataset, settings.min_rows)
    client = connect(settings.mlflow, settings.health_timeout_s)
    return _train_and_register(settings, client, dataset, params)[0]


def evaluate_and_promote(settings: TrainingSettings, version: str, promote: str = "auto") -> Decision:
    """Score a registered challenger and the champion on the challenger's hold-out; apply the gate."""
    import mlflow

    connect(settings.mlflow, settings.health_timeout_s)
    with RegistryClient(settings.mlflow) as client:
        challenger = registry.get_version(client, settings.mlflow.model_name, version)
        champion = client.version_by_alias(settings.mlflow.model_name, settings.mlflow.production_alias)
        if promote == "live" and champion is not None and str(champion.version) != str(version):
            # Live evidence decides, not the hold-out: nothing to download or score now.
            return _await_live_evidence(settings, client, str(version), str(champion.version))
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=challenger.run_id,
                artifact_path=HOLDOUT_ARTIFACT,
                tracking_uri=settings.mlflow.tracking_uri,
            )
        except Exception as exc:
            raise UserError(f"version {version} has no hold-out artifact to evaluate on: {exc}") from exc
        holdout = pd.read_parquet(local)
        model = _load_version(settings, str(version))
        return _gate(settings, client, str(version), model, holdout, promote)


# --- one process -----------------------------------------------------------------------------------


def run_training(
    settings: TrainingSettings,
    source: str = "file",
    promote: str = "auto",
    since: datetime | None = None,
    until: datetime | None = None,
    last_hours: float | None = None,
    params: dict[str, Any] | None = None,
) -> TrainingOutcome:
    if promote not in PROMOTE_MODES:
        raise UserError(f"unknown --promote {promote!r}: use {', '.join(PROMOTE_MODES)}")
    if promote == "live":
        live_gate.require_live_metric(settings)
    _pipeline_params(settings, params)  # reject unknown parameters before any I/O
    client = connect(settings.mlflow, settings.health_timeout_s)
    started = time.perf_counter()
    dataset = sources.load(settings, source, since, until, last_hours)
    query_s = time.perf_counter() - started
    sources.validate(dataset, settings.min_rows)
    registered, model, holdout = _train_and_register(settings, client, dataset, params)
    started = time.perf_counter()
    with RegistryClient(settings.mlflow) as registry_client:
        decision = _gate(settings, registry_client, registered.version, model, holdout, promote)
    timings = {"query": query_s, **registered.timings, "gate": time.perf_counter() - started}
    info = dataset.info
    return TrainingOutcome(
        run_id=registered.run_id,
        version=registered.version,
        metrics=registered.metrics,
        promoted=decision.promoted,
        reason=decision.reason,
        rows=dataset.rows,
        decision=decision.decision,
        champion=decision.champion,
        challenger=decision.challenger,
        source=info.source,
        since=info.since,
        until=info.until,
        unlabelled_excluded=info.unlabelled_excluded,
        timings=timings,
        holdout=decision.holdout,
        model=model,
    )


# --- internals -------------------------------------------------------------------------------------


def _experiment_id(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise UserError(
                f"MLflow experiment {name!r} is deleted: restore it or set FIREMAN_MLFLOW_EXPERIMENT"
            )
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:  # created concurrently by another trainer
        return str(client.get_experiment_by_name(name).experiment_id)


def _train_and_register(
    settings: TrainingSettings, client: Any, dataset: sources.Dataset, overrides: dict[str, Any] | None
) -> tuple[Registered, Any, pd.DataFrame]:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    train, held_out = evaluation.split(dataset, settings.test_size, settings.split, settings.random_state)
    params = fit_params_for(_pipeline_params(settings, overrides), len(train))
    prints, prints_complete = unseen.compact(
        unseen.fingerprint(train), settings.fingerprint_rows, settings.random_state
    )
    experiment_id = _experiment_id(client, settings.mlflow.experiment)

    started = time.perf_counter()
    model = build_pipeline(**params)
    model.fit(train[FEATURES], train[LABEL_COLUMN])
    fit_s = time.perf_counter() - started

    started = time.perf_counter()
    metrics = evaluation.score(model, held_out)
    evaluate_s = time.perf_counter() - started

    started = time.perf_counter()
    info = dataset.info
    window = {"data_source": info.source, "data_since": info.since or "", "data_until": info.until or ""}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{info.source}") as run:
        mlflow.log_params(
            {
                **{key: ("None" if value is None else value) for key, value in params.items()},
                **window,
                "data_database": info.database or "",
                "split": settings.split,
                "test_size": settings.test_size,
                "missing_rate_injected": info.missing_rate_injected
                if info.missing_rate_injected is not None
                else "",
                "rows_total": dataset.rows,
                "rows_train": len(train),
                "rows_holdout": len(held_out),
                "fingerprint_rows": len(prints),
                "fingerprint_complete": prints_complete,
                "unlabelled_excluded": info.unlabelled_excluded,
            }
        )
        mlflow.log_metrics({**metrics, "missing_rate": evaluation.missing_rate(dataset.frame)})
        mlflow.log_dict({"features": FEATURES, "label": LABEL_COLUMN}, FEATURES_ARTIFACT)
        mlflow.log_figure(
            evaluation.confusion_figure(model, held_out, f"hold-out, {len(held_out)} rows"),
            CONFUSION_ARTIFACT,
        )
        with tempfile.TemporaryDirectory(prefix="fireman-train-") as tmp:
            reference = train[FEATURES].sample(
                n=min(settings.reference_rows, len(train)), random_state=settings.random_state
            )
            _log_artifact(reference, Path(tmp), REFERENCE_ARTIFACT)
            _log_artifact(held_out, Path(tmp), HOLDOUT_ARTIFACT)
            _log_artifact(unseen.to_frame(prints), Path(tmp), FINGERPRINT_ARTIFACT)
            metadata = _log_onnx_export(model, reference, Path(tmp))
        example = train[FEATURES].head(5)
        signature = infer_signature(example, model.predict(example))
        # Explicit requirements skip MLflow's inference, which re-imports the model in a subprocess.
        requirements = mlflow.sklearn.get_default_pip_requirements(include_skops=True)
        logged = mlflow.sklearn.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            metadata=metadata,
        )
        run_id = run.info.run_id
    tags = {
        **window,
        "data_rows": str(dataset.rows),
        "data_unlabelled_excluded": str(info.unlabelled_excluded),
    }
    # register_model creates the registered model on first use and links the version to the run.
    version = mlflow.register_model(logged.model_uri, settings.mlflow.model_name, tags=tags)
    log_s = time.perf_counter() - started
    registered = Registered(
        run_id=run_id,
        version=str(version.version),
        metrics=metrics,
        timings={"fit": fit_s, "evaluate": evaluate_s, "log_register": log_s},
    )
    return registered, model, held_out


def _log_artifact(content: pd.DataFrame | bytes, tmp: Path, artifact: str) -> None:
    """Write ``content`` (a frame as parquet, or bytes) under ``tmp`` and log it at ``artifact``."""
    import mlflow

    local = tmp / artifact
    local.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        local.write_bytes(content)
    else:
        content.to_parquet(local, index=False)
    mlflow.log_artifact(str(local), artifact_path=str(Path(artifact).parent))


def _log_onnx_export(model: Any, sample: pd.DataFrame, tmp: Path) -> dict[str, str] | None:
    """Log the model's checked ONNX export; the logged model's metadata, which names it, or None.

    ``sample`` (training rows) is what the export is checked on beside fixed rows; with no export the
    version is registered all the same, and scored by sklearn.
    """
    content = onnx_export.export(model, sample.head(ONNX_CHECK_ROWS).to_numpy(dtype=np.float64))
    if content is None:
        return None
    _log_artifact(content, tmp, onnx_export.ARTIFACT)
    return {onnx_export.METADATA_KEY: onnx_export.ARTIFACT}


def _load_version(settings: TrainingSettings, version: str) -> Any:
    import mlflow.sklearn

    return mlflow.sklearn.load_model(f"models:/{settings.mlflow.model_name}/{version}")


def _gate(
    settings: TrainingSettings,
    client: RegistryClient,
    version: str,
    model: Any,
    holdout: pd.DataFrame,
    promote: str,
) -> Decision:
    rule = GateRule(settings.gate_metric, settings.margin, settings.guard_metric, settings.guard_tolerance)
    name = settings.mlflow.model_name
    current = client.version_by_alias(name, settings.mlflow.production_alias)
    champion = str(current.version) if current is not None else None
    if champion == version:
        return Decision(version, True, "unchanged", f"version {version} is already production", champion, {})
    if promote == "live" and champion is not None:
        return _await_live_evidence(settings, client, version, champion)
    # Neither version may have trained on the rows they are compared on (see fireman.training.unseen).
    exclusion = (
        unseen.exclude(holdout, current.tags, _training_prints(settings, current.run_id))
        if current is not None
        else unseen.Exclusion(holdout, len(holdout))
    )
    rows = exclusion.kept
    scoreable = len(rows) > 0 and rows[LABEL_COLUMN].nunique() == 2
    challenger_scores = evaluation.score(model, rows) if scoreable else {}
    champion_scores = (
        evaluation.score(_load_version(settings, champion), rows) if champion and scoreable else None
    )
    verdict: Verdict | None = None
    if current is not None:
        verdict = holdout_verdict(promote, len(rows), scoreable, settings.gate_min_rows, exclusion.text())
    if verdict is None:
        verdict = decide(rule, challenger_scores, champion_scores, promote)
        if current is not None and verdict.decision in ("promoted", "rejected"):
            verdict = Verdict(verdict.promote, verdict.decision, f"{verdict.reason}; {exclusion.text()}")
    compared = sorted({rule.gate_metric, rule.guard_metric})
    metrics = {
        role: {key: round(scores[key], 6) for key in compared}
        for role, scores in (("challenger", challenger_scores), ("champion", champion_scores))
        if scores
    }
    counts = exclusion.counts()
    by = registry.actor() if verdict.decision == "forced" else None
    registry.record_decision(
        client, name, version, champion, verdict.decision, verdict.reason, {**metrics, **counts}, by=by
    )
    if verdict.promote:
        registry.move_production(client, settings.mlflow, version, how=verdict.decision)
    shadow = not verdict.promote and promote == "auto"
    if shadow:
        # Not good enough on the hold-out, but the hold-out is not the live stream: scored in shadow, it
        # gathers the live evidence `fireman promote --live` decides on.
        registry.make_challenger(client, settings.mlflow, version)
    return Decision(
        version, verdict.promote, verdict.decision, verdict.reason, champion, metrics, shadow, counts
    )


def _training_prints(settings: TrainingSettings, run_id: str) -> np.ndarray | None:
    """The fingerprints of a version's training rows, or None if its run logged none (older versions)."""
    import mlflow

    if not run_id:
        return None
    uri = settings.mlflow.tracking_uri
    listed = mlflow.artifacts.list_artifacts(run_id=run_id, artifact_path=FINGERPRINT_DIR, tracking_uri=uri)
    if not any(item.path == FINGERPRINT_ARTIFACT for item in listed):
        return None
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=FINGERPRINT_ARTIFACT, tracking_uri=uri
    )
    return unseen.from_frame(pd.read_parquet(local))


def _await_live_evidence(
    settings: TrainingSettings, client: RegistryClient, version: str, champion: str
) -> Decision:
    """Live mode: the candidate becomes the challenger; live evidence, not the hold-out, decides later."""
    live_gate.require_live_metric(settings)
    reason = (
        f"challenger: scored in shadow beside production v{champion}; promoted once it beats it on "
        f"{settings.gate_metric} by {settings.margin} over {settings.live_min_events} live labelled events"
    )
    registry.make_challenger(client, settings.mlflow, version)
    registry.record_decision(client, settings.mlflow.model_name, version, champion, "challenger", reason, {})
    return Decision(version, False, "challenger", reason, champion, {}, challenger=True)
