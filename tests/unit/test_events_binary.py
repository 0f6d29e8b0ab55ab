"""The binary measurement format (``fireman.common.events``): its layout, round trips, and every way
a message can break it, each a BadMessage naming the field."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from fireman.common.events import (
    BadMessage,
    WireEvent,
    decode_event,
    encode_event,
    feature_row,
    is_binary,
    peek_event_id,
)
from fireman.common.schema import FEATURE_NAMES, FLOAT32_MAX, MAX_EPOCH_MS, MIN_EPOCH_MS

T = 1_700_000_000_000


def binary(
    event_id: str = "e-1", sensor_id: str = "s-1", timestamp: int = T, **features: float | None
) -> bytes:
    return encode_event(event_id, sensor_id, timestamp, features, "binary")


def raw(
    timestamp: int = T,
    n: int = 57,
    event_id: bytes = b"e-1",
    sensor_id: bytes = b"s-1",
    values: list[float] | None = None,
    prefix: bytes = b"\x00FM\x01",
) -> bytes:
    """A message laid out by hand from the documented table, so the tests check the layout itself."""
    values = values if values is not None else [math.nan] * n
    header = prefix + struct.pack("<qHBB", timestamp, n, len(event_id), len(sensor_id))
    return header + struct.pack(f"<{len(values)}d", *values) + event_id + sensor_id


def test_the_layout_is_the_documented_one() -> None:
    value = binary("ev", "sen", T, Cont_1=1.5, Cont_57=-2.0, Cont_3=None)
    assert value[:4] == b"\x00FM\x01"
    assert struct.unpack_from("<qHBB", value, 4) == (T, 57, 2, 3)
    values = struct.unpack_from("<57d", value, 16)
    assert values[0] == 1.5 and values[56] == -2.0 and all(math.isnan(v) for v in values[1:56])
    assert value[16 + 8 * 57 :] == b"evsen" and len(value) == 16 + 8 * 57 + 2 + 3
    assert value == raw(event_id=b"ev", sensor_id=b"sen", values=list(values))


@pytest.mark.parametrize("fmt", ["binary", "json"])
@pytest.mark.parametrize(
    ("event_id", "sensor_id", "features"),
    [
        ("e", "s", {}),  # 1-character ids, every feature missing
        ("x" * 128, "y" * 128, {name: float(i) for i, name in enumerate(FEATURE_NAMES)}),  # 128, all present
        (
            "e.1:x-_",
            "s-1",
            {"Cont_1": -FLOAT32_MAX, "Cont_2": None, "Cont_9": -1e-300, "Cont_57": FLOAT32_MAX},
        ),
        ("e-2", "s-2", {"Cont_5": 3}),  # an integer is a number
    ],
)
def test_encode_then_decode_is_the_identity_in_both_formats(
    fmt: str, event_id: str, sensor_id: str, features: dict[str, float | None]
) -> None:
    for timestamp in (MIN_EPOCH_MS, T, MAX_EPOCH_MS):
        value = encode_event(event_id, sensor_id, timestamp, features, fmt)  # type: ignore[arg-type]
        assert is_binary(value) == (fmt == "binary")
        present = {name: v for name, v in features.items() if v is not None}
        assert decode_event(value) == WireEvent(event_id, sensor_id, timestamp, present)
        assert peek_event_id(value) == event_id
        row_id, row = feature_row(value)
        expected = [math.nan if features.get(name) is None else features[name] for name in FEATURE_NAMES]
        assert row_id == event_id and np.array_equal(row, expected, equal_nan=True)


def test_wire_event_encodes_in_either_format_and_keeps_to_json() -> None:
    event = WireEvent("e-1", "s-1", T, {"Cont_1": 0.5})
    assert event.to_json() == event.encode("json") and event.to_json().startswith(b"{")
    assert decode_event(event.encode("binary")) == decode_event(event.to_json()) == event


GOOD = raw()


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (None, "empty message (null value)"),
        (b"\x00", "magic: message truncated"),
        (b"\x00F", "magic: message truncated"),
        (b"\x00FM", "version: message truncated"),
        (b"\x00XM\x01" + GOOD[4:], "magic: expected"),
        (b"\x00FM\x02" + GOOD[4:], "version: binary measurement format version 2; this reader understands 1"),
        (b"\x00FM\x00" + GOOD[4:], "version: binary measurement format version 0"),
        (GOOD[:4], "timestamp: message truncated at 4 bytes"),
        (GOOD[:11], "timestamp: message truncated"),
        (GOOD[:12], "n (feature count): message truncated"),
        (GOOD[:13], "n (feature count): message truncated"),
        (GOOD[:14], "event_id length: message truncated"),
        (GOOD[:15], "sensor_id length: message truncated"),
        (GOOD[:16], "features: message truncated at 16 bytes"),
        (GOOD[:471], "features: message truncated"),
        (GOOD[:472], "event_id: message truncated at 472 bytes"),
        (GOOD[:474], "event_id: message truncated"),
        (GOOD[:475], "sensor_id: message truncated"),
        (GOOD[:-1], "sensor_id: message truncated"),
        (GOOD + b"\x00", "sensor_id: followed by 1 extra byte(s)"),
        (GOOD + b"trailing", "sensor_id: followed by 8 extra byte(s)"),
        (raw(n=56), "n (feature count): expected 57, got 56"),
        (raw(n=58), "n (feature count): expected 57, got 58"),
        (raw(n=0, values=[]), "n (feature count): expected 57, got 0"),
        (raw(timestamp=-1), "timestamp: expected epoch milliseconds, got -1"),
        (raw(timestamp=MAX_EPOCH_MS + 1), "timestamp: expected epoch milliseconds"),
        (raw(event_id=b""), "event_id: expected an identifier string, got ''"),
        (raw(sensor_id=b""), "sensor_id: expected an identifier string"),
        (raw(event_id=b"x" * 129), "event_id: expected an identifier string"),
        (raw(event_id=b"has space"), "event_id: expected an identifier string"),
        (raw(sensor_id="é".encode()), "sensor_id: expected an identifier string"),
        (raw(event_id=b"\xff\xfe"), "event_id: expected an identifier string"),
        (
            raw(values=[1.0] * 6 + [math.inf] + [1.0] * 50),
            "features.Cont_7: expected a finite number (|x| <= 3.4028235e+38, float32) or missing, got inf",
        ),
        (raw(values=[-math.inf] * 57), "features.Cont_1: expected a finite number (|x| <= 3.4028235e+38"),
        # Finite in float64 but infinite in the models' float32.
        (
            raw(values=[1.0] * 56 + [1e308]),
            "features.Cont_57: expected a finite number (|x| <= 3.4028235e+38",
        ),
        (raw(values=[-1e39] + [1.0] * 56), "features.Cont_1: expected a finite number (|x| <= 3.4028235e+38"),
        (
            b'{"event_id":"e","sensor_id":"s","timestamp":1,"features":{"Cont_3":1e308}}',
            "features.Cont_3: expected a finite number",
        ),
        (
            b'{"event_id":"e","sensor_id":"s","timestamp":1,"features":{"Cont_4":-3.5e38}}',
            "features.Cont_4: expected a finite number",
        ),
    ],
)
def test_a_broken_binary_message_is_a_bad_message_naming_the_field(value: bytes | None, field: str) -> None:
    for read in (decode_event, feature_row):
        with pytest.raises(BadMessage) as caught:
            read(value)
        assert str(caught.value).startswith(field), str(caught.value)


def test_nan_of_any_bit_pattern_is_missing() -> None:
    value = bytearray(raw(values=[1.0] * 57))
    value[16:24] = b"\x01\x00\x00\x00\x00\x00\xf8\xff"  # a negative quiet NaN with a payload
    assert "Cont_1" not in decode_event(bytes(value)).features
    assert math.isnan(feature_row(bytes(value))[1][0])


def test_a_binary_message_is_told_from_json_by_its_first_byte() -> None:
    assert (
        is_binary(GOOD)
        and not is_binary(b'{"event_id": "e"}')
        and not is_binary(b" {")
        and not is_binary(b"")
    )
    with pytest.raises(BadMessage, match="invalid JSON"):
        decode_event(b"")
