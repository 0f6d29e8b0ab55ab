"""A servable model version: resolved from the registry alias, loaded, and checked before it serves.

The scorer serves it; the monitor loads the same version to score its drift reference exactly as
the scorer scores events.

A model serves only if its signature names a feature set the events carry (numeric columns, all
known features) and it produces finite class-1 probabilities on sample rows, with and without
missing values. The feature order of the matrix the scorer builds is the signature's order.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from fireman.common import mlflow_uri
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

    @property
    def version(self) -> str:
        return self.lineage.model_version

    def score(self, matrix: np.ndarray) -> tuple[list[int], list[float]]:
        """One ``predict_proba`` call: predicted classes (as ``predict`` would) and P(class 1)."""
        with warnings.catch_warnings():
            # Fitted on a DataFrame, scored on a matrix in the same column order: the warning is noise.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            proba = self.estimator.predict_proba(matrix)
        predictions = self.classes[np.argmax(proba, axis=1)]
        return predictions.astype(np.int64).tolist(), proba[:, self.positive_column].astype(
            np.float64
        ).tolist()


class Registry:
    """Reads the registered model's aliases and loads versions; MLflow is imported lazily (it is slow)."""

    def __init__(self, settings: MlflowSettings) -> None:
        self.settings = settings
        self.client = RegistryClient(settings)

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
        return model


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
