"""A servable model version: resolved from the registry alias, loaded, and checked before it serves.

The scorer serves it; the monitor loads the same version to score its drift reference as the scorer
scores events (with sklearn: where the scorer uses the ONNX export, within 1e-5, the same classes).

A model serves only if its signature names a feature set the events carry (numeric columns, all
known features) and it produces finite class-1 probabilities on sample rows, with and without
missing values. The feature order of the matrix the scorer builds is the signature's order.

A loader asked to (the scorer's ``FIREMAN_SCORER_ONNX``) scores with the version's ONNX export in
onnxruntime instead, if the version has one and it gives the sklearn model's answers on check rows
(``fireman.common.onnx_export``); the sklearn model is loaded and checked all the same, as the truth
the export is checked against, and scores whenever the export is missing or refused.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fireman.common import mlflow_uri, onnx_export
from fireman.common.model_registry import RegistryClient
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import MlflowSettings

log = logging.getLogger(__name__)

NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})
POSITIVE_CLASS = 1


@dataclass(frozen=True)
class Lineage:
    """Which registered version (and training run) scored an event; every prediction carries it."""

    model_name: str
    model_version: str
    run_id: str


class ModelRefused(Exception):
    """The version cannot serve; the message says why."""


@dataclass(frozen=True)
class AliasTarget:
    name: str
    version: str
    run_id: str


@dataclass
class ServingModel:
    lineage: Lineage
    feature_order: tuple[str, ...]
    estimator: Any
    positive_column: int
    classes: np.ndarray
    load_seconds: float
    # The checked ONNX export, scoring in the estimator's place; None: the estimator scores.
    export: Exported | None = None

    @property
    def version(self) -> str:
        return self.lineage.model_version

    @property
    def backend(self) -> str:
        """What computes the probabilities: ``sklearn`` or ``onnxruntime``."""
        return "sklearn" if self.export is None else "onnxruntime"

    def score(self, matrix: np.ndarray) -> tuple[list[int], list[float]]:
        """One ``predict_proba`` call: predicted classes (as ``predict`` would) and P(class 1)."""
        with warnings.catch_warnings():
            # Fitted on a DataFrame, scored on a matrix in the same column order: the warning is noise.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            proba = self._probabilities(matrix)
        predictions = self.classes[np.argmax(proba, axis=1)]
        return predictions.astype(np.int64).tolist(), proba[:, self.positive_column].astype(
            np.float64
        ).tolist()

    def _probabilities(self, matrix: np.ndarray) -> np.ndarray:
        scorer = self.estimator if self.export is None else self.export
        return np.asarray(scorer.predict_proba(matrix))


@dataclass(frozen=True)
class Exported:
    """A version's ONNX export, checked against its sklearn model, which still decides near ties."""

    predictor: onnx_export.OnnxPredictor
    exact: Any  # sklearn's probabilities: the forest tree by tree where that agrees, else the estimator

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        proba = self.predictor.predict_proba(matrix).astype(np.float64)
        # Where two classes (nearly) tie, float32 sums may break the tie the other way (half the trees
        # each way: one row in a few hundred): sklearn, the truth, scores those few rows, so every
        # predicted class is sklearn's.
        ties = onnx_export.near_ties(proba)
        if ties.any():
            proba[ties] = self.exact.predict_proba(np.asarray(matrix)[ties])
        return proba


