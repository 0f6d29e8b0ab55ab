"""The collector against real Kafka: accepted input lands on the topics, rejected input never does.

One collector (and one token-protected twin) serves the whole module on topics of its own. Each
bad-input test posts its request, then a marker event, and reads the topic up to the marker: the
marker must be the only new message, so nothing of the rejected request reached Kafka.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import requests

from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import KafkaSettings
from fireman.serving.codec import decode_batch
from fireman.streaming.collector import running
from fireman.streaming.settings import CollectorSettings
from fireman.streaming.sink import event_point
from tests.conftest import REPO_ROOT, free_port, own_topics
from tests.integration.test_ingest_support import TopicReader, message_value

pytestmark = pytest.mark.integration

LEGACY_CSV = REPO_ROOT.parent / "shared" / "data" / "spambase_test_with_missing.csv"
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def topics(kafka_service: KafkaSettings) -> Iterator[KafkaSettings]:
    with own_topics(kafka_service) as settings:
        yield settings


@pytest.fixture(scope="module")
def client(topics: KafkaSettings) -> Iterator[httpx.Client]:
    settings = CollectorSettings(port=free_port(), kafka=topics, max_batch=50, max_body_bytes=64 * 1024)
    with running(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def secured(topics: KafkaSettings) -> Iterator[httpx.Client]:
    settings = CollectorSettings(port=free_port(), kafka=topics, token=TOKEN)
    with running(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def measurements(topics: KafkaSettings) -> Iterator[TopicReader]:
    reader = TopicReader(topics, topics.topic_measurements)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def labels(topics: KafkaSettings) -> Iterator[TopicReader]:
    reader = TopicReader(topics, topics.topic_labels)
    yield reader
    reader.close()


def event(sensor: str = "s-1", **features: float | None) -> dict:
    return {"sensor_id": sensor, "features": features or {"Cont_1": 0.5}}


def assert_nothing_reaches_kafka(
    client: httpx.Client, reader: TopicReader, path: str, bad: Callable[[], Any]
) -> Any:
    """Run ``bad`` (a rejected request), then post a marker: the marker must be the only new message."""
    reader.catch_up()
    seen = len(reader.messages)
    result = bad()
    marker = f"marker-{uuid.uuid4().hex}"
    if path == "/v1/labels":
        payload: dict[str, Any] = {
            "event_id": marker,
            "label": 0,
            "sensor_id": "s-1",
            "timestamp": 1_769_860_800_000,
        }
    else:
        payload = {**event(), "event_id": marker}
    response = client.post("/v1/labels" if path == "/v1/labels" else "/v1/events", json=payload)
    assert response.status_code == 202, response.text
    reader.read_until(lambda values: any(v["event_id"] == marker for v in values), 30, "the marker")
    reader.catch_up()
    fresh = [message_value(message.value)["event_id"] for message in reader.messages[seen:]]
    assert fresh == [marker], f"a rejected request reached Kafka: {fresh}"
    return result


def test_single_and_batch_events_reach_kafka_with_ids_and_times(
    client: httpx.Client, measurements: TopicReader
) -> None:
    single = client.post("/v1/events", json=event("s-1", Cont_1=1.5, Cont_2=None))
    given = {
        "event_id": "given-id-1",
        "sensor_id": "s-2",
        "timestamp": "2026-01-31T12:00:00Z",
        "features": {"Cont_57": 12},
    }
    batch = client.post("/v1/events", json=[given, event("s-1", Cont_3=0.0)])
    assert single.status_code == 202 and batch.status_code == 202, (single.text, batch.text)
    ids = single.json()["event_ids"] + batch.json()["event_ids"]
    assert batch.json() == {"accepted": 2, "event_ids": ["given-id-1", ids[2]]}
    measurements.read_until(lambda values: {v["event_id"] for v in values} >= set(ids), 30, "the 3 events")
    by_id = {message["event_id"]: message for message in measurements.values()}
    key_by_id = {message_value(m.value)["event_id"]: m.key for m in measurements.messages}
    assert by_id[ids[0]]["features"] == {"Cont_1": 1.5}  # null is absent, never 0
    assert by_id["given-id-1"] == {
        "event_id": "given-id-1",
        "sensor_id": "s-2",
        "timestamp": 1_769_860_800_000,
        "features": {"Cont_57": 12.0},
    }
    assert by_id[ids[2]]["features"] == {"Cont_3": 0.0}  # a real zero stays
    assert key_by_id["given-id-1"] == b"s-2"
    uuid.UUID(ids[0])
    # Collector-assigned times of one sensor never repeat, so InfluxDB points cannot collide.
    assert by_id[ids[0]]["timestamp"] != by_id[ids[2]]["timestamp"]


def test_labels_reach_the_labels_topic(client: httpx.Client, labels: TopicReader) -> None:
    label = {"event_id": "ev-1", "label": 1, "sensor_id": "s-1", "timestamp": 1_769_860_800_000}
    response = client.post("/v1/labels", json=[label, {**label, "event_id": "ev-2", "label": 0}])
    assert response.status_code == 202, response.text
    labels.read_until(lambda values: len(values) >= 2, 30, "the labels")
    assert labels.values()[:2] == [label, {**label, "event_id": "ev-2", "label": 0}]


def test_legacy_endpoint_accepts_the_original_generators_posts(
    client: httpx.Client, measurements: TopicReader
) -> None:
    with LEGACY_CSV.open() as handle:
        rows = [row for _, row in zip(range(5), csv.DictReader(handle), strict=False)]
    sent = []
    for row in rows:
        # What the FIREMAN generator does: drop missing values, post json.dumps without a content type.
        body = {name: float(value) for name, value in row.items() if value != ""}
        response = requests.post(
            f"{client.base_url}/FIREMAN/SPAM".replace("//FIREMAN", "/FIREMAN"),
            data=json.dumps(body),
            timeout=30,
        )
        assert response.status_code == 202, response.text
        assert "content-type" not in {k.lower() for k in response.request.headers}
        sent.append((response.json()["event_ids"][0], body))
    ids = {event_id for event_id, _ in sent}
    measurements.read_until(lambda values: ids <= {v["event_id"] for v in values}, 30, "the legacy events")
    by_id = {v["event_id"]: v for v in measurements.values()}
    for event_id, body in sent:
        assert by_id[event_id]["sensor_id"] == "legacy"
        assert by_id[event_id]["features"] == body
        assert len(body) < 57  # these rows do have missing values, and they stay absent


BAD_REQUESTS = [
    pytest.param(b'[{"sensor_id": "s-1", "features": {', 400, "malformed JSON", None, id="malformed-json"),
    pytest.param(
        json.dumps([event(), {"sensor_id": "s-1", "features": {"Cont_99": 1.0}}]).encode(),
        422,
        "unknown feature name 'Cont_99'",
        (1, "features.Cont_99"),
        id="unknown-feature",
    ),
    pytest.param(
        json.dumps([event(), event(), {"sensor_id": "s-1", "features": {"Cont_4": "high"}}]).encode(),
        422,
        "valid number",
        (2, "features.Cont_4"),
        id="non-numeric",
    ),
    pytest.param(
        b'[{"sensor_id": "s-1", "features": {"Cont_1": 1.0}},'
        b' {"sensor_id": "s-1", "features": {"Cont_5": NaN}}]',
        422,
        "finite number",
        (1, "features.Cont_5"),
        id="nan",
    ),
    pytest.param(
        b'{"sensor_id": "s-1", "features": {"Cont_6": Infinity}}',
        422,
        "finite number",
        (0, "features.Cont_6"),
        id="infinity",
    ),
    pytest.param(
        # Finite in float64, infinite in the models' float32: accepted, it crash-looped the scorer.
        b'[{"sensor_id": "s-1", "features": {}}, {"sensor_id": "big1", "event_id": "huge-1",'
        b' "features": {"Cont_1": 1e308}}]',
        422,
        "finite number in float32",
        (1, "features.Cont_1"),
        id="beyond-float32",
    ),
    pytest.param(
        json.dumps([event(), {**event(), "timestamp": "yesterday"}]).encode(),
        422,
        "not RFC 3339",
        (1, "timestamp"),
        id="bad-timestamp",
    ),
    pytest.param(
        json.dumps([event(), {**event(), "timestamp": 1_769_860_800_000_000_000}]).encode(),  # ns, not ms
        422,
        "outside 1970..2100",
        (1, "timestamp"),
        id="timestamp-in-nanoseconds",
    ),
    pytest.param(b"[]", 422, "empty array", None, id="empty-array"),
    pytest.param(json.dumps([event()] * 51).encode(), 413, "limit is 50", None, id="too-many-events"),
    pytest.param(
        json.dumps([event(**{f"Cont_{i}": 0.123456789012345 for i in range(1, 58)})] * 45).encode(),
        413,
        "byte limit",
        None,
        id="body-too-large",
    ),
]


@pytest.mark.parametrize(("body", "status", "message", "where"), BAD_REQUESTS)
def test_bad_events_are_rejected_and_never_reach_kafka(
    client: httpx.Client,
    measurements: TopicReader,
    body: bytes,
    status: int,
    message: str,
    where: tuple[int, str] | None,
) -> None:
    response = assert_nothing_reaches_kafka(
        client,
        measurements,
        "/v1/events",
        lambda: client.post("/v1/events", content=body, headers={"content-type": "application/json"}),
    )
    assert response.status_code == status, response.text
    detail = response.json()
    assert message in detail["detail"]
    if where is not None:
        item, field = where
        assert {"item": item, "field": field} in [
            {"item": e["item"], "field": e["field"]} for e in detail["errors"]
        ]
        assert f"event {item}, field {field}" in detail["detail"]


@pytest.mark.parametrize(
    ("label", "field", "message"),
    [
        pytest.param({"label": 2}, "label", "less than or equal to 1", id="label-2"),
        pytest.param({"label": -1}, "label", "greater than or equal to 0", id="label-negative"),
        pytest.param({"label": True}, "label", "valid integer", id="label-bool"),
        pytest.param(
            {"timestamp": "2026-01-31T12:00:00"}, "timestamp", "no UTC offset", id="label-naive-time"
        ),
    ],
)
def test_bad_labels_are_rejected_and_never_reach_kafka(
    client: httpx.Client, labels: TopicReader, label: dict, field: str, message: str
) -> None:
    good = {"event_id": "ev-9", "label": 0, "sensor_id": "s-1", "timestamp": 1_769_860_800_000}
    response = assert_nothing_reaches_kafka(
        client, labels, "/v1/labels", lambda: client.post("/v1/labels", json=[good, {**good, **label}])
    )
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert errors[0]["item"] == 1 and errors[0]["field"] == field and message in errors[0]["msg"]
    assert f"label 1, field {field}" in response.json()["detail"]


def test_legacy_endpoint_rejects_unknown_and_non_numeric_features(
    client: httpx.Client, measurements: TopicReader
) -> None:
    def post_bad() -> list[httpx.Response]:
        return [
            client.post("/FIREMAN/SPAM", content=json.dumps({"Cont_1": 0.1, "Cont_77": 1})),
            client.post("/FIREMAN/SPAM", content=json.dumps({"Cont_1": "x"})),
            client.post("/FIREMAN/SPAM", content=b"{not json"),
        ]

    unknown, non_numeric, malformed = assert_nothing_reaches_kafka(
        client, measurements, "/FIREMAN/SPAM", post_bad
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "features.Cont_77"
    assert non_numeric.status_code == 422 and "features.Cont_1" in non_numeric.json()["detail"]
    assert malformed.status_code == 400


def test_writes_need_the_bearer_token_when_one_is_set(
    secured: httpx.Client, measurements: TopicReader
) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {TOKEN}"}):
        for path in ("/v1/events", "/v1/labels", "/FIREMAN/SPAM"):
            response = secured.post(path, json=event(), headers=headers)
            assert response.status_code == 401, (path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
    assert secured.get("/healthz").status_code == 200  # probes stay open
    ok = secured.post("/v1/events", json=event(), headers={"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 202, ok.text
    event_id = ok.json()["event_ids"][0]
    measurements.read_until(lambda values: any(v["event_id"] == event_id for v in values), 30, "the event")


def test_probes_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/events", "/v1/labels", "/FIREMAN/SPAM", "/healthz", "/readyz"} <= set(spec["paths"])
    body = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/EventBody"} in body["anyOf"]
    event_schema = spec["components"]["schemas"]["EventBody"]
    assert set(event_schema["required"]) == {"sensor_id", "features"}


@pytest.mark.parametrize("measurement_format", [None, "json"])
def test_the_collector_writes_the_configured_measurement_format_and_the_sink_and_scorer_read_it(
    topics: KafkaSettings,
    measurements: TopicReader,
    monkeypatch: pytest.MonkeyPatch,
    measurement_format: str | None,
) -> None:
    """Unset, the collector writes binary measurements. ``json`` is forced in the second case because it
    is the way back for consumers that cannot read the binary format: the switch must keep working
    although nothing else runs with it. Either way the sink's and the scorer's decoders read the event
    (the sink and scorer services reading binary end to end: test_ingest_pipeline, test_scorer_stream)."""
    if measurement_format is None:
        monkeypatch.delenv("FIREMAN_KAFKA_MEASUREMENT_FORMAT", raising=False)
    else:
        monkeypatch.setenv("FIREMAN_KAFKA_MEASUREMENT_FORMAT", measurement_format)
    # The format as the entrypoint reads it from the environment, on this module's topics.
    kafka = topics.model_copy(update={"measurement_format": KafkaSettings().measurement_format})
    event_id = f"fmt-{uuid.uuid4().hex}"
    body = {
        "event_id": event_id,
        "sensor_id": "s-9",
        "timestamp": 1_769_860_800_000,
        "features": {"Cont_2": 2.5},
    }
    with running(CollectorSettings(port=free_port(), kafka=kafka)) as url, httpx.Client(base_url=url) as http:
        assert http.post("/v1/events", json=body).status_code == 202
    measurements.read_until(lambda values: any(v["event_id"] == event_id for v in values), 30, "the event")
    [raw] = [m.value for m in measurements.messages if message_value(m.value)["event_id"] == event_id]

    assert raw.startswith(b"\x00FM\x01" if measurement_format is None else b"{")
    batch = decode_batch([raw], FEATURE_NAMES)
    assert batch.event_ids == [event_id] and not batch.poison and batch.matrix[0, 1] == 2.5
    assert np.isnan(np.delete(batch.matrix[0], 1)).all()
    point = event_point(raw, "measurements")
    assert point.fields == {"Cont_2": 2.5, "event_id": event_id} and point.tags == {"sensor_id": "s-9"}
