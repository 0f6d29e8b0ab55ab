"""What the benchmarks share: Spambase events, producing them, a production model, fresh topics, CPU time.

The model is trained by the training code (``fireman.training.workflow``), so a benchmark scores with the
pipeline users serve (``fireman.training.pipeline.build_pipeline`` at the training settings) and the monitor
finds the drift reference that training logs with every version. The tests use these too.
"""

from __future__ import annotations

import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from fireman.common.dataset import load_spambase, mask_completely_at_random
from fireman.common.events import Features, WireEvent
from fireman.common.schema import FEATURE_NAMES, now_ms
from fireman.common.settings import DatasetSettings, InfluxSettings, KafkaSettings, MlflowSettings


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


def bench_topics(base: KafkaSettings, name: str) -> KafkaSettings:
    """``base`` with topics of its own: ``name`` with ``{}`` as measurements, labels, predictions or dlq."""
    kinds = ("measurements", "labels", "predictions", "dlq")
    return base.model_copy(update={f"topic_{kind}": name.format(kind) for kind in kinds})


def cpu_s(processes: Sequence[psutil.Process]) -> float:
    """User and system CPU seconds of ``processes`` so far."""
    return sum(sum(process.cpu_times()[:2]) for process in processes)


@contextmanager
def in_thread(
    run: Callable[[threading.Event], object], join_s: float, name: str | None = None
) -> Iterator[threading.Thread]:
    """``run(stop)`` in a daemon thread for the block; then ``stop`` is set and the thread joined."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(stop,), name=name, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(join_s)


def drop_databases(databases: Sequence[InfluxSettings]) -> None:
    """Drop a bench's InfluxDB databases (one that does not exist is no error), over one connection."""
    from fireman.common.influx import InfluxClient

    if not databases:
        return
    with InfluxClient(databases[0]) as client:
        for database in databases:
            client.drop_database(database.database)


def produce_events(kafka: KafkaSettings, events: Sequence[WireEvent], extra: Sequence[bytes] = ()) -> None:
    """Events (and any raw ``extra`` values) to ``measurements``, keyed by sensor id, acknowledged.

    In ``kafka.measurement_format``, as the collector writes them.
    """
    from fireman.common.kafka_io import AckProducer

    producer = AckProducer(kafka)
    fmt = kafka.measurement_format
    try:
        for event in events:
            producer.produce(kafka.topic_measurements, event.encode(fmt), key=event.sensor_id.encode())
        for value in extra:
            producer.produce(kafka.topic_measurements, value, key=b"poison")
        producer.flush()
    finally:
        producer.close()


def train_production(
    mlflow: MlflowSettings,
    frame: pd.DataFrame | None = None,
    dataset: DatasetSettings | None = None,
    **params: Any,
) -> str:
    """Train a version of ``mlflow.model_name`` and make it production, past the gate; its number.

    On Spambase (``dataset``, or the default) unless a labelled ``frame`` is given. ``params``
    override the training settings' pipeline parameters (``n_estimators=...``).
    """
    from fireman.training.settings import TrainingSettings
    from fireman.training.workflow import evaluate_and_promote, run_training, train_from_file

    settings = TrainingSettings(mlflow=mlflow, dataset=dataset or DatasetSettings())
    if frame is None:
        return run_training(settings, source="file", promote="force", params=params or None).version
    from fireman.training.sources import DataInfo, Dataset, write_parquet

    # The retraining DAG's path: an extracted file, trained and registered, then the gate, forced.
    with tempfile.TemporaryDirectory(prefix="fireman-bench-") as tmp:
        path = write_parquet(Dataset(frame, DataInfo(source="bench")), Path(tmp) / "train.parquet")
        version = train_from_file(settings, path, params or None).version
    evaluate_and_promote(settings, version, promote="force")
    return version