class Registry:
    """Reads the registered model's aliases and loads versions; MLflow is imported lazily (it is slow)."""

    def __init__(self, settings: MlflowSettings, onnx: bool = False) -> None:
        self.settings = settings
        self.client = RegistryClient(settings)
        self.onnx = onnx  # score with a version's checked ONNX export where it has one

    def by_alias(self, alias: str) -> AliasTarget | None:
        """The version ``alias`` points to, or None when the alias is not set (yet)."""
        version = self.client.version_by_alias(self.settings.model_name, alias)
        if version is None:
            return None
        return AliasTarget(name=version.name, version=version.version, run_id=version.run_id)

    def production(self) -> AliasTarget | None:
        """The version the production alias points to, or None when there is none (yet)."""
        return self.by_alias(self.settings.production_alias)

    def close(self) -> None:
        self.client.close()

    def load(self, target: AliasTarget) -> ServingModel:
        """Load and check a version; raises ModelRefused if it cannot serve events."""
        import mlflow
        from mlflow.exceptions import MlflowException

        started = time.perf_counter()
        uri = f"models:/{target.name}/{target.version}"
        mlflow_uri.bind(self.settings)
        try:
            info = mlflow.models.get_model_info(uri)
            if "sklearn" not in info.flavors:
                raise ModelRefused(f"version {target.version} has no sklearn flavor (needs predict_proba)")
            order = feature_order(info.signature)
            estimator = mlflow.sklearn.load_model(uri)
        except MlflowException as exc:
            raise ModelRefused(f"version {target.version} could not be loaded: {exc.message}") from exc
        model = build_serving_model(
            estimator,
            order,
            Lineage(target.name, target.version, target.run_id),
            time.perf_counter() - started,
        )
        if not self.onnx:
            return model
        export = load_export(model, (info.metadata or {}).get(onnx_export.METADATA_KEY))
        return replace(model, export=export, load_seconds=time.perf_counter() - started)


def load_export(model: ServingModel, artifact: str | None) -> Exported | None:
    """The version's ONNX export if it has one and it passes its check; None (sklearn scores) otherwise.

    Never raises: whatever goes wrong with the export, the checked sklearn model can serve.
    """
    version = model.version
    if artifact is None:
        log.info("version %s scores with sklearn: it has no ONNX export", version)
        return None
    try:
        content = _download(model.lineage.run_id, artifact)
        predictor = onnx_export.OnnxPredictor(content)
        rows = onnx_export.check_rows(len(model.feature_order))
        difference = onnx_export.verify(predictor, model.estimator, rows)
    except ImportError as exc:
        log.warning("version %s scores with sklearn: onnxruntime is not importable (%s)", version, exc)
        return None
    except Exception as exc:  # a missing, corrupt or disagreeing export: sklearn serves
        log.warning(
            "version %s scores with sklearn: its ONNX export is refused (%s: %s)",
            version,
            type(exc).__name__,
            exc,
        )
        return None
    log.info(
        "version %s scores with onnxruntime: its ONNX export matches sklearn on %d check rows "
        "(largest probability difference %.1e)",
        version,
        len(rows),
        difference,
    )
    width = len(model.feature_order)
    return Exported(predictor, trees_in_turn(model.estimator, width, version) or model.estimator)


def _download(run_id: str, artifact: str) -> bytes:
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="fireman-onnx-") as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp)
        return Path(local).read_bytes()


def predict_in_one_thread(estimator: Any) -> None:
    """Make ``estimator`` (a pipeline's steps included) predict in the calling thread.

    Training fits the forest with ``n_jobs=-1``, which hands every predict call to a thread per core:
    for a call of a few rows that costs more than it saves (one row: 38 ms against 14 ms here).
    """
    params = estimator.get_params() if hasattr(estimator, "get_params") else {}
    single = {key: 1 for key in params if key == "n_jobs" or key.endswith("__n_jobs")}
    if single:
        estimator.set_params(**single)


def feature_order(signature: Any) -> tuple[str, ...]:
    """The signature's input columns, if they are a feature set the events carry."""
    if signature is None or signature.inputs is None:
        raise ModelRefused("the model has no input signature, so its feature order is unknown")
    inputs = signature.inputs
    if inputs.is_tensor_spec() or not inputs.has_input_names():
        raise ModelRefused("the signature is not named columns")
    names = tuple(inputs.input_names())
    unknown = [name for name in names if name not in FEATURE_NAMES]
    if unknown:
        raise ModelRefused(
            f"incompatible signature: {len(unknown)} input(s) are not event features "
            f"({', '.join(map(str, unknown[:5]))}); events carry {FEATURE_NAMES[0]}..{FEATURE_NAMES[-1]}"
        )
    if len(set(names)) != len(names):
        raise ModelRefused("incompatible signature: duplicate input columns")
    for name, kind in zip(names, inputs.input_types(), strict=True):
        type_name = getattr(kind, "name", str(kind))
        if type_name not in NUMERIC_TYPES:
            raise ModelRefused(f"incompatible signature: input {name} is {type_name}, not numeric")
    return names


