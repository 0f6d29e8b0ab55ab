"""The monitor's join, windows, late labels and offset bookkeeping, without any service."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from fireman.common.confusion import Confusion
from fireman.common.events import encode_event, feature_row, peek_event_id
from fireman.common.schema import FEATURE_NAMES
from fireman.monitoring.offsets import OffsetTracker, Position
from fireman.monitoring.windows import (
    BadMessage,
    Features,
    Prediction,
    WindowBook,
    parse_label,
    parse_prediction,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_book(clock: Clock, released: list[Position], **overrides: float) -> WindowBook:
    options = {
        "window_size": 3,
        "window_seconds": 60.0,
        "join_timeout_s": 10.0,
        "max_unjoined": 1000,
        "label_wait_s": 100.0,
        "max_awaiting": 1000,
        "sample_rows": 1000,
        **overrides,
    }
    return WindowBook(release=released.extend, clock=clock, **options)  # type: ignore[arg-type]


def features(i: int) -> Features:
    return Features(f"e{i}", np.full(len(FEATURE_NAMES), float(i)), ("measurements", 0, i), 0.0)


def prediction(i: int, version: str = "1", timestamp: int | None = None, predicted: int = 1) -> Prediction:
    stamp = 1_000_000 + i if timestamp is None else timestamp
    return Prediction(f"e{i}", stamp, "m", version, predicted, 0.9, ("predictions", 0, i), 0.0)


def score(book: WindowBook, i: int, **kwargs: object) -> list:
    assert book.add_features(features(i)) is None
    p = prediction(i, **kwargs)  # type: ignore[arg-type]
    f = book.add_prediction(p)
    assert f is not None
    return book.add_scored(p, f)


def test_join_works_in_either_order() -> None:
    book = make_book(Clock(), [])
    assert book.add_prediction(prediction(1)) is None
    joined = book.add_features(features(1))
    assert joined is not None and joined.event_id == "e1"
    assert book.add_features(features(2)) is None
    assert book.add_prediction(prediction(2)) is not None
    assert not book.features and not book.predictions


def test_windows_close_at_the_size_and_keep_the_version_apart() -> None:
    book = make_book(Clock(), [])
    assert score(book, 1) == [] and score(book, 2, version="2") == [] and score(book, 3) == []
    closed = score(book, 4)
    assert len(closed) == 1
    window = closed[0]
    assert window.key.version == "1" and window.reason == "size"
    assert window.matrix.shape == (3, len(FEATURE_NAMES))
    assert window.matrix[:, 0].tolist() == [1.0, 3.0, 4.0]
    # Both Kafka positions of every event travel with the window, to be released once it is written.
    assert ("measurements", 0, 4) in window.positions and ("predictions", 0, 4) in window.positions
    assert list(book.open) == [("m", "2")]


def test_a_window_closes_when_event_time_passes_its_span() -> None:
    book = make_book(Clock(), [], window_seconds=1.0)
    score(book, 1, timestamp=5_000)
    closed = score(book, 2, timestamp=6_000)
    assert [c.reason for c in closed] == ["time"]
    assert len(closed[0].matrix) == 1
    assert [w.first_ms for w in book.open.values()] == [6_000]


def test_an_idle_window_closes_on_wall_time_and_stale_halves_are_dropped() -> None:
    clock = Clock()
    released: list[Position] = []
    book = make_book(clock, released)
    score(book, 1)
    book.add_features(features(9))  # never scored
    clock.now = 11.0
    assert book.expire() == []
    assert released == [("measurements", 0, 9)]
    assert book.stats.features_expired == 1
    clock.now = 61.0
    closed = book.expire()
    assert [c.reason for c in closed] == ["idle"] and len(closed[0].matrix) == 1


def test_a_label_counts_once_in_its_predictions_window_even_when_it_comes_first() -> None:
    book = make_book(Clock(), [])
    assert not book.apply_label("e2", 1, ("labels", 0, 0))  # before its prediction
    score(book, 1, predicted=1)
    score(book, 2, predicted=0)
    assert book.apply_label("e1", 1, ("labels", 0, 1))
    assert not book.apply_label("e1", 0, ("labels", 0, 2))  # a duplicate is not counted again
    (window,) = book.take_dirty()
    assert window.confusion == Confusion(tp=1, fn=1)
    assert window.predictions == 2
    assert window.label_positions == [("labels", 0, 1)]
    assert book.take_dirty() == []


def test_late_labels_still_land_in_a_closed_window_until_it_expires() -> None:
    clock = Clock()
    book = make_book(clock, [], label_wait_s=100.0)
    for i in range(4):
        score(book, i)
    clock.now = 50.0
    assert book.apply_label("e0", 1, None)
    assert book.take_dirty()[0].confusion.tp == 1
    clock.now = 200.0
    book.expire()
    assert not book.apply_label("e1", 1, None)
    assert book.stats.labels_expired == 1


def test_confusion_metrics() -> None:
    confusion = Confusion(tp=3, fp=1, tn=4, fn=2)
    metrics = confusion.metrics()
    assert metrics["accuracy"] == pytest.approx(0.7)
    assert metrics["precision"] == pytest.approx(0.75)
    assert metrics["recall"] == pytest.approx(0.6)
    assert metrics["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert math.isnan(Confusion().metrics()["accuracy"])
    assert Confusion(tn=2).metrics()["f1"] == 0.0


def test_parsers_name_the_bad_field() -> None:
    event = {"event_id": "a", "sensor_id": "s", "timestamp": 1}
    event_id, row = feature_row(orjson.dumps({**event, "features": {"Cont_2": 1.5, "Cont_3": None}}))
    assert event_id == "a" and row[1] == 1.5 and np.isnan(row[0]) and np.isnan(row[2])
    with pytest.raises(BadMessage, match=r"features\.Cont_1"):
        feature_row(orjson.dumps({**event, "features": {"Cont_1": "x"}}))
    binary = encode_event("a", "s", 1, {"Cont_2": 1.5, "Cont_3": None}, "binary")
    assert np.array_equal(feature_row(binary)[1], row, equal_nan=True)
    with pytest.raises(
        BadMessage,
        match=r"features\.Cont_7: expected a finite number \(\|x\| <= 3\.4028235e\+38, float32\) or missing, "
        r"got -inf",
    ):
        feature_row(encode_event("a", "s", 1, {"Cont_7": -math.inf}, "binary"))
    with pytest.raises(BadMessage, match="model_version: expected a non-empty string"):
        message = {**event, "prediction": 1, "probability": 0.5, "model_name": "m"}
        parse_prediction(orjson.dumps(message), ("p", 0, 0), 0.0)
    with pytest.raises(BadMessage, match="label: expected 0 or 1"):
        parse_label(orjson.dumps({**event, "label": 2}))


def test_offsets_commit_up_to_the_oldest_message_still_held() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.seen(("t", 0, offset))
    tracker.hold([("t", 0, 2), ("t", 0, 3)])
    assert tracker.committable() == {("t", 0): 2}
    assert tracker.committable() == {}  # nothing moved
    tracker.release([("t", 0, 2)])
    assert tracker.committable() == {("t", 0): 3}
    tracker.release([("t", 0, 3), ("t", 0, 3)])  # releasing twice is harmless
    assert tracker.committable() == {("t", 0): 5}
    assert tracker.held_count() == 0


def raw_features(i: int, features: object, fmt: str = "json") -> Features:
    if fmt == "binary":
        value = encode_event(f"e{i}", "s", 1, features, "binary")  # type: ignore[arg-type]
    else:
        value = orjson.dumps({"event_id": f"e{i}", "sensor_id": "s", "timestamp": 1, "features": features})
    event_id = peek_event_id(value)
    assert event_id == f"e{i}"
    return Features(event_id, None, ("measurements", 0, i), 0.0, value)


def score_raw(book: WindowBook, i: int, features: Features) -> list:
    assert book.add_features(features) is None
    p = prediction(i)
    f = book.add_prediction(p)
    assert f is not None
    return book.add_scored(p, f)


@pytest.mark.parametrize("fmt", ["json", "binary"])
def test_only_the_rows_left_in_a_windows_sample_are_parsed_and_only_when_tested(fmt: str) -> None:
    book = make_book(Clock(), [], window_size=40, sample_rows=5)
    arrived = [raw_features(i, {"Cont_1": float(i)}, fmt) for i in range(40)]
    closed = [window for i, features in enumerate(arrived) for window in score_raw(book, i, features)]
    (window,) = closed
    assert window.events == 40 and len(window.sample) == 5 and window.sample.seen == 40
    assert all(f.row is None for f in arrived)  # nothing parsed while reading
    assert sorted(window.matrix[:, 0]) == sorted(int(f.event_id[1:]) for f in window.sample.items)
    assert sum(f.row is not None for f in arrived) == 5  # the sample, when the worker asks
    # Every event's positions stay with the window, sampled or not: its drift point covers them all.
    assert {("measurements", 0, i) for i in range(40)} <= set(window.positions)
    assert {("predictions", 0, i) for i in range(40)} <= set(window.positions)


def test_a_bad_feature_row_is_left_out_of_the_test_but_counted() -> None:
    released: list[Position] = []
    book = make_book(Clock(), released, window_size=3)
    closed = []
    for i, features in enumerate([{"Cont_1": 1.0}, {"Cont_1": "x"}, {"Cont_2": 2.5}]):
        closed.extend(score_raw(book, i, raw_features(i, features)))
    (window,) = closed
    assert window.events == 3 and window.matrix.shape == (2, len(FEATURE_NAMES))
    assert window.matrix[1, 1] == 2.5 and len(window.probabilities) == 2
    assert [(position, reason[:18]) for position, reason in window.parse.bad] == [
        (("measurements", 0, 1), "features.Cont_1: e")
    ]
    # Held with its window like the others, released when the window's points are written.
    assert ("measurements", 0, 1) in window.positions and released == []


def test_measurement_ids_that_need_a_full_parse() -> None:
    assert peek_event_id(b'{"event_id":"a-1","features":{}}') == "a-1"
    assert peek_event_id(b'{"event_id": "a-1"}') is None  # not the collector's compact form
    assert peek_event_id(b'{"event_id":"a\\"b"}') is None  # an escape
    assert peek_event_id(b'{"features":{}}') is None
    binary = encode_event("a-1", "sensor-9", 1, {"Cont_1": 1.0}, "binary")
    assert peek_event_id(binary) == "a-1"  # read at its fixed offset
    assert peek_event_id(binary[:10]) is None  # header cut short
    assert peek_event_id(binary[:473]) is None  # event_id cut short
    assert peek_event_id(b"\x00FM\x02" + binary[4:]) is None  # a version this reader does not know
