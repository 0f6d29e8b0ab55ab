"""Line protocol rendering: escaping, absent values and idempotent point identity."""

from __future__ import annotations

import math

import pytest

from fireman.common.influx import Point, format_field_value, quote_identifier, quote_literal, to_line


def test_tags_are_sorted_and_special_characters_escaped() -> None:
    point = Point(
        "my measurement,x", {"field key": 1.5, "event_id": 'a "quoted" \\ id'}, 42, {"z": "1", "a b": "c=d,e"}
    )
    assert to_line(point) == (
        'my\\ measurement\\,x,a\\ b=c\\=d\\,e,z=1 field\\ key=1.5,event_id="a \\"quoted\\" \\\\ id" 42'
    )


def test_non_finite_floats_are_absent_and_a_point_without_fields_is_dropped() -> None:
    assert to_line(Point("m", {"a": math.nan, "b": 2.0}, 1)) == "m b=2.0 1"
    assert to_line(Point("m", {"a": math.inf}, 1)) is None


def test_field_types_render_as_influx_types() -> None:
    assert format_field_value(True) == "true"
    assert format_field_value(3) == "3i"
    assert format_field_value(1e300) == "1e+300"
    assert format_field_value(-0.0) == "-0.0"


def test_empty_tag_values_are_left_out() -> None:
    assert to_line(Point("m", {"v": 1.0}, 5, {"sensor_id": ""})) == "m v=1.0 5"


def test_newlines_are_rejected_rather_than_corrupting_the_batch() -> None:
    with pytest.raises(ValueError, match="newline"):
        to_line(Point("m", {"v": 1.0}, 5, {"sensor_id": "a\nb"}))


def test_influxql_quoting() -> None:
    assert quote_identifier('we"ird') == '"we\\"ird"'
    assert quote_literal("it's") == "'it\\'s'"
