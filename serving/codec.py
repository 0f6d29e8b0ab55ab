"""Decode ``measurements`` messages into one feature matrix; encode predictions for Kafka and InfluxDB.

This is the hot path: per event there is one ``orjson.loads``, a few type checks and one list
comprehension in the model's feature order; the matrix is built by numpy in one call. Anything that
is not a well-formed event is reported as poison with the reason, never raised.

A challenger scored in shadow reuses the production matrix through a ``ColumnMap`` (its own feature
order, picked from production's columns) and gets InfluxDB lines only (``shadow_lines``), never Kafka
messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fireman.common.events import BadMessage, decode_event
from fireman.common.events import encode_predictions as prediction_messages
from fireman.common.influx import format_field_value
from fireman.common.measurements import PREDICTIONS, ROLE_PRODUCTION, ROLE_SHADOW
from fireman.common.model import Lineage
from fireman.common.pointtime import NS_PER_MS, point_time_ns

# Rendered by hand below, one f-string per prediction on the scorer's hot path: ids that passed the
# contract's IDENTIFIER need no escaping, nor do the roles.
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


@dataclass(frozen=True)
class ColumnMap:
    """Where each of a model's features sits in a matrix built in another feature order."""

    index: np.ndarray
    identity: bool

    def apply(self, matrix: np.ndarray) -> np.ndarray:
        """The model's matrix: ``matrix`` itself when the orders agree, else its columns picked out."""
        return matrix if self.identity else matrix[:, self.index]


def column_map(have: Sequence[str], want: Sequence[str]) -> ColumnMap | None:
    """How to build a matrix in ``want``'s order from one in ``have``'s; None if a wanted one is missing."""
    position = {name: i for i, name in enumerate(have)}
    if any(name not in position for name in want):
        return None
    index = np.fromiter((position[name] for name in want), dtype=np.intp, count=len(want))
    return ColumnMap(index, identity=tuple(want) == tuple(have))


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
    texts = [repr(float(p)) for p in probabilities]  # written once, for the message and the line
    messages = prediction_messages(
        zip(batch.event_ids, batch.sensor_ids, batch.timestamps, strict=True),
        predictions,
        texts,
        (lineage.model_name, lineage.model_version, lineage.run_id),
        scored_ms,
    )
    latencies = [scored_ms - timestamp for timestamp in batch.timestamps]
    lines = _lines(ROLE_PRODUCTION, batch, predictions, texts, latencies, lineage.model_version)
    return messages, lines, latencies


def shadow_lines(
    batch: DecodedBatch,
    predictions: Sequence[int],
    probabilities: Sequence[float],
    model_version: str,
    scored_ms: int,
) -> list[str]:
    """InfluxDB lines of a challenger's predictions (tag ``role=shadow``), one per event; no Kafka.

    Same point time as the event's production line but another series (the role tag), so both are
    kept, and a replay overwrites each.
    """
    latencies = [scored_ms - timestamp for timestamp in batch.timestamps]
    texts = [repr(float(p)) for p in probabilities]
    return _lines(ROLE_SHADOW, batch, predictions, texts, latencies, model_version)


def _lines(
    role: str,
    batch: DecodedBatch,
    predictions: Sequence[int],
    probabilities: Sequence[str],
    latencies: Sequence[int],
    model_version: str,
) -> list[str]:
    """The ``predictions`` lines of a batch: the one place their format is written (tags sorted).

    ``probabilities`` are already written out (``repr``), as the Kafka messages carry them.
    """
    version_field = format_field_value(model_version)
    return [
        f"{MEASUREMENT},role={role},sensor_id={sensor_id} "
        f'event_id="{event_id}",prediction={prediction}i,'
        f"probability={probability},latency_ms={latency}i,model_version={version_field} "
        f"{point_time_ns(timestamp, event_id)}"
        for event_id, sensor_id, timestamp, prediction, probability, latency in zip(
            batch.event_ids,
            batch.sensor_ids,
            batch.timestamps,
            predictions,
            probabilities,
            latencies,
            strict=True,
        )
    ]


__all__ = [
    "MEASUREMENT",
    "NS_PER_MS",
    "ColumnMap",
    "DecodedBatch",
    "Lineage",
    "column_map",
    "decode_batch",
    "encode_predictions",
    "shadow_lines",
]
