"""Line protocol under hostile names and values, round-tripped through the real InfluxDB.

Whatever measurement name, tag and field keys and values a point has (escaping specials, unicode,
empty strings, extreme floats, 64-bit integers), what ``InfluxClient.write`` stores is what InfluxQL
reads back; values that cannot be stored are refused before they reach the server.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fireman.common.influx import InfluxClient, Point, quote_identifier, to_line
from fireman.common.settings import InfluxSettings

pytestmark = pytest.mark.integration

ROUND_TRIP = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Line protocol is line-based: a newline cannot be carried at all (to_line refuses it, tested below).
no_newline = st.characters(exclude_categories=("Cs",), exclude_characters="\n\r")
# Unquoted names and tag values cannot carry what InfluxDB 1.6 does not round-trip: control characters
# (a field key "\t" read back as "val0") and backslashes (stored doubled, or a 400 at the end of a
# name). to_line refuses those (tested below); quoted string field values carry both.
printable = st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\\")
names = st.text(printable, min_size=1, max_size=20)
tag_values = st.text(printable, max_size=40)
texts = st.text(no_newline, max_size=40)
field_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([5e-324, -5e-324, 1.7976931348623157e308, -1.7976931348623157e308, -0.0, 1e-300]),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    texts,
)


@st.composite
def points(draw: st.DrawFn) -> Point:
    # "time" is InfluxDB's own column; a tag and a field of one name would read back renamed.
    tags = draw(st.dictionaries(names.filter(lambda k: k != "time"), tag_values, max_size=4))
    field_keys = names.filter(lambda k: k != "time" and k not in tags)
    fields = draw(st.dictionaries(field_keys, field_values, min_size=1, max_size=5))
    measurement = draw(names) + uuid.uuid4().hex[:8]  # distinct per example: one point to read back
    time_ns = draw(st.integers(0, 4_102_444_800_000)) * 1_000_000 + draw(st.integers(0, 999_999))
    return Point(measurement, fields=fields, time_ns=time_ns, tags=tags)


def same(stored: Any, sent: Any) -> bool:
    if isinstance(sent, float):
        # InfluxDB's JSON prints a whole float without a point (1.0 as 1, 4.6e16 as 46404122492367430):
        # it parses as an int, which as a float is the value written.
        return type(stored) in (int, float) and float(stored) == sent
    return type(stored) is type(sent) and bool(stored == sent)


@ROUND_TRIP
@given(point=points())
def test_a_point_reads_back_exactly_as_written(influx_db: InfluxSettings, point: Point) -> None:
    with InfluxClient(influx_db) as client:
        assert client.write([point]) == 1
        rows = client.query(f"SELECT * FROM {quote_identifier(point.measurement)}")
    assert len(rows) == 1, (to_line(point), rows)
    row = rows[0]
    assert row["time"] == point.time_ns // 1_000_000
    for key, tag in point.tags.items():
        assert row.get(key) == (tag or None), (to_line(point), key, row)
    for key, value in point.fields.items():
        assert same(row.get(key), value), (to_line(point), key, value, row.get(key))


@given(
    st.sampled_from(["measurement", "tag_key", "tag_value", "field_key", "field_value"]),
    st.text(no_newline, max_size=5),
    st.sampled_from(["\n", "\r"]),
)
@settings(max_examples=30, database=None)
def test_a_newline_anywhere_is_refused_before_the_server(where: str, text: str, newline: str) -> None:
    with pytest.raises(ValueError, match="newline"):
        to_line(point_with(where, text + newline + text))


def point_with(where: str, text: str) -> Point:
    """A point carrying ``text`` in one place: measurement, tag key or value, field key or value."""
    parts: dict[str, Any] = {"measurement": "m", "fields": {"f": 1.0}, "tags": {"t": "v"}, "time_ns": 1}
    if where == "measurement":
        parts["measurement"] = text
    elif where == "tag_key":
        parts["tags"] = {text: "v"}
    elif where == "tag_value":
        parts["tags"] = {"t": text}
    elif where == "field_key":
        parts["fields"] = {text: 1.0}
    else:
        parts["fields"] = {"f": text}
    return Point(**parts)


@given(
    st.sampled_from(["measurement", "tag_key", "tag_value", "field_key"]),
    st.text(printable, max_size=5),
    st.one_of(st.just("\\"), st.characters(categories=("Cc",), exclude_characters="\n\r")),
)
@settings(max_examples=40, database=None)
def test_a_name_influxdb_would_alter_is_refused_before_the_server(where: str, text: str, char: str) -> None:
    with pytest.raises(ValueError, match="cannot store"):
        to_line(point_with(where, text + char + text))
    # A string field value is quoted, and carries the same character.
    assert to_line(point_with("field_value", text + char + text)) is not None


@given(st.lists(st.sampled_from([math.nan, math.inf, -math.inf]), min_size=1, max_size=4))
@settings(max_examples=20, database=None)
def test_non_finite_floats_are_absent_values_not_points(values: list[float]) -> None:
    point = Point("m", fields={f"f{i}": v for i, v in enumerate(values)}, time_ns=1)
    assert to_line(point) is None
    mixed = Point("m", fields={"ok": 1.5, **{f"f{i}": v for i, v in enumerate(values)}}, time_ns=1)
    assert to_line(mixed) == "m ok=1.5 1"


def test_an_empty_tag_value_is_omitted_and_an_empty_string_field_is_kept(influx_db: InfluxSettings) -> None:
    point = Point("empties", fields={"s": "", "x": 1}, time_ns=5_000_000, tags={"a": "", "b": "B"})
    assert to_line(point) == 'empties,b=B s="",x=1i 5000000'
    with InfluxClient(influx_db) as client:
        client.write([point])
        [row] = client.query('SELECT * FROM "empties"')
    assert row["s"] == "" and row["x"] == 1 and row["b"] == "B" and row.get("a") is None