def build_serving_model(
    estimator: Any, order: tuple[str, ...], lineage: Lineage, load_seconds: float
) -> ServingModel:
    """Check that the estimator scores matrices in ``order``; raise ModelRefused otherwise."""
    version = lineage.model_version
    if not hasattr(estimator, "predict_proba"):
        raise ModelRefused(f"version {version} has no predict_proba")
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is not None and tuple(fitted) != order:
        raise ModelRefused(f"version {version}: the fitted feature order differs from the signature")
    classes = np.asarray(getattr(estimator, "classes_", []))
    if POSITIVE_CLASS not in classes.tolist():
        raise ModelRefused(f"version {version}: classes {classes.tolist()} do not include {POSITIVE_CLASS}")
    model = ServingModel(
        lineage=lineage,
        feature_order=order,
        estimator=estimator,
        positive_column=classes.tolist().index(POSITIVE_CLASS),
        classes=classes,
        load_seconds=load_seconds,
    )
    sample = np.zeros((2, len(order)), dtype=np.float64)
    sample[1, :] = np.nan  # every feature missing is a legal event
    try:
        _, probabilities = model.score(sample)
    except Exception as exc:
        raise ModelRefused(f"version {version} failed to predict on a sample row: {exc}") from exc
    if len(probabilities) != 2 or not all(np.isfinite(probabilities)):
        raise ModelRefused(f"version {version} gave no finite probability on a sample row")
    return model


def trees_in_turn(estimator: Any, width: int, version: str) -> TreesInTurn | None:
    """``estimator``'s forest scored tree by tree, or None if it has none or that changes an answer."""
    trees = TreesInTurn.of(estimator)
    if trees is not None and not _agrees(trees, estimator, width):
        # It reads the forest's internals; a scikit-learn release that changes them must not change
        # an answer, so any disagreement on the check rows falls back to the estimator's own path.
        log.warning("version %s: tree-by-tree scoring disagrees with predict_proba; not used", version)
        return None
    return trees


def _agrees(trees: TreesInTurn, estimator: Any, width: int) -> bool:
    """Whether the fast path gives exactly the estimator's probabilities on varied rows with gaps."""
    rows = onnx_export.check_rows(width)
    try:
        return bool(np.array_equal(trees.predict_proba(rows), estimator.predict_proba(rows)))
    except Exception:  # any failure of the fast path means the estimator's own path serves
        return False


class TreesInTurn:
    """``predict_proba`` of a pipeline ending in a fitted forest classifier, one tree after another.

    sklearn sends each tree's prediction through joblib, sets its configuration and warning filters up
    around every one and checks each tree is fitted: ~60 us a tree, most of the cost of a request of a
    few rows. The arithmetic is the forest's own: input checked and converted by the forest, the
    trees' class probabilities summed in order and divided by their number, so the probabilities are
    the scorer's.
    """

    def __init__(self, head: list[Any], forest: Any) -> None:
        self.head = head
        self.forest = forest

    @classmethod
    def of(cls, estimator: Any) -> TreesInTurn | None:
        """The fast path for ``estimator``, or None when it is not a (pipeline ending in a) forest."""
        from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
        from sklearn.pipeline import Pipeline

        steps = [step for _, step in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
        *head, forest = steps
        if not isinstance(forest, RandomForestClassifier | ExtraTreesClassifier):
            return None
        if getattr(forest, "n_outputs_", None) != 1 or not hasattr(forest, "_validate_X_predict"):
            return None
        if not all(hasattr(step, "transform") for step in head):  # "passthrough" or None steps
            return None
        return cls(head, forest)

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        for step in self.head:
            matrix = step.transform(matrix)
        forest = self.forest
        checked = forest._validate_X_predict(matrix)
        proba = np.zeros((checked.shape[0], forest.n_classes_), dtype=np.float64)
        for tree in forest.estimators_:
            # The tree's own predict_proba less its per-call checks (fitted, feature count: done once
            # above by the forest): its leaf values, in its classes' columns.
            proba += tree.tree_.predict(checked)[:, : tree.n_classes_]
        proba /= len(forest.estimators_)
        return proba
