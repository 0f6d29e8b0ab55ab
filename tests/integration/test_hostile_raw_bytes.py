"""Raw bytes written straight to ``measurements``: poison goes to the DLQ, the good events are all stored.

Bypassing the collector, a producer interleaves well-formed events, alternately binary and JSON (both
formats share the topic), with invalid UTF-8, truncated JSON, wrong schemas, broken binary messages
(cut short, an unknown version, an infinity), an empty value and a tombstone. The sink and the scorer
each dead-letter every poison message with the reason in a header, and every good event still gets
its raw point and its prediction point, once.
"""

from __future__ import annotations

import collections
import math
import uuid
from collections.abc import Iterator

import pytest

from fireman.common.events import WireEvent, encode_event
from fireman.common.influx import InfluxClient
from fireman.common.kafka_io import AckProducer
from fireman.common.measurements import PRODUCTION_ONLY
from fireman.common.schema import FEATURE_NAMES, now_ms
from fireman.common.settings import InfluxSettings, KafkaSettings, MlflowSettings
from fireman.serving.scorer import Scorer
from fireman.streaming.generator import synthetic_frame
from tests.integration.faults_support import register_synthetic_model, wait_for
from tests.integration.test_ingest_support import influx_count, sink_running
from tests.support.scoring import read_topic, running, scorer_settings

pytestmark = pytest.mark.integration

GOOD = 600
POISON: list[bytes | None] = [
    b"\xff\xfe\xfd not utf-8 \xc3\x28",
    b'{"event_id": "t-1", "sensor_id": "s", "timestamp": 1767225600000, "features": {"Cont_1": 1.',
    b'{"event_id": "w-1", "sensor_id": "s", "timestamp": "yesterday", "features": {}}',
    b'{"event_id": "w-2", "sensor_id": "s", "timestamp": 1767225600000, "features": {"Cont_1": "x"}}',
    b'{"event_id": "w-3", "sensor_id": "s", "timestamp": 1767225600000, "features": [1, 2, 3]}',
    b'{"id": 1, "value": 2}',
    b"[1, 2, 3]",
    b"null",
    b"",
    None,  # a tombstone
    encode_event("b-1", "s", 1767225600000, {"Cont_1": 1.0}, "binary")[:-3],
    b"\x00FM\x09" + encode_event("b-2", "s", 1767225600000, {"Cont_1": 1.0}, "binary")[4:],
    encode_event("b-3", "s", 1767225600000, {"Cont_1": math.inf}, "binary"),
]


def good_events(count: int) -> list[WireEvent]:
    frame = synthetic_frame(3).head(count)
    start = now_ms()
    prefix = uuid.uuid4().hex[:6]
    return [
        WireEvent(
            event_id=f"{prefix}-{i}",
            sensor_id=f"sensor-{i % 4}",
            timestamp=start + i,
            features={name: float(row[name]) for name in FEATURE_NAMES},
        )
        for i, (_, row) in enumerate(frame.iterrows())
    ]


@pytest.fixture
def scorer_running(
    kafka_topics: KafkaSettings, influx_db: InfluxSettings, mlflow_names: MlflowSettings
) -> Iterator[Scorer]:
    register_synthetic_model(mlflow_names)
    with running(scorer_settings(kafka_topics, influx_db, mlflow_names, max_batch=100)) as scorer:
        yield scorer


def test_poison_goes_to_the_dlq_and_every_good_event_is_stored_and_scored_once(
    kafka_topics: KafkaSettings, influx_db: InfluxSettings, scorer_running: Scorer
) -> None:
    events = good_events(GOOD)
    producer = AckProducer(kafka_topics)
    try:
        step = GOOD // len(POISON)
        topic = kafka_topics.topic_measurements
        for i, event in enumerate(events):
            value = event.encode("binary" if i % 2 else "json")
            producer.produce(topic, key=event.sensor_id.encode(), value=value)
            if i % step == 0 and i // step < len(POISON):
                producer.produce(topic, key=b"hostile", value=POISON[i // step])
        producer.flush()
    finally:
        producer.close()

    with sink_running(kafka_topics, influx_db) as sink_stats:
        wait_for(
            lambda: (
                influx_count(influx_db, "measurements") >= GOOD
                and influx_count(influx_db, "predictions", PRODUCTION_ONLY) >= GOOD
            ),
            120,
            "every good event's raw and prediction points",
        )
        wait_for(lambda: sink_stats.dead_lettered >= len(POISON), 30, "the sink's dead letters")
    wait_for(lambda: scorer_running.stats.poison >= len(POISON), 30, "the scorer's dead letters")

    dlq = read_topic(kafka_topics, kafka_topics.topic_dlq, 2 * len(POISON), timeout_s=60)
    by_value = collections.Counter(m.value() or b"" for m in dlq)
    for value in POISON:
        assert by_value[value or b""] >= 2, f"{value!r} not dead-lettered by both the sink and the scorer"
    writers: collections.Counter[bytes] = collections.Counter()
    for message in dlq:
        headers = dict(message.headers() or [])
        assert headers.get("error"), f"a dead letter without its reason: {message.value()!r}"
        assert headers["source-topic"] == kafka_topics.topic_measurements.encode()
        assert int(headers["source-offset"]) >= 0 and int(headers["source-partition"]) >= 0
        writers[headers["dead-lettered-by"]] += 1
    assert writers == {b"sink": len(POISON), b"scorer": len(POISON)}
    assert len(dlq) == 2 * len(POISON), [m.value() for m in dlq]

    ids = {e.event_id for e in events}
    with InfluxClient(influx_db) as client:
        for measurement, where in (("measurements", ""), ("predictions", f" WHERE {PRODUCTION_ONLY}")):
            rows = client.query(f'SELECT "event_id" FROM "{measurement}"{where}')
            counts = collections.Counter(str(row["event_id"]) for row in rows)
            assert set(counts) == ids and max(counts.values()) == 1, measurement
    assert scorer_running.stats.scored == GOOD
