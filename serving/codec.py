"""Decode ``measurements`` messages into one feature matrix; encode predictions for Kafka and InfluxDB.

This is the hot path. A binary measurement (``fireman.common.events``) costs a header check: its
values are collected as bytes and become the matrix in one ``np.frombuffer`` per batch, with one
vectorised check for values not finite in float32. A JSON one costs an ``orjson.loads``, a few type
checks and a list of its values. Rows are built in ``FEATURE_NAMES`` order, whatever the format, and
the model's columns picked out at the end when its order differs. Anything that is not a well-formed
event is reported as poison with the reason, never raised.

A challenger scored in shadow reuses the production matrix through a ``ColumnMap`` (its own feature
order, picked from production's columns) and gets InfluxDB lines only (``shadow_lines``), never Kafka
messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from fireman.common.events import (
    FLOAT64,
    WIDTH,
    BadMessage,
    binary_parts,
    decode_event,
    is_binary,
    out_of_range_rows,
)
from fireman.common.events import encode_predictions as prediction_messages
from fireman.common.influx import format_field_value
from fireman.common.measurements import PREDICTIONS, ROLE_PRODUCTION, ROLE_SHADOW
from fireman.common.model import Lineage
from fireman.common.pointtime import point_time_ns
from fireman.common.schema import FEATURE_NAMES

# Rendered by hand below, one f-string per prediction on the scorer's hot path: ids that passed the
# contract's IDENTIFIER need no escaping, nor do the roles.
MEASUREMENT = PREDICTIONS.name


@dataclass
class DecodedBatch:
    event_ids: list[str] = field(default_factory=list)
    sensor_ids: list[str] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    # float64, one row per event in the decoder's feature order, NaN for missing features
    matrix: np.ndarray = field(default_factory=lambda: np.empty((0, WIDTH)))
    # (index of the message in the polled batch, reason)
    poison: list[tuple[int, str]] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)  # each event's index in the polled batch

    def __len__(self) -> int:
        return len(self.event_ids)


def decode_batch(values: Sequence[bytes | None], feature_order: Sequence[str]) -> DecodedBatch:
    """The events of a polled batch in order, their matrix in ``feature_order``, and the poison."""
    batch = DecodedBatch()
    blocks: list[bytes] = []  # the values of binary events, 8n bytes each
    json_rows: list[list[float | int | None]] = []
    json_at: list[int] = []  # which events (positions in the batch) are JSON
    for index, value in enumerate(values):
        try:
            if value is not None and is_binary(value):
                event_id, sensor_id, timestamp, block = binary_parts(value)
                blocks.append(block)
            else:
                event = decode_event(value)
                event_id, sensor_id, timestamp = event.event_id, event.sensor_id, event.timestamp
                json_at.append(len(batch))
                json_rows.append(list(map(event.features.get, FEATURE_NAMES)))
        except BadMessage as exc:
            batch.poison.append((index, str(exc)))
            continue
        batch.event_ids.append(event_id)
        batch.sensor_ids.append(sensor_id)
        batch.timestamps.append(timestamp)
        batch.indices.append(index)
    batch.matrix = _matrix(blocks, json_rows, json_at, len(batch))
    if blocks:  # the JSON rows were checked by decode_event; binary ones are checked here, at once
        out_of_range = out_of_range_rows(batch.matrix)
        if out_of_range:
            drop_rows(batch, out_of_range)
    batch.matrix = model_columns(tuple(feature_order)).apply(batch.matrix)
    return batch


def _matrix(
    blocks: list[bytes], json_rows: list[list[float | int | None]], json_at: list[int], events: int
) -> np.ndarray:
    """Every event's row in FEATURE_NAMES order: the binary ones read straight from their bytes."""
    # bytearray: one copy, and the matrix is writable, as a model may expect.
    binary = np.frombuffer(bytearray().join(blocks), dtype=FLOAT64).reshape(-1, WIDTH)
    if not json_rows:
        return binary
    rows = np.array(json_rows, dtype=np.float64)
    if not blocks:
        return rows
    matrix = np.empty((events, WIDTH))
    is_json = np.zeros(events, dtype=bool)
    is_json[json_at] = True
    matrix[is_json] = rows
    matrix[~is_json] = binary
    return matrix


def drop_rows(batch: DecodedBatch, rows: dict[int, str]) -> None:
    """Take ``rows`` (positions among the events) out of the batch: they become poison with their reasons."""
    keep = [row for row in range(len(batch)) if row not in rows]
    batch.event_ids = [batch.event_ids[row] for row in keep]
    batch.sensor_ids = [batch.sensor_ids[row] for row in keep]
    batch.timestamps = [batch.timestamps[row] for row in keep]
    batch.poison = sorted(batch.poison + [(batch.indices[row], reason) for row, reason in rows.items()])
    batch.indices = [batch.indices[row] for row in keep]
    batch.matrix = batch.matrix[keep]


@lru_cache(maxsize=16)
def model_columns(feature_order: tuple[str, ...]) -> ColumnMap:
    """Where a model's features sit in a matrix built in ``FEATURE_NAMES`` order."""
    columns = column_map(FEATURE_NAMES, feature_order)
    if columns is None:
        unknown = next(name for name in feature_order if name not in FEATURE_NAMES)
        raise ValueError(f"feature {unknown!r} is not an event feature; events carry Cont_1..Cont_57")
    return columns


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
