"""Property tests of event parsing: the collector's validation and the scorer's decoder, on hostile input.

Whatever bytes arrive, the collector either accepts events that satisfy the contract or answers a
4xx naming the problem, and the scorer's decoder either decodes or reports poison; neither raises
anything else. What the collector accepts, the sink and the scorer decode to the same event.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fireman_common.schema import FEATURE_NAMES, MAX_EPOCH_MS, MIN_EPOCH_MS
from serving.codec import PoisonMessage, decode_batch, decode_event
from streaming.payloads import (
    WIRE_EVENT,
    PayloadError,
    event_record,
    parse_events,
    parse_labels,
    parse_legacy,
)

IDENTIFIER = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
MAX_BATCH = 50
# Bounded, and no example database written into the working tree.
PROPERTY = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
# orjson (like the wire) carries 64-bit integers; bigger ones are not JSON this system can receive.
int64 = st.integers(-(2**63), 2**63 - 1)

identifiers = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-", min_size=1, max_size=128
)
finite = st.floats(allow_nan=False, allow_infinity=False)
feature_maps = st.dictionaries(st.sampled_from(FEATURE_NAMES), st.one_of(st.none(), finite), max_size=57)
epoch_ms = st.integers(MIN_EPOCH_MS, MAX_EPOCH_MS)
valid_events = st.fixed_dictionaries(
    {"sensor_id": identifiers, "features": feature_maps},
    optional={"event_id": identifiers, "timestamp": epoch_ms},
)
json_values = st.recursive(
    st.none() | st.booleans() | finite | int64 | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
# Keys the contract knows, with values of any JSON type: the mutations most likely to slip through.
hostile_events = st.fixed_dictionaries(
    {},
    optional={
        "event_id": json_values,
        "sensor_id": json_values,
        "timestamp": json_values,
        "features": st.dictionaries(
            st.one_of(st.sampled_from(FEATURE_NAMES), st.text(max_size=12)), json_values, max_size=6
        ),
        "extra": json_values,
    },
)


def check_accepted(event: Any) -> None:
    """What the collector accepted obeys the contract."""
    assert event.sensor_id and IDENTIFIER.fullmatch(event.sensor_id)
    assert event.event_id is None or IDENTIFIER.fullmatch(event.event_id)
    assert event.timestamp is None or MIN_EPOCH_MS <= event.timestamp <= MAX_EPOCH_MS
    for name, value in event.features.items():
        assert name in FEATURE_NAMES
        assert value is None or (type(value) is float and math.isfinite(value))


def collector_verdict(body: bytes) -> list[Any] | PayloadError:
    try:
        events = parse_events(body, MAX_BATCH)
    except PayloadError as exc:
        assert exc.status in (400, 413, 422), exc.status
        assert exc.message
        assert all(error["msg"] and "field" in error for error in exc.errors)
        return exc
    for event in events:
        check_accepted(event)
    return events


@PROPERTY
@given(st.binary(max_size=2048))
def test_collector_answers_4xx_or_accepts_a_valid_event_for_any_bytes(body: bytes) -> None:
    collector_verdict(body)


@PROPERTY
@given(st.one_of(hostile_events, st.lists(hostile_events, max_size=4), json_values))
def test_collector_never_accepts_an_event_outside_the_contract(value: Any) -> None:
    verdict = collector_verdict(orjson.dumps(value))
    if isinstance(verdict, list):
        items = value if isinstance(value, list) else [value]
        for item in items:
            assert set(item) <= {"event_id", "sensor_id", "timestamp", "features"}
            assert all(type(v) in (float, int, type(None)) for v in item["features"].values())


@PROPERTY
@given(valid_events)
def test_an_event_the_collector_accepts_is_decoded_identically_by_the_sink_and_the_scorer(
    value: dict[str, Any],
) -> None:
    [event] = parse_events(orjson.dumps(value), MAX_BATCH)
    event_id = event.event_id or "filled-by-collector"
    timestamp = event.timestamp if event.timestamp is not None else 1_700_000_000_000
    record = event_record(event_id, event.sensor_id, timestamp, event.features)

    wire = WIRE_EVENT.validate_json(record.value)  # the sink's reading
    present = {k: v for k, v in event.features.items() if v is not None}
    assert (wire.event_id, wire.sensor_id, wire.timestamp) == (event_id, event.sensor_id, timestamp)
    assert wire.features == present

    decoded_id, sensor, stamp, row = decode_event(record.value, FEATURE_NAMES)  # the scorer's reading
    assert (decoded_id, sensor, stamp) == (event_id, event.sensor_id, timestamp)
    assert row == [present.get(name) for name in FEATURE_NAMES]


@PROPERTY
@given(st.lists(valid_events, min_size=1, max_size=MAX_BATCH + 5))
def test_a_batch_is_accepted_whole_or_refused_whole(values: list[dict[str, Any]]) -> None:
    verdict = collector_verdict(orjson.dumps(values))
    if len(values) > MAX_BATCH:
        assert isinstance(verdict, PayloadError) and verdict.status == 413
    else:
        assert isinstance(verdict, list) and len(verdict) == len(values)


@PROPERTY
@given(
    valid_events, st.sampled_from(FEATURE_NAMES), st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"])
)
def test_non_finite_feature_values_are_refused_with_the_field_named(
    value: dict[str, Any], name: str, literal: str
) -> None:
    body = orjson.dumps({**value, "features": {name: 0.0}}).replace(b"0.0", literal.encode(), 1)
    verdict = collector_verdict(body)
    assert isinstance(verdict, PayloadError), body
    assert verdict.status in (400, 422)
    if verdict.status == 422:
        assert verdict.errors[0]["field"] == f"features.{name}"


@PROPERTY
@given(st.binary(max_size=1024))
def test_labels_and_legacy_bodies_answer_4xx_or_parse_for_any_bytes(body: bytes) -> None:
    for parse in (lambda b: parse_labels(b, MAX_BATCH), parse_legacy):
        try:
            parse(body)
        except PayloadError as exc:
            assert exc.status in (400, 413, 422)


@PROPERTY
@given(st.one_of(st.binary(max_size=2048), st.none()))
def test_scorer_decoder_decodes_or_reports_poison_for_any_bytes(value: bytes | None) -> None:
    try:
        event_id, sensor_id, timestamp, row = decode_event(value, FEATURE_NAMES)
    except PoisonMessage as exc:
        assert str(exc)
        return
    assert IDENTIFIER.fullmatch(event_id) and IDENTIFIER.fullmatch(sensor_id)
    assert MIN_EPOCH_MS <= timestamp <= MAX_EPOCH_MS
    assert len(row) == len(FEATURE_NAMES)


@PROPERTY
@given(st.lists(st.one_of(hostile_events.map(orjson.dumps), st.binary(max_size=200), st.none()), max_size=20))
def test_scorer_batch_keeps_every_message_as_an_event_or_as_poison(values: list[bytes | None]) -> None:
    batch = decode_batch(values, FEATURE_NAMES)
    assert len(batch) + len(batch.poison) == len(values)
    assert sorted(index for index, _ in batch.poison) == [i for i, _ in batch.poison]
    matrix = batch.matrix(len(FEATURE_NAMES))
    assert matrix.shape == (len(batch), len(FEATURE_NAMES))


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xfe\x00garbage",
        b'{"event_id": "e", "sensor_id": "s", "timestamp": 1700000000000, "features": {"Cont_1": 1.0',
        b'{"event_id": "e", "sensor_id": "s", "timestamp": 1700000000000, "features": {"Cont_1": true}}',
        b'{"event_id": "e", "sensor_id": "s", "timestamp": 17000000000000000, "features": {}}',
        b'{"event_id": "e\\n", "sensor_id": "s", "timestamp": 1700000000000, "features": {}}',
        b'{"event_id": "e", "sensor_id": "s", "timestamp": 1700000000000, "features": [1, 2]}',
        '{"event_id": "é", "sensor_id": "s", "timestamp": 1700000000000, "features": {}}'.encode(),
    ],
)
def test_scorer_reports_known_poison_shapes(value: bytes) -> None:
    with pytest.raises(PoisonMessage):
        decode_event(value, FEATURE_NAMES)
