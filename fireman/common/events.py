"""The wire contract: the JSON on Kafka's ``measurements``, ``labels`` and ``predictions``, one set of rules.

The collector writes events and labels (``encode_event``, ``encode_label``), the scorer writes
predictions (``encode_predictions``), and every reader decodes with the functions below: the sink,
the scorer and the monitor. A message that breaks a rule is a :class:`BadMessage` whose text names
the offending field; readers send it to the dead-letter topic (sink, scorer) or skip it (monitor).

The rules are the collector's: ids match ``IDENTIFIER``, timestamps are epoch milliseconds in
1970..2100, feature names are ``Cont_1``..``Cont_57``, values are finite numbers or null (JSON cannot
carry a non-finite number, and booleans are not numbers), labels and predictions are 0 or 1. Fields
beyond the contract are ignored, so a newer writer's additions do not poison older readers.

Decoding is a plain ``orjson.loads`` and a few type checks, not pydantic: the scorer decodes every
event on its hot path, and the checks cost about a microsecond per event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from fireman.common.schema import FEATURE_NAMES, MAX_EPOCH_MS, MIN_EPOCH_MS

# Ids that match need no escaping in line protocol or JSON; the collector's ``Identifier`` has the
# same pattern.
IDENTIFIER = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
KNOWN_FEATURES = frozenset(FEATURE_NAMES)
_NUMBER_OR_NULL = frozenset({float, int, type(None)})

Features = dict[str, float | int | None]


class BadMessage(ValueError):
    """A message outside the contract; its text names the offending field."""


@dataclass(slots=True)
class WireEvent:
    event_id: str
    sensor_id: str
    timestamp: int  # epoch ms
    features: Features  # known names only; absent or null means missing

    def to_json(self) -> bytes:
        return encode_event(self.event_id, self.sensor_id, self.timestamp, self.features)


@dataclass(slots=True)
class WireLabel:
    event_id: str
    sensor_id: str
    timestamp: int
    label: int


@dataclass(slots=True)
class WirePrediction:
    event_id: str
    sensor_id: str
    timestamp: int
    prediction: int
    probability: float
    model_name: str
    model_version: str


def load_object(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise BadMessage("empty message (null value)")
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BadMessage(f"invalid JSON: {exc}") from None
    if type(message) is not dict:
        raise BadMessage(f"expected a JSON object, got {type(message).__name__}")
    return message


def _identifier(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if type(value) is not str or not IDENTIFIER.fullmatch(value):
        raise BadMessage(f"{key}: expected an identifier string, got {value!r:.80}")
    return value


def _timestamp(message: dict[str, Any]) -> int:
    value = message.get("timestamp")
    if type(value) is not int or not MIN_EPOCH_MS <= value <= MAX_EPOCH_MS:
        raise BadMessage(f"timestamp: expected epoch milliseconds, got {value!r:.80}")
    return value


def _zero_or_one(message: dict[str, Any], key: str) -> int:
    value = message.get(key)
    if type(value) is not int or value not in (0, 1):
        raise BadMessage(f"{key}: expected 0 or 1, got {value!r:.80}")
    return value


def event_from(message: dict[str, Any]) -> WireEvent:
    features = message.get("features")
    if type(features) is not dict:
        raise BadMessage(f"features: expected an object, got {type(features).__name__}")
    if not features.keys() <= KNOWN_FEATURES:
        unknown = next(name for name in features if name not in KNOWN_FEATURES)
        raise BadMessage(f"features.{unknown:.80}: unknown feature name; expected Cont_1..Cont_57")
    if not set(map(type, features.values())) <= _NUMBER_OR_NULL:
        bad = next(k for k, v in features.items() if type(v) not in _NUMBER_OR_NULL)
        raise BadMessage(f"features.{bad}: expected a number or null, got {features[bad]!r:.80}")
    return WireEvent(
        _identifier(message, "event_id"), _identifier(message, "sensor_id"), _timestamp(message), features
    )


def decode_event(value: bytes | None) -> WireEvent:
    return event_from(load_object(value))


def decode_label(value: bytes | None) -> WireLabel:
    message = load_object(value)
    label = _zero_or_one(message, "label")  # checked first: the field that makes it a label
    return WireLabel(
        _identifier(message, "event_id"), _identifier(message, "sensor_id"), _timestamp(message), label
    )


def decode_prediction(value: bytes | None) -> WirePrediction:
    message = load_object(value)
    probability: Any = message.get("probability")
    if type(probability) not in (float, int) or not 0.0 <= probability <= 1.0:
        raise BadMessage(f"probability: expected a number in [0, 1], got {probability!r:.80}")
    names = []
    for key in ("model_name", "model_version"):
        name = message.get(key)
        if type(name) is not str or not name:
            raise BadMessage(f"{key}: expected a non-empty string, got {name!r:.80}")
        names.append(name)
    return WirePrediction(
        _identifier(message, "event_id"),
        _identifier(message, "sensor_id"),
        _timestamp(message),
        _zero_or_one(message, "prediction"),
        float(probability),
        names[0],
        names[1],
    )


def encode_event(event_id: str, sensor_id: str, timestamp: int, features: dict[str, Any]) -> bytes:
    """Present features only: a missing feature is absent on the wire."""
    # Most events have no nulls; the C-level scan is far cheaper than rebuilding every dict.
    present = (
        {name: value for name, value in features.items() if value is not None}
        if None in features.values()
        else features
    )
    return orjson.dumps(
        {"event_id": event_id, "sensor_id": sensor_id, "timestamp": timestamp, "features": present}
    )


def encode_label(event_id: str, sensor_id: str, timestamp: int, label: int) -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "label": label, "sensor_id": sensor_id, "timestamp": timestamp}
    )


def encode_predictions(
    events: Iterable[tuple[str, str, int]],
    predictions: Iterable[int],
    probabilities: Iterable[str],
    lineage: tuple[str, str, str],
    scored_ms: int,
) -> list[bytes]:
    """The ``predictions`` messages of a batch, in order.

    ``events`` are (event_id, sensor_id, timestamp); ``probabilities`` are P(class 1) already written
    as JSON numbers (``repr`` of a float in [0, 1]), so the caller can reuse the text in its
    InfluxDB lines; ``lineage`` is (model_name, model_version, run_id). The scorer writes every
    prediction through here: the JSON is filled into a template instead of serialising one object
    per event, which halves the cost. The ids passed the contract's ``IDENTIFIER`` and need no
    escaping; the lineage strings are escaped once per batch. The bytes are the same object
    ``orjson.dumps`` writes (a test holds them equal).
    """
    name, version, run_id = (orjson.dumps(text).decode() for text in lineage)
    lineage_json = f'"model_name":{name},"model_version":{version},"run_id":{run_id},"scored_at":{scored_ms}'
    return [
        (
            f'{{"event_id":"{event_id}","sensor_id":"{sensor_id}","timestamp":{timestamp},'
            f'"prediction":{prediction},"probability":{probability},{lineage_json},'
            f'"latency_ms":{scored_ms - timestamp}}}'
        ).encode()
        for (event_id, sensor_id, timestamp), prediction, probability in zip(
            events, predictions, probabilities, strict=True
        )
    ]
