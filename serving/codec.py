"""Decode ``measurements`` messages into one feature matrix; encode predictions for Kafka and InfluxDB.

This is the hot path: per event there is one ``orjson.loads``, a few type checks and one list
comprehension in the model's feature order; the matrix is built by numpy in one call. Anything that
is not a well-formed event is reported as poison with the reason, never raised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from fireman_common.influx import format_field_value
from fireman_common.measurements import PREDICTIONS
from fireman_common.pointtime import NS_PER_MS, point_time_ns
from fireman_common.schema import MAX_EPOCH_MS, MIN_EPOCH_MS

# The collector's Identifier rule; ids that pass it need no escaping in line protocol or JSON.
IDENTIFIER = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_VALUE_TYPES = frozenset({float, int, type(None)})
# Rendered inline below (one f-string per prediction is the scorer's hot path).
MEASUREMENT = PREDICTIONS.name


class PoisonMessage(ValueError):
    """A message that is not an event; its text names the offending field."""


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


def decode_event(value: bytes | None, feature_order: Sequence[str]) -> tuple[str, str, int, list[Any]]:
    if value is None:
        raise PoisonMessage("empty message (null value)")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"invalid JSON: {exc}") from None
    if type(event) is not dict:
        raise PoisonMessage(f"expected a JSON object, got {type(event).__name__}")
    event_id = event.get("event_id")
    sensor_id = event.get("sensor_id")
    timestamp = event.get("timestamp")
    features = event.get("features")
    if type(event_id) is not str or not IDENTIFIER.fullmatch(event_id):
        raise PoisonMessage(f"event_id: expected an identifier string, got {event_id!r:.80}")
    if type(sensor_id) is not str or not IDENTIFIER.fullmatch(sensor_id):
        raise PoisonMessage(f"sensor_id: expected an identifier string, got {sensor_id!r:.80}")
    if type(timestamp) is not int or not MIN_EPOCH_MS <= timestamp <= MAX_EPOCH_MS:
        raise PoisonMessage(f"timestamp: expected epoch milliseconds, got {timestamp!r:.80}")
    if type(features) is not dict:
        raise PoisonMessage(f"features: expected an object, got {type(features).__name__}")
    if not set(map(type, features.values())) <= _VALUE_TYPES:
        bad = next(k for k, v in features.items() if type(v) not in _VALUE_TYPES)
        raise PoisonMessage(f"features.{bad:.80}: expected a number or null, got {features[bad]!r:.80}")
    return event_id, sensor_id, timestamp, list(map(features.get, feature_order))


def decode_batch(values: Sequence[bytes | None], feature_order: Sequence[str]) -> DecodedBatch:
    batch = DecodedBatch()
    for index, value in enumerate(values):
        try:
            event_id, sensor_id, timestamp, row = decode_event(value, feature_order)
        except PoisonMessage as exc:
            batch.poison.append((index, str(exc)))
            continue
        batch.event_ids.append(event_id)
        batch.sensor_ids.append(sensor_id)
        batch.timestamps.append(timestamp)
        batch.rows.append(row)
    return batch


@dataclass(frozen=True)
class Lineage:
    model_name: str
    model_version: str
    run_id: str


def encode_predictions(
    batch: DecodedBatch,
    predictions: Sequence[int],
    probabilities: Sequence[float],
    lineage: Lineage,
    scored_ms: int,
) -> tuple[list[bytes], list[str], list[int]]:
    """Kafka values, InfluxDB lines and latencies (ms), one of each per event.

    InfluxDB: tag ``sensor_id`` only; ``model_version`` is a field, so that an event replayed after a
    model switch overwrites its point instead of adding a second one in another series.
    """
    messages: list[bytes] = []
    lines: list[str] = []
    latencies: list[int] = []
    name, version, run_id = lineage.model_name, lineage.model_version, lineage.run_id
    version_field = format_field_value(version)
    for event_id, sensor_id, timestamp, prediction, probability in zip(
        batch.event_ids, batch.sensor_ids, batch.timestamps, predictions, probabilities, strict=True
    ):
        latency = scored_ms - timestamp
        latencies.append(latency)
        messages.append(
            orjson.dumps(
                {
                    "event_id": event_id,
                    "sensor_id": sensor_id,
                    "timestamp": timestamp,
                    "prediction": prediction,
                    "probability": probability,
                    "model_name": name,
                    "model_version": version,
                    "run_id": run_id,
                    "scored_at": scored_ms,
                    "latency_ms": latency,
                }
            )
        )
        lines.append(
            f'{MEASUREMENT},sensor_id={sensor_id} event_id="{event_id}",prediction={prediction}i,'
            f"probability={probability!r},latency_ms={latency}i,model_version={version_field} "
            f"{point_time_ns(timestamp, event_id)}"
        )
    return messages, lines, latencies


__all__ = [
    "MEASUREMENT",
    "NS_PER_MS",
    "DecodedBatch",
    "Lineage",
    "PoisonMessage",
    "decode_batch",
    "decode_event",
    "encode_predictions",
]
