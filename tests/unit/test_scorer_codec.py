"""Decoding events into the scoring matrix (JSON, binary and mixed batches), poison detection, and the
encoded predictions."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fireman.common.events import WireEvent, encode_event
from fireman.common.events import encode_predictions as prediction_messages
from fireman.common.model import Lineage
from fireman.common.pointtime import point_time_ns
from fireman.common.schema import FEATURE_NAMES
from fireman.serving.codec import column_map, decode_batch, encode_predictions, shadow_lines
from fireman.streaming.sink import event_point

ORDER = ("Cont_3", "Cont_1", "Cont_2")


def event(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "event_id": "e-1",
        "sensor_id": "s-1",
        "timestamp": 1_700_000_000_000,
        "features": {"Cont_1": 1.0, "Cont_3": 3},
    }
    body.update(overrides)
    return orjson.dumps(body)


def test_matrix_follows_the_model_order_with_nan_for_absent_and_null_features() -> None:
    batch = decode_batch([event(), event(event_id="e-2", features={"Cont_2": None, "Cont_9": 9.0})], ORDER)
    matrix = batch.matrix
    assert matrix.dtype.name == "float64"
    assert matrix[0, 0] == 3.0 and matrix[0, 1] == 1.0 and math.isnan(matrix[0, 2])
    assert all(math.isnan(v) for v in matrix[1])
    assert batch.event_ids == ["e-1", "e-2"] and not batch.poison


def test_the_wire_form_of_an_event_decodes() -> None:
    wire = WireEvent(event_id="a", sensor_id="b", timestamp=5, features={"Cont_1": 0.5}).to_json()
    batch = decode_batch([wire], ORDER)
    assert batch.timestamps == [5]
    assert np.array_equal(batch.matrix, [[np.nan, 0.5, np.nan]], equal_nan=True)


def binary(event_id: str = "e-1", **features: float | None) -> bytes:
    return encode_event(
        event_id, "s-1", 1_700_000_000_000, features or {"Cont_1": 1.0, "Cont_3": 3}, "binary"
    )


@pytest.mark.parametrize("order", [ORDER, FEATURE_NAMES])
def test_a_mixed_batch_keeps_message_order_and_matches_the_json_matrix(order: tuple[str, ...]) -> None:
    events = [
        ("e-1", {"Cont_1": 1.0, "Cont_3": 3.0}),
        ("e-2", {"Cont_2": 2.0}),
        ("e-3", {}),
        ("e-4", {"Cont_3": -0.5, "Cont_57": 57.0}),
    ]

    def encoded(fmt: str) -> list[bytes]:
        return [encode_event(i, "s-1", 1_700_000_000_000 + n, f, fmt) for n, (i, f) in enumerate(events)]  # type: ignore[arg-type]

    as_json, as_binary = encoded("json"), encoded("binary")
    mixed = [as_binary[0], b"{poison", as_json[1], as_binary[2], None, as_json[3]]
    expected = decode_batch(as_json, order)
    for values in (as_binary, mixed):
        batch = decode_batch(values, order)
        assert batch.event_ids == ["e-1", "e-2", "e-3", "e-4"] == expected.event_ids
        assert batch.timestamps == expected.timestamps and batch.sensor_ids == expected.sensor_ids
        assert batch.matrix.shape == (4, len(order))
        assert np.array_equal(batch.matrix, expected.matrix, equal_nan=True)
    assert [index for index, _ in decode_batch(mixed, order).poison] == [1, 4]


def test_a_binary_row_with_an_infinity_is_poison_and_the_rest_of_the_batch_goes_on() -> None:
    values = [binary("e-1"), event(event_id="e-2"), binary("e-3", Cont_7=math.inf), binary("e-4")]
    batch = decode_batch(values, ORDER)
    assert batch.event_ids == ["e-1", "e-2", "e-4"]
    assert batch.poison == [
        (2, "features.Cont_7: expected a finite number (|x| <= 3.4028235e+38, float32) or missing, got inf")
    ]
    assert batch.matrix.shape == (3, 3) and np.isfinite(batch.matrix[:, :2]).all()


def test_the_binary_matrix_is_writable_like_the_json_one() -> None:
    assert decode_batch([binary(), binary("e-2")], FEATURE_NAMES).matrix.flags.writeable


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (None, "empty message"),
        (event(event_id=7), "event_id"),
        (event(sensor_id="has space"), "sensor_id"),
        (event(timestamp="2026-01-01T00:00:00Z"), "timestamp"),
        (event(timestamp=1.5), "timestamp"),
        (event(features=[1.0]), "features"),
        (event(features={"Cont_1": "1.5"}), "features.Cont_1"),
        (event(features={"Cont_1": True}), "features.Cont_1"),
        (binary()[:-1], "sensor_id"),
        (binary()[:100], "features"),
        (b"\x00FM\x09" + binary()[4:], "version"),
        (binary(Cont_2=-math.inf), "features.Cont_2"),
        (binary(Cont_3=1e308), "features.Cont_3"),  # finite in float64, infinite to the model
        (event(features={"Cont_1": -1e39}), "features.Cont_1"),
    ],
)
def test_poison_is_reported_with_the_offending_field_and_the_batch_goes_on(
    value: bytes | None, reason: str
) -> None:
    batch = decode_batch([event(), value, event(event_id="e-3")], ORDER)
    assert batch.event_ids == ["e-1", "e-3"]
    [(index, message)] = batch.poison
    assert index == 1 and reason in message


def test_predictions_carry_lineage_and_lines_use_the_event_point_time() -> None:
    batch = decode_batch([event(), event(event_id="e-2")], ORDER)
    lineage = Lineage("spam", "7", "run-1")
    messages, lines, latencies = encode_predictions(batch, [1, 0], [0.75, 0.25], lineage, 1_700_000_000_120)
    first = orjson.loads(messages[0])
    assert first["model_name"] == "spam" and first["model_version"] == "7" and first["run_id"] == "run-1"
    assert first["prediction"] == 1 and first["probability"] == 0.75 and first["latency_ms"] == 120
    assert latencies == [120, 120]
    assert lines[0] == (
        'predictions,role=production,sensor_id=s-1 event_id="e-1",prediction=1i,probability=0.75,'
        "latency_ms=120i,"
        f'model_version="7" {point_time_ns(1_700_000_000_000, "e-1")}'
    )
    # Same sensor and millisecond, different events: different points.
    assert lines[0].rsplit(" ", 1)[1] != lines[1].rsplit(" ", 1)[1]


def test_a_prediction_point_shares_its_raw_events_point_time() -> None:
    raw = event(event_id="sensor-3:42")
    batch = decode_batch([raw], ORDER)
    _, [line], _ = encode_predictions(batch, [1], [0.9], Lineage("spam", "1", "run"), 1_700_000_000_500)
    assert int(line.rsplit(" ", 1)[1]) == event_point(raw, "measurements").time_ns
    assert event_point(raw, "measurements").time_ns // 1_000_000 == 1_700_000_000_000


def test_shadow_lines_differ_from_production_only_in_role_version_and_latency() -> None:
    batch = decode_batch([event(), event(event_id="e-2")], ORDER)
    _, production, _ = encode_predictions(
        batch, [1, 0], [0.75, 0.25], Lineage("spam", "7", "r"), 1_700_000_000_120
    )
    shadow = shadow_lines(batch, [0, 0], [0.4, 0.25], "8", 1_700_000_000_135)
    assert shadow[0] == (
        'predictions,role=shadow,sensor_id=s-1 event_id="e-1",prediction=0i,probability=0.4,'
        f'latency_ms=135i,model_version="8" {point_time_ns(1_700_000_000_000, "e-1")}'
    )
    # The same point time and sensor: another series only by the role tag, so neither overwrites the other.
    for mine, theirs in zip(shadow, production, strict=True):
        assert mine.rsplit(" ", 1)[1] == theirs.rsplit(" ", 1)[1]
        assert mine.split(" ")[0].replace("role=shadow", "role=production") == theirs.split(" ")[0]


def test_column_map_reorders_and_selects_production_columns_for_the_challenger() -> None:
    production = ("Cont_3", "Cont_1", "Cont_2")
    matrix = np.array([[3.0, 1.0, np.nan], [30.0, 10.0, 20.0]])
    columns = column_map(production, ("Cont_2", "Cont_3"))
    assert columns is not None and not columns.identity
    assert np.array_equal(columns.apply(matrix), np.array([[np.nan, 3.0], [20.0, 30.0]]), equal_nan=True)
    # A batch matrix decoded straight in the challenger's order is the same matrix.
    raw = [event(), event(event_id="e-2", features={"Cont_1": 10.0, "Cont_2": 20.0, "Cont_3": 30.0})]
    direct = decode_batch(raw, ("Cont_2", "Cont_3")).matrix
    picked = columns.apply(decode_batch(raw, production).matrix)
    assert np.array_equal(picked, direct, equal_nan=True)


def test_column_map_of_the_same_order_uses_the_matrix_as_it_is() -> None:
    columns = column_map(ORDER, list(ORDER))
    matrix = np.ones((4, 3))
    assert columns is not None and columns.identity and columns.apply(matrix) is matrix
    assert columns.apply(np.empty((0, 3))).shape == (0, 3)


def test_column_map_refuses_a_challenger_reading_a_feature_production_does_not_decode() -> None:
    assert column_map(("Cont_1", "Cont_2"), ("Cont_1", "Cont_57")) is None


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z0-9_.:\-]{1,128}", fullmatch=True),
            st.from_regex(r"[A-Za-z0-9_.:\-]{1,128}", fullmatch=True),
            st.integers(0, 4_102_444_800_000),
            st.sampled_from([0, 1]),
            st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0, 1e-05, 0.1 + 0.2, 5e-324])),
        ),
        max_size=5,
    ),
    st.tuples(st.text(min_size=1), st.text(min_size=1), st.text()),
)
def test_prediction_messages_are_the_json_object_of_each_prediction(
    rows: list[tuple[str, str, int, int, float]], lineage: tuple[str, str, str]
) -> None:
    """The template's bytes parse to the same object as ``orjson.dumps`` of the prediction."""
    scored_ms = 4_102_444_800_123
    messages = prediction_messages(
        [row[:3] for row in rows],
        [row[3] for row in rows],
        [repr(row[4]) for row in rows],
        lineage,
        scored_ms,
    )
    assert [orjson.loads(message) for message in messages] == [
        {
            "event_id": event_id,
            "sensor_id": sensor_id,
            "timestamp": timestamp,
            "prediction": prediction,
            "probability": probability,
            "model_name": lineage[0],
            "model_version": lineage[1],
            "run_id": lineage[2],
            "scored_at": scored_ms,
            "latency_ms": scored_ms - timestamp,
        }
        for event_id, sensor_id, timestamp, prediction, probability in rows
    ]
