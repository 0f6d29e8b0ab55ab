"""Helpers of the scorer's tests: small models, registered versions, a scorer on a thread, reading back.

Events and their producing come from ``fireman.bench.workload``, which the benchmarks share.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fireman.common import mlflow_uri
from fireman.common.dataset import load_spambase
from fireman.common.influx import InfluxClient
from fireman.common.model_registry import RegistryClient
from fireman.common.schema import FEATURE_NAMES, LABEL_COLUMN
from fireman.common.settings import DatasetSettings, InfluxSettings, KafkaSettings, MlflowSettings
from fireman.services.process import wait_until
from fireman.serving.scorer import Scorer
from fireman.serving.settings import ScorerSettings
from tests.support.background import on_thread

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


# The product's own deadline poll (``wait_for(check, timeout_s)`` is true once ``check`` holds).
wait_for = wait_until


def read_topic(kafka: KafkaSettings, topic: str, expected: int, timeout_s: float = 60.0) -> list[Any]:
    """Every message on ``topic`` (at least ``expected`` of them, waiting up to the deadline)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=10_000, timeout=0.5)
            messages.extend(m for m in batch if m.error() is None)
            if len(messages) >= expected and not batch:
                break
    finally:
        consumer.close()
    return messages


def scorer_settings(
    kafka: KafkaSettings, influx: InfluxSettings, mlflow: MlflowSettings, **extra: Any
) -> ScorerSettings:
    """Scorer settings over a test's own topics, database and model, in a consumer group of its own."""
    return ScorerSettings(
        kafka=kafka, influxdb=influx, mlflow=mlflow, group_id=f"scorer-{uuid.uuid4().hex[:8]}", **extra
    )


def influx_rows(influx: InfluxSettings, query: str) -> list[dict[str, Any]]:
    with InfluxClient(influx) as client:
        return client.query(query)


def fit_frame(
    frame: pd.DataFrame,
    n_estimators: int = 30,
    seed: int = 0,
    columns: Sequence[str] = FEATURE_NAMES,
    **params: Any,
) -> Pipeline:
    """The training code's pipeline fitted on a labelled ``frame`` (on ``columns``, in that order).

    Fewer trees and one core (the training default is every core): tests fit many models, beside
    servers that need the CPU too.
    """
    from fireman.training.pipeline import build_pipeline

    pipeline = build_pipeline(n_estimators=n_estimators, random_state=seed, n_jobs=1, **params)
    pipeline.fit(frame[list(columns)], frame[LABEL_COLUMN])
    return pipeline


def fit_pipeline(dataset: DatasetSettings, n_estimators: int = 30, seed: int = 0) -> Pipeline:
    """The training code's pipeline, small (see ``fit_frame``), fitted on Spambase."""
    return fit_frame(load_spambase(dataset), n_estimators, seed)


def register_model(
    mlflow_settings: MlflowSettings,
    estimator: Any,
    features: pd.DataFrame,
    promote: bool = True,
    serialization: str = "skops",
) -> str:
    """Log ``estimator`` as a new version (signature from ``features``); optionally move the alias to it.

    Without the hold-out and drift reference that training logs: fast, for tests that only need a
    servable version (``fireman.bench.workload.train_production`` gives the whole thing). A model of a
    class of the tests' own needs ``serialization="cloudpickle"`` (skops trusts only the forest's types).
    No ONNX export either, deliberately: these versions are scored by sklearn, so the scorer's tests
    compare with ``predict_proba`` exactly (training's export is tested in test_onnx_registry.py).
    """
    import mlflow
    from mlflow.models import infer_signature

    from fireman.training.workflow import SKOPS_TRUSTED_TYPES

    mlflow_uri.bind(mlflow_settings)
    mlflow.set_experiment(mlflow_settings.experiment)
    signature = infer_signature(features.astype("float64"), estimator.predict(features))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            signature=signature,
            registered_model_name=mlflow_settings.model_name,
            serialization_format=serialization,
            skops_trusted_types=SKOPS_TRUSTED_TYPES if serialization == "skops" else None,
            # Explicit requirements skip MLflow's inference, which re-imports the model in a subprocess.
            pip_requirements=["scikit-learn", "numpy"],
        )
    version = str(info.registered_model_version)
    if promote:
        set_production(mlflow_settings, version)
    return version


def set_production(mlflow_settings: MlflowSettings, version: str) -> None:
    """Point the production alias at ``version`` directly (no gate tags, no production history), as
    moving the alias in the MLflow UI does."""
    set_alias(mlflow_settings, mlflow_settings.production_alias, version)


def set_alias(mlflow_settings: MlflowSettings, alias: str, version: str | None) -> None:
    """Point ``alias`` at ``version``, or remove it (None), as the MLflow UI's aliases editor does."""
    with RegistryClient(mlflow_settings) as client:
        if version is None:
            client.delete_alias(mlflow_settings.model_name, alias)
        else:
            client.set_alias(mlflow_settings.model_name, alias, version)


class FailsWhenScoring:
    """A fitted model that passes the scorer's load check and raises on real rows.

    The check scores two sample rows (all zeros, all missing); anything else raises, as a challenger
    with a bug its load check does not reach would. With ``above``, only matrices holding a value
    above it raise (a bug that only some rows reach). ``error`` is what it raises: ``ValueError`` is
    how scikit-learn refuses rows for their values.
    """

    def __init__(
        self, fitted: Any, above: float | None = None, error: type[Exception] = RuntimeError
    ) -> None:
        self.fitted = fitted
        self.classes_ = fitted.classes_
        self.above = above
        self.error = error

    def predict(self, matrix: Any) -> Any:
        return self.fitted.predict(matrix)

    def predict_proba(self, matrix: Any) -> Any:
        values = np.asarray(matrix, dtype=np.float64)
        if self.above is not None:
            fails = bool((values > self.above).any())
        else:
            fails = not (len(values) == 2 and (values[0] == 0).all() and np.isnan(values[1]).all())
        if fails:
            raise self.error("model bug: cannot score these rows")
        return self.fitted.predict_proba(matrix)


@contextmanager
def running(settings: ScorerSettings) -> Iterator[Scorer]:
    """A scorer on a thread of this process; stopped, and checked to have stopped cleanly, on exit."""
    scorer = Scorer(settings)
    with on_thread(scorer.run, "scorer"):
        yield scorer
