"""The wire contract: the messages on Kafka's ``measurements``, ``labels`` and ``predictions``.

The collector writes events and labels (``encode_event``, ``encode_label``), the scorer writes
predictions (``encode_predictions``), and every reader decodes with the functions below: the sink,
the scorer and the monitor. A message that breaks a rule is a :class:`BadMessage` whose text names
the offending field; readers send it to the dead-letter topic (sink, scorer) or skip it (monitor).

The rules are the collector's: ids match ``IDENTIFIER``, timestamps are epoch milliseconds in
1970..2100, feature names are ``Cont_1``..``Cont_57``, values are numbers finite in float32 or missing
(the models score in float32, where a larger value is infinity; booleans are not numbers), labels and
predictions are 0 or 1.
Fields beyond the JSON contract are ignored, so a newer writer's additions do not poison older readers.

Labels and predictions are JSON objects. A measurement is in one of two formats (``MeasurementFormat``),
and every reader accepts both on the same topic, told apart by the first byte:

- ``json``: an object ``{"event_id", "sensor_id", "timestamp", "features": {"Cont_n": value}}``,
  a missing feature absent or null;
- ``binary`` (the writers' default): positional and little-endian, ``b"\\x00FM"`` and a version byte
  (1), int64 timestamp, uint16 feature count (57), uint8 lengths of the two ids, 57 float64 values in
  ``FEATURE_NAMES`` order (NaN = missing), then the ASCII ids. ``docs/architecture.md`` ("The
  measurements wire format") has the table. A leading NUL never starts JSON, and the version is in
  the value rather than a Kafka header so that copies which keep only the value (the DLQ, console
  consumers) stay readable.

Decoding JSON is a plain ``orjson.loads`` and a few type checks, not pydantic: the scorer decodes
every event on its hot path, and the checks cost about a microsecond per event. The binary format
costs a header check per event, and its values go into the scorer's matrix with one ``np.frombuffer``
per batch (``binary_parts``, ``out_of_range_rows``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from fireman.common.schema import FEATURE_NAMES, FLOAT32_MAX, MAX_EPOCH_MS, MIN_EPOCH_MS

# Ids that match need no escaping in line protocol or JSON; the collector's ``Identifier`` has the
# same pattern.
IDENTIFIER = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
KNOWN_FEATURES = frozenset(FEATURE_NAMES)
_NUMBER_OR_NULL = frozenset({float, int, type(None)})

Features = dict[str, float | int | None]
MeasurementFormat = Literal["binary", "json"]

# The binary measurement (docs/architecture.md, "The measurements wire format"): a 16-byte header,
# the values, the ids. Fixed offsets, so a reader needs no parse to find any field.
BINARY_MAGIC = b"\x00FM"
BINARY_VERSION = 1
BINARY_VERSIONS = (BINARY_VERSION,)  # the versions this reader understands
WIDTH = len(FEATURE_NAMES)
_HEADER = struct.Struct("<4sqHBB")  # magic + version, timestamp, n, len(event_id), len(sensor_id)
_VALUES = struct.Struct(f"<{WIDTH}d")
VALUES_AT = _HEADER.size  # 16
IDS_AT = VALUES_AT + _VALUES.size  # 472: where event_id starts
_PREFIX = BINARY_MAGIC + bytes([BINARY_VERSION])
# Where each header field ends, to name the one a truncated message cuts.
_HEADER_FIELDS = (
    (3, "magic"),
    (4, "version"),
    (12, "timestamp"),
    (14, "n (feature count)"),
    (15, "event_id length"),
    (16, "sensor_id length"),
)
FLOAT64 = np.dtype("<f8")
_NAN = float("nan")


class BadMessage(ValueError):
    """A message outside the contract; its text names the offending field."""


@dataclass(slots=True)
class WireEvent:
    event_id: str
    sensor_id: str
    timestamp: int  # epoch ms
    features: Features  # known names only; absent or null means missing

    def to_json(self) -> bytes:
        return self.encode("json")

    def encode(self, fmt: MeasurementFormat) -> bytes:
        return encode_event(self.event_id, self.sensor_id, self.timestamp, self.features, fmt)


@dataclass(slots=True)
class WireLabel:
    event_id: str
    sensor_id: str
    timestamp: int
    label: int


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
    for name, v in features.items():
        if v is not None and not -FLOAT32_MAX <= v <= FLOAT32_MAX:
            raise BadMessage(_out_of_range_reason(name, v))
    return WireEvent(
        _identifier(message, "event_id"), _identifier(message, "sensor_id"), _timestamp(message), features
    )


def is_binary(value: bytes) -> bool:
    """Whether a measurement is in the binary format: it starts with a NUL, which JSON never does."""
    return value[:1] == b"\x00"


def decode_event(value: bytes | None) -> WireEvent:
    """A measurement in either format; the features of a binary one are those present (not NaN)."""
    if value is None or not is_binary(value):
        return event_from(load_object(value))
    event_id, sensor_id, timestamp, block = binary_parts(value)
    values = _VALUES.unpack(block)
    reason = _out_of_range(values)
    if reason is not None:
        raise BadMessage(reason)
    # v == v: false only for NaN, which is a missing feature.
    features: Features = {name: v for name, v in zip(FEATURE_NAMES, values, strict=True) if v == v}
    return WireEvent(event_id, sensor_id, timestamp, features)


def binary_parts(value: bytes) -> tuple[str, str, int, bytes]:
    """(event_id, sensor_id, timestamp, the 8n bytes of values) of a binary measurement.

    Every rule is checked but one: whether the values are finite in float32, which readers check at
    once for a whole batch (:func:`out_of_range_rows`) or one row (:func:`decode_event`, :func:`feature_row`).
    """
    size = len(value)
    if value[:4] != _PREFIX or size < VALUES_AT:
        raise BadMessage(_header_problem(value))
    _, timestamp, n, id_size, sensor_size = _HEADER.unpack_from(value)
    if n != WIDTH:
        raise BadMessage(f"n (feature count): expected {WIDTH}, got {n}")
    end = IDS_AT + id_size + sensor_size
    if size != end:
        raise BadMessage(_length_problem(size, id_size, end))
    if not MIN_EPOCH_MS <= timestamp <= MAX_EPOCH_MS:
        raise BadMessage(f"timestamp: expected epoch milliseconds, got {timestamp!r:.80}")
    # latin-1 maps every byte to a character, so a non-ASCII byte fails the pattern, not the decode.
    ids = value[IDS_AT:].decode("latin-1")
    if not IDENTIFIER.fullmatch(ids, 0, id_size):
        raise BadMessage(f"event_id: expected an identifier string, got {ids[:id_size]!r:.80}")
    if not IDENTIFIER.fullmatch(ids, id_size):
        raise BadMessage(f"sensor_id: expected an identifier string, got {ids[id_size:]!r:.80}")
    return ids[:id_size], ids[id_size:], timestamp, value[VALUES_AT:IDS_AT]


def _header_problem(value: bytes) -> str:
    size = len(value)
    if value[:3] != BINARY_MAGIC[:size]:
        return f"magic: expected a binary measurement to start {BINARY_MAGIC!r}, got {value[:3]!r}"
    if size > 3 and value[3] not in BINARY_VERSIONS:
        understood = ", ".join(map(str, BINARY_VERSIONS))
        return f"version: binary measurement format version {value[3]}; this reader understands {understood}"
    field = next(name for end, name in _HEADER_FIELDS if size < end)
    return f"{field}: message truncated at {size} bytes, inside the {VALUES_AT}-byte header"


def _length_problem(size: int, id_size: int, end: int) -> str:
    if size < IDS_AT:
        return f"features: message truncated at {size} bytes; the {WIDTH} values end at byte {IDS_AT}"
    if size < IDS_AT + id_size:
        return f"event_id: message truncated at {size} bytes; event_id ends at byte {IDS_AT + id_size}"
    if size < end:
        return f"sensor_id: message truncated at {size} bytes; sensor_id ends at byte {end}"
    return f"sensor_id: followed by {size - end} extra byte(s); the message must end with it, at byte {end}"


def _out_of_range_reason(name: str, value: float) -> str:
    bound = f"{FLOAT32_MAX:.8g}"
    return f"features.{name}: expected a finite number (|x| <= {bound}, float32) or missing, got {value}"


def _out_of_range(values: Any) -> str | None:
    """The reason a row in FEATURE_NAMES order is refused, if a value is not finite in float32."""
    for name, v in zip(FEATURE_NAMES, values, strict=True):
        # False for NaN, which is a missing feature.
        if v > FLOAT32_MAX or v < -FLOAT32_MAX:
            return _out_of_range_reason(name, v)
    return None


def out_of_range_rows(matrix: np.ndarray) -> dict[int, str]:
    """The rows of a FEATURE_NAMES-ordered matrix with a value not finite in float32, with the reason."""
    rows = np.flatnonzero((np.abs(matrix) > FLOAT32_MAX).any(axis=1))
    return {int(row): str(_out_of_range(matrix[row].tolist())) for row in rows}


def feature_row(value: bytes | None) -> tuple[str, np.ndarray]:
    """(event_id, float64 values in FEATURE_NAMES order, NaN for missing) of a measurement."""
    if value is not None and is_binary(value):
        event_id, _, _, block = binary_parts(value)
        row = np.frombuffer(block, dtype=FLOAT64)
        reason = _out_of_range(row.tolist()) if (np.abs(row) > FLOAT32_MAX).any() else None
        if reason is not None:
            raise BadMessage(reason)
        return event_id, row
    event = decode_event(value)
    return event.event_id, np.array(_ordered(event.features), dtype=np.float64)


def _ordered(features: Features) -> list[float | int | None]:
    return list(map(features.get, FEATURE_NAMES))


_ID_FIELD = b'"event_id":"'


def peek_event_id(value: bytes) -> str | None:
    """The ``event_id`` of a raw measurement without parsing it; None when that needs a full parse.

    The id is not checked against the contract: the full parse that follows does that.
    """
    if is_binary(value):
        if value[:4] != _PREFIX or len(value) < VALUES_AT:
            return None
        start = VALUES_AT + 8 * int.from_bytes(value[12:14], "little")
        end = start + value[14]
        return value[start:end].decode("latin-1") if len(value) >= end else None
    start = value.find(_ID_FIELD)
    if start < 0:
        return None
    start += len(_ID_FIELD)
    end = value.find(b'"', start)
    # Without a backslash, the bytes between the quotes are the decoded string.
    if end < 0 or value.find(b"\\", start, end) >= 0:
        return None
    try:
        return value[start:end].decode()
    except UnicodeDecodeError:
        return None


def decode_label(value: bytes | None) -> WireLabel:
    message = load_object(value)
    label = _zero_or_one(message, "label")  # checked first: the field that makes it a label
    return WireLabel(
        _identifier(message, "event_id"), _identifier(message, "sensor_id"), _timestamp(message), label
    )


# event_id, sensor_id, timestamp, prediction, probability, model_name, model_version
PredictionFields = tuple[str, str, int, int, float, str, str]


def decode_prediction(value: bytes | None) -> PredictionFields:
    """A prediction's fields, checked. A tuple, not a record: the monitor reads every prediction and
    keeps its own record of it (with the message's position), and one object per message is enough."""
    message = load_object(value)
    # The monitor decodes every prediction: one pass over the fields the scorer always writes, and
    # the field-by-field checks (which name the offending field) only for a message that fails it.
    get = message.get
    event_id, sensor_id, timestamp = get("event_id"), get("sensor_id"), get("timestamp")
    prediction, probability = get("prediction"), get("probability")
    model_name, model_version = get("model_name"), get("model_version")
    if (
        type(probability) is float
        and 0.0 <= probability <= 1.0
        and type(prediction) is int
        and (prediction == 0 or prediction == 1)
        and type(timestamp) is int
        and MIN_EPOCH_MS <= timestamp <= MAX_EPOCH_MS
        and type(model_name) is str
        and model_name
        and type(model_version) is str
        and model_version
        and type(event_id) is str
        and type(sensor_id) is str
        and IDENTIFIER.fullmatch(event_id)
        and IDENTIFIER.fullmatch(sensor_id)
    ):
        return event_id, sensor_id, timestamp, prediction, probability, model_name, model_version
    return _checked_prediction(message)


def _checked_prediction(message: dict[str, Any]) -> PredictionFields:
    probability: Any = message.get("probability")
    if type(probability) not in (float, int) or not 0.0 <= probability <= 1.0:
        raise BadMessage(f"probability: expected a number in [0, 1], got {probability!r:.80}")
    names = []
    for key in ("model_name", "model_version"):
        name = message.get(key)
        if type(name) is not str or not name:
            raise BadMessage(f"{key}: expected a non-empty string, got {name!r:.80}")
        names.append(name)
    return (
        _identifier(message, "event_id"),
        _identifier(message, "sensor_id"),
        _timestamp(message),
        _zero_or_one(message, "prediction"),
        float(probability),
        names[0],
        names[1],
    )


def encode_event(
    event_id: str, sensor_id: str, timestamp: int, features: dict[str, Any], fmt: MeasurementFormat
) -> bytes:
    """A measurement in ``fmt``; ``features`` maps known names to finite numbers, None or nothing.

    The caller has checked the contract (the collector has): the encoder does not check it again.
    """
    if fmt == "binary":
        return _encode_binary(event_id, sensor_id, timestamp, features)
    return _encode_json(event_id, sensor_id, timestamp, features)


def _encode_binary(event_id: str, sensor_id: str, timestamp: int, features: dict[str, Any]) -> bytes:
    event_bytes, sensor_bytes = event_id.encode(), sensor_id.encode()
    values = [_NAN if v is None else v for v in map(features.get, FEATURE_NAMES)]
    header = _HEADER.pack(_PREFIX, timestamp, WIDTH, len(event_bytes), len(sensor_bytes))
    return header + _VALUES.pack(*values) + event_bytes + sensor_bytes


def _encode_json(event_id: str, sensor_id: str, timestamp: int, features: dict[str, Any]) -> bytes:
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
