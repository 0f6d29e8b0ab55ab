"""Parsing and validating what clients post, and the bytes that go on Kafka.

The rules are those of :class:`fireman.common.schema.EventIn` (known feature names, numbers finite
in float32 or null, identifiers, RFC 3339 or epoch-ms timestamps). Features are validated as a dict
keyed by a ``Literal`` of the 57 names rather than a 57-field model: pydantic-core parses and checks
the whole body in one call, about twice as fast, which matters at tens of thousands of events per second.
``tests/unit/test_ingest_payloads.py`` checks both accept and reject the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from fireman.common.events import MeasurementFormat, encode_event, encode_label
from fireman.common.schema import FEATURE_NAMES, FLOAT32_MAX, EpochMs, Identifier, LabelIn

FeatureName = Literal[FEATURE_NAMES]  # type: ignore[valid-type]
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
FeatureMap = dict[FeatureName, FiniteFloat | None]

MAX_REPORTED_ERRORS = 20


class EventBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: Identifier | None = None
    sensor_id: Identifier
    timestamp: EpochMs | None = None
    features: FeatureMap


EVENT_ONE = TypeAdapter(EventBody)
EVENT_MANY = TypeAdapter(list[EventBody])
LABEL_ONE = TypeAdapter(LabelIn)
LABEL_MANY = TypeAdapter(list[LabelIn])
LEGACY_BODY = TypeAdapter(FeatureMap)


class PayloadError(Exception):
    """A request body that cannot be accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []

    def body(self) -> dict[str, Any]:
        return {"detail": self.message, "errors": self.errors}


def parse_events(body: bytes, max_batch: int) -> list[EventBody]:
    return _parse(body, EVENT_ONE, EVENT_MANY, max_batch, "event")


def parse_labels(body: bytes, max_batch: int) -> list[LabelIn]:
    return _parse(body, LABEL_ONE, LABEL_MANY, max_batch, "label")


def parse_legacy(body: bytes) -> dict[str, float]:
    """The original FIREMAN generator's flat ``{"Cont_1": 0.1, ...}`` object."""
    try:
        features = LEGACY_BODY.validate_json(body)
    except ValidationError as exc:
        raise _payload_error(exc, "event", batch=False, prefix=("features",)) from None
    return {name: value for name, value in features.items() if value is not None}


def _parse(
    body: bytes, one: TypeAdapter[Any], many: TypeAdapter[Any], max_batch: int, noun: str
) -> list[Any]:
    batch = body.lstrip()[:1] == b"["
    try:
        items = many.validate_json(body) if batch else [one.validate_json(body)]
    except ValidationError as exc:
        raise _payload_error(exc, noun, batch) from None
    if not items:
        raise PayloadError(422, f"empty array: post at least one {noun}")
    if len(items) > max_batch:
        raise PayloadError(413, f"{len(items)} {noun}s in one request; the limit is {max_batch}")
    return items


def _payload_error(exc: ValidationError, noun: str, batch: bool, prefix: Sequence[str] = ()) -> PayloadError:
    details = exc.errors(include_url=False, include_input=False)
    if any(error["type"] == "json_invalid" for error in details):
        return PayloadError(400, f"malformed JSON: {details[0]['msg']}")
    errors = []
    for error in details[:MAX_REPORTED_ERRORS]:
        loc = list(error["loc"])
        item = loc.pop(0) if batch and loc and isinstance(loc[0], int) else (None if batch else 0)
        path = [*prefix, *(str(part) for part in loc)]
        message = error["msg"]
        if path and path[-1] == "[key]":
            path.pop()
            message = f"unknown feature name {path[-1]!r}; expected Cont_1..Cont_57"
        elif error["type"] == "extra_forbidden":
            message = f"unknown field {path[-1]!r}"
        elif path[:1] == ["features"] and error["type"] in ("less_than_equal", "greater_than_equal"):
            # A feature value's bounds are float32's, where the models score.
            message = f"Input should be a finite number in float32 (|x| <= {FLOAT32_MAX:.8g})"
        errors.append({"item": item, "field": ".".join(path) or None, "msg": message, "type": error["type"]})
    first = errors[0]
    where = f"{noun} {first['item']}" if first["item"] is not None else f"the {noun} list"
    field = f", field {first['field']}" if first["field"] else ""
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return PayloadError(422, f"{where}{field}: {first['msg']}{more}", errors)


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes
    value: bytes


def event_record(
    event_id: str, sensor_id: str, timestamp: int, features: dict[str, float | None], fmt: MeasurementFormat
) -> Record:
    """An event on Kafka in ``fmt`` (``fireman.common.events``), keyed by its sensor."""
    return Record(sensor_id.encode(), encode_event(event_id, sensor_id, timestamp, features, fmt))


def label_record(label: LabelIn) -> Record:
    value = encode_label(label.event_id, label.sensor_id, label.timestamp, label.label)
    return Record(label.sensor_id.encode(), value)
