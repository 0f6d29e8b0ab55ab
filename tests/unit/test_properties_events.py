"""Property tests of the event contract: the collector's validation and its readers, on hostile input.

Whatever bytes arrive, the collector either accepts events that satisfy the contract or answers a
4xx naming the problem, and the contract's decoder either decodes or reports a bad message; neither
raises anything else. What the collector accepts, the sink, the scorer and the monitor decode to the
same event, and on any message the three readers agree on whether it is an event at all. Both
measurement formats (JSON and binary, ``fireman.common.events``) are held to this.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fireman.common.events import (
    BadMessage,
    decode_event,
    decode_prediction,
    encode_event,
    encode_predictions,
    feature_row,
    load_object,
    peek_event_id,
)
from fireman.common.events import _checked_prediction as checked_prediction
from fireman.common.schema import FEATURE_NAMES, FLOAT32_MAX, MAX_EPOCH_MS, MIN_EPOCH_MS
from fireman.serving.codec import decode_batch
from fireman.streaming.payloads import (
    PayloadError,
    event_record,
    parse_events,
    parse_labels,
    parse_legacy,
)
from fireman.streaming.sink import event_point

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
# What the contract accepts: finite in the models' float32. Hostile values draw from all of ``finite``.
in_float32 = st.floats(-FLOAT32_MAX, FLOAT32_MAX)
feature_maps = st.dictionaries(st.sampled_from(FEATURE_NAMES), st.one_of(st.none(), in_float32), max_size=57)
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


formats = st.sampled_from(["binary", "json"])
binary_events = st.builds(
    lambda event_id, sensor_id, timestamp, features: encode_event(
        event_id, sensor_id, timestamp, features, "binary"
    ),
    identifiers,
    identifiers,
    epoch_ms,
    feature_maps,
)


@st.composite
def hostile_binary(draw: st.DrawFn) -> bytes:
    """A valid binary measurement mutated the ways a broken writer or a bad copy would: cut short,
    lengthened, bytes overwritten (magic, version, n, lengths, values, ids)."""
    value = bytearray(draw(binary_events))
    mutation = draw(st.sampled_from(["cut", "extend", "overwrite"]))
    if mutation == "cut":
        return bytes(value[: draw(st.integers(0, len(value) - 1))])
    if mutation == "extend":
        return bytes(value) + draw(st.binary(min_size=1, max_size=20))
    at = draw(st.integers(0, len(value) - 1))
    patch = draw(st.binary(min_size=1, max_size=8))
    value[at : at + len(patch)] = patch
    return bytes(value)


def check_accepted(event: Any) -> None:
    """What the collector accepted obeys the contract."""
    assert event.sensor_id and IDENTIFIER.fullmatch(event.sensor_id)
    assert event.event_id is None or IDENTIFIER.fullmatch(event.event_id)
    assert event.timestamp is None or MIN_EPOCH_MS <= event.timestamp <= MAX_EPOCH_MS
    for name, value in event.features.items():
        assert name in FEATURE_NAMES
        assert value is None or (type(value) is float and abs(value) <= FLOAT32_MAX)


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


Reading = tuple[str, str, int, list[float | None]] | None


def readings(value: bytes | None) -> tuple[Reading, Reading, Reading]:
    """(event id, sensor id, timestamp, features in FEATURE_NAMES order) as the sink, the scorer and the
    monitor read ``value``; None where that reader refuses it."""
    try:
        point = event_point(value, "measurements")  # type: ignore[arg-type]
        sink: Reading = (
            str(point.fields["event_id"]),
            point.tags["sensor_id"],
            point.time_ns // 1_000_000,
            [point.fields.get(name) for name in FEATURE_NAMES],  # type: ignore[misc]
        )
    except ValueError:
        sink = None
    batch = decode_batch([value], FEATURE_NAMES)
    scorer: Reading = (
        (batch.event_ids[0], batch.sensor_ids[0], batch.timestamps[0], _values(batch.matrix[0]))
        if len(batch)
        else None
    )
    try:
        event_id, row = feature_row(value)
        peeked = peek_event_id(value) if value else None
        assert peeked is None or peeked == event_id  # the monitor keeps a raw message by its peeked id
        event = decode_event(value)
        monitor: Reading = (
            event_id,
            event.sensor_id,
            event.timestamp,
            _values(row),
        )
    except BadMessage:
        monitor = None
    return sink, scorer, monitor


def _values(row: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in row]


@PROPERTY
@given(valid_events, formats)
def test_an_event_the_collector_accepts_is_read_identically_by_the_sink_the_scorer_and_the_monitor(
    value: dict[str, Any], fmt: Any
) -> None:
    [event] = parse_events(orjson.dumps(value), MAX_BATCH)
    event_id = event.event_id or "filled-by-collector"
    timestamp = event.timestamp if event.timestamp is not None else 1_700_000_000_000
    record = event_record(event_id, event.sensor_id, timestamp, event.features, fmt)

    expected = (event_id, event.sensor_id, timestamp, [event.features.get(name) for name in FEATURE_NAMES])
    sink, scorer, monitor = readings(record.value)
    assert sink == scorer == monitor == expected


@PROPERTY
@given(
    st.one_of(
        hostile_events.map(orjson.dumps),
        st.binary(max_size=300),
        st.none(),
        hostile_binary(),
        st.binary(max_size=600).map(lambda tail: b"\x00FM\x01" + tail),
    )
)
def test_the_sink_the_scorer_and_the_monitor_agree_on_any_message(value: bytes | None) -> None:
    sink, scorer, monitor = readings(value)
    assert (sink is None) == (scorer is None) == (monitor is None), (sink, scorer, monitor)
    if scorer is not None:
        # The sink stores floats (an integer would start an integer field in InfluxDB).
        assert scorer[3] == [None if v is None else float(v) for v in scorer[3]]
        assert (
            sink
            == monitor
            == (scorer[0], scorer[1], scorer[2], [None if v is None else float(v) for v in scorer[3]])
        )


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
    valid_events,
    st.sampled_from(FEATURE_NAMES),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "1e308", "-3.5e38"]),
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
@given(st.one_of(st.binary(max_size=2048), st.none(), hostile_binary()))
def test_the_decoder_decodes_or_reports_a_bad_message_for_any_bytes(value: bytes | None) -> None:
    try:
        event = decode_event(value)
    except BadMessage as exc:
        assert str(exc)
        return
    assert IDENTIFIER.fullmatch(event.event_id) and IDENTIFIER.fullmatch(event.sensor_id)
    assert MIN_EPOCH_MS <= event.timestamp <= MAX_EPOCH_MS
    assert set(event.features) <= set(FEATURE_NAMES)


@PROPERTY
@given(
    st.lists(
        st.one_of(
            hostile_events.map(orjson.dumps),
            st.binary(max_size=200),
            st.none(),
            hostile_binary(),
            binary_events,
        ),
        max_size=20,
    )
)
def test_scorer_batch_keeps_every_message_as_an_event_or_as_poison(values: list[bytes | None]) -> None:
    batch = decode_batch(values, FEATURE_NAMES)
    assert len(batch) + len(batch.poison) == len(values)
    assert sorted(index for index, _ in batch.poison) == [i for i, _ in batch.poison]
    assert batch.matrix.shape == (len(batch), len(FEATURE_NAMES))
    # Each event's row is what the contract decodes from its own message, whatever its neighbours.
    good = [value for i, value in enumerate(values) if i not in dict(batch.poison)]
    for row, value in zip(batch.matrix, good, strict=True):
        assert np.array_equal(row, feature_row(value)[1], equal_nan=True)


@PROPERTY
@given(identifiers, identifiers, epoch_ms, feature_maps, formats)
def test_encoding_then_decoding_is_the_identity_in_both_formats(
    event_id: str, sensor_id: str, timestamp: int, features: dict[str, float | None], fmt: Any
) -> None:
    event = decode_event(encode_event(event_id, sensor_id, timestamp, features, fmt))
    present = {name: value for name, value in features.items() if value is not None}
    assert (event.event_id, event.sensor_id, event.timestamp, event.features) == (
        event_id,
        sensor_id,
        timestamp,
        present,
    )


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
        b'{"event_id": "e", "sensor_id": "s", "timestamp": 1700000000000, "features": {"Cont_99": 1.0}}',
        b'{"event_id": "e", "sensor_id": "s", "timestamp": true, "features": {}}',
    ],
)
def test_known_poison_shapes_are_bad_messages(value: bytes) -> None:
    with pytest.raises(BadMessage):
        decode_event(value)


probabilities = st.floats(0.0, 1.0)
hostile_predictions = st.fixed_dictionaries(
    {},
    optional={
        key: st.one_of(json_values, st.just(good))
        for key, good in {
            "event_id": "e-1",
            "sensor_id": "s-1",
            "timestamp": MIN_EPOCH_MS,
            "prediction": 1,
            "probability": 0.25,
            "model_name": "m",
            "model_version": "3",
        }.items()
    },
)


@PROPERTY
@given(hostile_predictions)
def test_the_fast_prediction_decode_agrees_with_the_field_by_field_checks(message: dict[str, Any]) -> None:
    """``decode_prediction`` checks the usual message in one pass and names a bad field through the
    field-by-field checks: on any message both give the same fields or both refuse it."""
    value = orjson.dumps(message)
    try:
        expected: Any = checked_prediction(load_object(value))
    except BadMessage as exc:
        expected = str(exc)
    try:
        got: Any = decode_prediction(value)
    except BadMessage as exc:
        got = str(exc)
    assert got == expected


@PROPERTY
@given(identifiers, identifiers, epoch_ms, st.sampled_from([0, 1]), probabilities, identifiers)
def test_a_prediction_the_scorer_writes_decodes_to_what_it_scored(
    event_id: str, sensor_id: str, timestamp: int, prediction: int, probability: float, version: str
) -> None:
    (value,) = encode_predictions(
        [(event_id, sensor_id, timestamp)], [prediction], [repr(probability)], ("m", version, "r"), timestamp
    )
    assert decode_prediction(value) == (event_id, sensor_id, timestamp, prediction, probability, "m", version)
