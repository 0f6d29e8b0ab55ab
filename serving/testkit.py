"""Helpers shared by the scorer's tests and its benchmark: Spambase events, registered models, reading back.

Nothing here is used by the scorer itself.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from fireman_common import mlflow_uri
from fireman_common.dataset import load_spambase, mask_completely_at_random
from fireman_common.events import Features, WireEvent
from fireman_common.model_registry import RegistryClient
from fireman_common.schema import FEATURE_NAMES, LABEL_COLUMN, now_ms
from fireman_common.settings import DatasetSettings, KafkaSettings, MlflowSettings
from serving.scorer import Scorer
from serving.settings import ScorerSettings


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
    return True


def spambase_rows(
    dataset: DatasetSettings, count: int, missing_rate: float = 0.1, seed: int = 7
) -> pd.DataFrame:
    """``count`` Spambase rows (cycled), with values missing completely at random."""
    frame = mask_completely_at_random(load_spambase(dataset), missing_rate, seed)
    index = np.arange(count) % len(frame)
    return frame.iloc[index].reset_index(drop=True)


def make_events(
    rows: pd.DataFrame, prefix: str | None = None, sensors: int = 8, start_ms: int | None = None
) -> list[WireEvent]:
    """One event per row; several events share a sensor and a millisecond, as real traffic does."""
    prefix = prefix or uuid.uuid4().hex[:8]
    start = now_ms() if start_ms is None else start_ms
    matrix = rows[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    events = []
    for i, values in enumerate(matrix):
        features: Features = {
            name: float(v) for name, v in zip(FEATURE_NAMES, values, strict=True) if not np.isnan(v)
        }
        events.append(
            WireEvent(
                event_id=f"{prefix}-{i}",
                sensor_id=f"sensor-{i % sensors}",
                timestamp=start + i // 4,
                features=features,
            )
        )
    return events


def produce_events(kafka: KafkaSettings, events: Sequence[WireEvent], extra: Sequence[bytes] = ()) -> None:
    """Events (and any raw ``extra`` values) to ``measurements``, keyed by sensor id, acknowledged."""
    from fireman_common.kafka_io import AckProducer

    producer = AckProducer(kafka)
    try:
        for event in events:
            producer.produce(kafka.topic_measurements, event.to_json(), key=event.sensor_id.encode())
        for value in extra:
            producer.produce(kafka.topic_measurements, value, key=b"poison")
        producer.flush()
    finally:
        producer.close()


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


def fit_pipeline(dataset: DatasetSettings, n_estimators: int = 30, seed: int = 0) -> Any:
    """A SimpleImputer + RandomForest pipeline like the training code's, fitted on Spambase."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    frame = load_spambase(dataset)
    pipeline = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("model", RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1)),
        ]
    )
    pipeline.fit(frame[list(FEATURE_NAMES)], frame[LABEL_COLUMN])
    return pipeline


def register_model(
    mlflow_settings: MlflowSettings, estimator: Any, features: pd.DataFrame, promote: bool = True
) -> str:
    """Log ``estimator`` as a new version (signature from ``features``); optionally move the alias to it."""
    import mlflow
    from mlflow.models import infer_signature

    mlflow_uri.bind(mlflow_settings)
    mlflow.set_experiment(mlflow_settings.experiment)
    signature = infer_signature(features.astype("float64"), estimator.predict(features))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            signature=signature,
            registered_model_name=mlflow_settings.model_name,
            skops_trusted_types=["numpy.dtype", "sklearn.tree._tree.Tree"],
            # Explicit requirements skip MLflow's inference, which re-imports the model in a subprocess.
            pip_requirements=["scikit-learn", "numpy"],
        )
    version = str(info.registered_model_version)
    if promote:
        set_production(mlflow_settings, version)
    return version


def set_production(mlflow_settings: MlflowSettings, version: str) -> None:

    with RegistryClient(mlflow_settings) as client:
        client.set_alias(mlflow_settings.model_name, mlflow_settings.production_alias, version)


@contextmanager
def running(settings: ScorerSettings) -> Iterator[Scorer]:
    """A scorer on a thread of this process; stopped, and checked to have stopped cleanly, on exit."""
    scorer = Scorer(settings)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            scorer.run(stop)
        except BaseException as exc:
            errors.append(exc)
            raise

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield scorer
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive(), "the scorer did not stop"
    assert not errors, errors
