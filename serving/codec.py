"""Decode ``measurements`` messages into one feature matrix; encode predictions for Kafka and InfluxDB.

This is the hot path: per event there is one ``orjson.loads``, a few type checks and one list
comprehension in the model's feature order; the matrix is built by numpy in one call. Anything that
is not a well-formed event is reported as poison with the reason, never raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fireman.common.events import BadMessage, decode_event, encode_prediction
from fireman.common.influx import format_field_value
from fireman.common.measurements import PREDICTIONS, ROLE_PRODUCTION
from fireman.common.model import Lineage
from fireman.common.pointtime import NS_PER_MS, point_time_ns

# Rendered inline below, one f-string per prediction on the scorer's hot path: ids that passed the
# contract's IDENTIFIER need no escaping.
MEASUREMENT = PREDICTIONS.name


@dataclass
class DecodedBatch:
    event_ids: list[str] = field(default_factory=list)
    sensor_ids: list[str] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    # (index of the message in the polled batch, reason)
    poison: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.event_ids)

    def matrix(self, width: int) -> np.ndarray:
        """float64, one row per event, null or absent features as NaN."""
        if not self.rows:
            return np.empty((0, width), dtype=np.float64)
        return np.array(self.rows, dtype=np.float64)


def decode_batch(values: Sequence[bytes | None], feature_order: Sequence[str]) -> DecodedBatch:
    batch = DecodedBatch()
    for index, value in enumerate(values):
        try:
            event = decode_event(value)
        except BadMessage as exc:
            batch.poison.append((index, str(exc)))
            continue
        batch.event_ids.append(event.event_id)
        batch.sensor_ids.append(event.sensor_id)
        batch.timestamps.append(event.timestamp)
        batch.rows.append(list(map(event.features.get, feature_order)))
    return batch


def encode_predictions(
    batch: DecodedBatch,
    predictions: Sequence[int],
    probabilities: Sequence[float],
    lineage: Lineage,
    scored_ms: int,
) -> tuple[list[bytes], list[str], list[int]]:
    """Kafka values, InfluxDB lines and latencies (ms), one of each per event.

    InfluxDB: tags ``role`` (production) and ``sensor_id``; ``model_version`` is a field, so that an
    event replayed after a model switch overwrites its point instead of adding a second one in another
    series.
    """
    messages: list[bytes] = []
    lines: list[str] = []
    latencies: list[int] = []
    lineage_fields = (lineage.model_name, lineage.model_version, lineage.run_id)
    version_field = format_field_value(lineage.model_version)
    for event_id, sensor_id, timestamp, prediction, probability in zip(
        batch.event_ids, batch.sensor_ids, batch.timestamps, predictions, probabilities, strict=True
    ):
        latency = scored_ms - timestamp
        latencies.append(latency)
        messages.append(
            encode_prediction(
                (event_id, sensor_id, timestamp), prediction, probability, lineage_fields, scored_ms
            )
        )
        lines.append(
            f"{MEASUREMENT},role={ROLE_PRODUCTION},sensor_id={sensor_id} "
            f'event_id="{event_id}",prediction={prediction}i,'
            f"probability={probability!r},latency_ms={latency}i,model_version={version_field} "
            f"{point_time_ns(timestamp, event_id)}"
        )
    return messages, lines, latencies


__all__ = [
    "MEASUREMENT",
    "NS_PER_MS",
    "DecodedBatch",
    "Lineage",
    "decode_batch",
    "encode_predictions",
]
