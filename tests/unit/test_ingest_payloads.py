"""Request validation: the collector's fast model accepts and rejects exactly what EventIn does."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from fireman.common.events import WireEvent, decode_event, is_binary
from fireman.common.pointtime import point_time_ns
from fireman.common.schema import EventIn, present_features
from fireman.streaming.clock import SensorClock
from fireman.streaming.payloads import (
    PayloadError,
    event_record,
    parse_events,
    parse_labels,
    parse_legacy,
)

CASES = [
    {"sensor_id": "s-1", "features": {}},
    {"sensor_id": "s-1", "features": {"Cont_1": 1, "Cont_57": None, "Cont_9": 0.0}},
    {"sensor_id": "s-1", "event_id": "e.1:x", "timestamp": "2026-01-31T12:00:00+01:00", "features": {}},
    {"sensor_id": "s-1", "timestamp": 1_769_860_800_000, "features": {"Cont_2": -3.5}},
    {"sensor_id": "s 1", "features": {}},
    {"sensor_id": "", "features": {}},
    {"sensor_id": "s-1", "features": {"Cont_0": 1.0}},
    {"sensor_id": "s-1", "features": {"cont_1": 1.0}},
    {"sensor_id": "s-1", "features": {"Cont_1": "1.0"}},
    {"sensor_id": "s-1", "features": {"Cont_1": True}},
    {"sensor_id": "s-1", "features": {"Cont_1": [1.0]}},
    # Finite in float64, not in the models' float32: 1e308 would be infinity to the model.
    {"sensor_id": "s-1", "features": {"Cont_1": 1e308}},
    {"sensor_id": "s-1", "features": {"Cont_1": -3.5e38}},
    {"sensor_id": "s-1", "features": {"Cont_1": 3.4028234663852886e38, "Cont_2": -3.4028234663852886e38}},
    {"sensor_id": "s-1", "timestamp": "2026-01-31T12:00:00", "features": {}},
    {"sensor_id": "s-1", "timestamp": -5, "features": {}},
    {"sensor_id": "s-1", "features": {}, "extra": 1},
    {"features": {}},
    {"sensor_id": "s-1"},
]


@pytest.mark.parametrize("fmt", ["binary", "json"])
@pytest.mark.parametrize("case", CASES)
def test_fast_validation_agrees_with_the_shared_event_model(case: dict, fmt: str) -> None:
    body = json.dumps(case).encode()
    try:
        reference = EventIn.model_validate_json(body)
    except ValidationError:
        reference = None
    try:
        [fast] = parse_events(body, max_batch=10)
    except PayloadError as exc:
        assert reference is None, f"rejected what EventIn accepts: {exc.message}"
        assert exc.status == 422
        return
    assert reference is not None, "accepted what EventIn rejects"
    assert (fast.event_id, fast.sensor_id, fast.timestamp) == (
        reference.event_id,
        reference.sensor_id,
        reference.timestamp,
    )
    record = event_record("id", fast.sensor_id, 1, fast.features, fmt)  # type: ignore[arg-type]
    wire = WireEvent(
        event_id="id",
        sensor_id=reference.sensor_id,
        timestamp=1,
        features=present_features(reference.features),
    )
    assert decode_event(record.value) == decode_event(wire.to_json())
    assert is_binary(record.value) == (fmt == "binary")
    assert record.key == reference.sensor_id.encode()


def test_errors_name_the_item_and_field() -> None:
    body = json.dumps([{"sensor_id": "a", "features": {}}, {"sensor_id": "a", "features": {"Cont_3": "x"}}])
    with pytest.raises(PayloadError) as caught:
        parse_events(body.encode(), max_batch=10)
    assert caught.value.status == 422
    assert caught.value.errors[0]["item"] == 1 and caught.value.errors[0]["field"] == "features.Cont_3"
    assert caught.value.message.startswith("event 1, field features.Cont_3:")


def test_a_value_beyond_float32_is_refused_naming_the_field() -> None:
    body = b'[{"sensor_id": "a", "features": {}}, {"sensor_id": "big1", "features": {"Cont_1": 1e308}}]'
    with pytest.raises(PayloadError) as caught:
        parse_events(body, max_batch=10)
    assert caught.value.status == 422
    assert caught.value.message.startswith(
        "event 1, field features.Cont_1: Input should be a finite number in float32 (|x| <= 3.4028235e+38)"
    )
    with pytest.raises(PayloadError) as caught:
        parse_legacy(b'{"Cont_2": -1e39}')
    assert caught.value.errors[0]["field"] == "features.Cont_2"


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"", 400), (b"{", 400), (b"[]", 422), (b'"text"', 422), (b"[1]", 422), (b"null", 422)],
)
def test_structural_problems(body: bytes, status: int) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_events(body, max_batch=10)
    assert caught.value.status == status


def test_batch_limit_and_labels() -> None:
    label = {"event_id": "e", "label": 1, "sensor_id": "s", "timestamp": 5}
    assert len(parse_labels(json.dumps([label] * 3).encode(), max_batch=3)) == 3
    with pytest.raises(PayloadError) as caught:
        parse_labels(json.dumps([label] * 4).encode(), max_batch=3)
    assert caught.value.status == 413 and "limit is 3" in caught.value.message


def test_legacy_body_keeps_only_present_values() -> None:
    assert parse_legacy(b'{"Cont_1": 0.5, "Cont_2": null, "Cont_3": 2}') == {"Cont_1": 0.5, "Cont_3": 2.0}
    with pytest.raises(PayloadError) as caught:
        parse_legacy(b'{"Cont_1": 0.5, "label": 1}')
    assert caught.value.errors[0]["field"] == "features.label"


def test_event_time_is_deterministic_distinct_and_keeps_the_millisecond() -> None:
    times = {point_time_ns(1_769_860_800_123, f"event-{i}") for i in range(2000)}
    assert len(times) > 1990  # ~2 collisions expected among 2,000 ids in one ms at most
    assert all(t // 1_000_000 == 1_769_860_800_123 for t in times)
    assert point_time_ns(7, "same") == point_time_ns(7, "same")


def test_sensor_clock_never_repeats_a_millisecond_per_sensor() -> None:
    clock = SensorClock()
    stamps = [clock.next("a", 1000) for _ in range(5)]
    assert stamps == [1000, 1001, 1002, 1003, 1004]
    assert clock.next("b", 1000) == 1000
    assert clock.next("a", 2000) == 2000
