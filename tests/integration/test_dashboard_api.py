"""The dashboard's JSON API against a real InfluxDB and Kafka: every panel's numbers are the seeded ones."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fireman.common.kafka_io import admin_client
from fireman.common.settings import InfluxSettings, KafkaSettings
from fireman.dashboard.app import Dashboard
from fireman.dashboard.lag import measure_lag
from fireman.dashboard.settings import DashboardSettings
from fireman.services.process import wait_until
from tests.conftest import free_port
from tests.support import dashboard_data

pytestmark = pytest.mark.integration

PRODUCED = 50
COMMITTED = 20


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    if not wait_until(predicate, timeout, interval_s=0.2):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def lagging_groups(kafka: KafkaSettings) -> tuple[str, str]:
    """A scorer group 30 messages behind on partition 0, and a sink group that never committed."""
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "acks": "all"})
    for i in range(PRODUCED):
        producer.produce(kafka.topic_measurements, value=b'{"n": %d}' % i, partition=0)
    assert producer.flush(30) == 0
    scorer, sink = f"dash-scorer-{uuid.uuid4().hex[:8]}", f"dash-sink-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(
        {"bootstrap.servers": kafka.bootstrap_servers, "group.id": scorer, "enable.auto.commit": False}
    )
    consumer.commit(offsets=[TopicPartition(kafka.topic_measurements, 0, COMMITTED)], asynchronous=False)
    consumer.close()
    return scorer, sink


def dashboard_settings(kafka: KafkaSettings, influx: InfluxSettings) -> DashboardSettings:
    scorer, sink = lagging_groups(kafka)
    return DashboardSettings(
        kafka=kafka,
        influxdb=influx,
        scorer_group_id=scorer,
        sink_group_id=sink,
        monitor_group_id=f"dash-monitor-{uuid.uuid4().hex[:8]}",
        lag_interval_s=1,
        port=free_port(),
    )


@pytest.fixture
def seeded(influx_db: InfluxSettings) -> dashboard_data.Seeded:
    return dashboard_data.seed(influx_db)


@pytest.fixture
def api(
    kafka_topics: KafkaSettings, influx_db: InfluxSettings, seeded: dashboard_data.Seeded
) -> Iterator[TestClient]:
    settings = dashboard_settings(kafka_topics, influx_db)
    with TestClient(Dashboard(settings).app) as client:
        yield client


def test_measure_lag_counts_uncommitted_partitions_from_the_start(kafka_topics: KafkaSettings) -> None:
    scorer, sink = lagging_groups(kafka_topics)
    groups = {
        scorer: [kafka_topics.topic_measurements],
        sink: [kafka_topics.topic_measurements, kafka_topics.topic_labels],
    }
    lags = {lag.group: lag for lag in measure_lag(admin_client(kafka_topics), groups)}
    assert lags[scorer].lag == PRODUCED - COMMITTED
    assert lags[sink].lag == PRODUCED
    assert lags[scorer].partitions == kafka_topics.partitions
    assert lags[sink].partitions == 2 * kafka_topics.partitions


def test_every_panel_reports_the_seeded_data(api: TestClient, seeded: dashboard_data.Seeded) -> None:
    def lag_recorded() -> bool:
        panel = api.get("/api/panels/lag").json()["panels"]["lag"]
        return len(panel["series"]) == 3 and panel["points"] >= 3

    wait_for(lag_recorded, 30, "the lag sampler to record the three groups")
    body = api.get("/api/dashboard", params={"window": 1800}).json()
    panels = body["panels"]
    assert set(panels) == {"ingest", "predictions", "performance", "shadow", "drift", "model_events", "lag"}
    assert body["bucket_s"] == 10
    assert body["start"] <= seeded.start_s and body["end"] >= seeded.end_s

    ingest = panels["ingest"]
    assert ingest["total"] == dashboard_data.EVENTS
    assert sum(v * body["bucket_s"] for v in ingest["series"][0]["values"]) == pytest.approx(
        dashboard_data.EVENTS
    )

    # Production's answers only: the shadow version's (all spam) are not what the platform served.
    predictions = panels["predictions"]
    assert predictions["total"] == {
        "0": dashboard_data.EVENTS - dashboard_data.SPAM,
        "1": dashboard_data.SPAM,
    }
    assert [s["label"] for s in predictions["series"]] == ["class 0 (ham)/s", "class 1 (spam)/s"]

    performance = panels["performance"]
    assert performance["versions"] == ["1", "2"]
    assert [s["label"] for s in performance["series"]] == ["v1 accuracy", "v1 F1", "v2 accuracy", "v2 F1"]
    assert performance["latest"]["2"] == {"accuracy": pytest.approx(0.93), "f1": pytest.approx(0.88)}

    shadow = panels["shadow"]
    assert panels["shadow"]["title"] == "Shadow vs production"
    assert [s["label"] for s in shadow["series"]] == [
        "production v2 accuracy",
        "production v2 F1",
        "shadow v4 accuracy",
        "shadow v4 F1",
    ]
    live = dashboard_data.LIVE
    assert shadow["latest"] == {
        "champion_version": "2",
        "challenger_version": dashboard_data.SHADOW_VERSION,
        "events": 30 * 18,
        "champion": {
            "accuracy": pytest.approx(live["champion_accuracy"]),
            "f1": pytest.approx(live["champion_f1"]),
        },
        "challenger": {
            "accuracy": pytest.approx(live["challenger_accuracy"]),
            "f1": pytest.approx(live["challenger_f1"]),
        },
    }
    assert shadow["points"] >= 4 * 9  # four series, one comparison every 30 s after the switch

    drift = panels["drift"]
    shares = [v for v in drift["series"][0]["values"] if v is not None]
    assert shares[0] == 0 and shares[-1] == pytest.approx(0.4)
    assert [f["feature"] for f in drift["features"] if f["drifted"]] == list(dashboard_data.DRIFTED)
    assert {f["feature"] for f in drift["features"]} == set(dashboard_data.FEATURES)

    events = panels["model_events"]["events"]
    assert [(e["event"], e["from_version"], e["to_version"]) for e in events] == [
        ("start", "", "1"),
        ("switch", "1", "2"),
        ("refused", "2", "3"),
    ]
    assert body["annotations"] == events
    served = [v for v in panels["model_events"]["series"][0]["values"] if v is not None]
    assert served[0] == 1 and served[-1] == 2

    lag = panels["lag"]
    current = {g["group"].split("-")[1]: g["lag"] for g in lag["current"]["groups"]}
    # The monitor reads measurements, predictions and labels; only measurements has messages.
    assert current == {"scorer": PRODUCED - COMMITTED, "sink": PRODUCED, "monitor": PRODUCED}
    recorded = {s["label"].split("-")[1]: max(v for v in s["values"] if v is not None) for s in lag["series"]}
    assert recorded == current


def test_bad_requests_name_the_offending_item(api: TestClient) -> None:
    response = api.get("/api/dashboard", params={"window": 5})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "window"]
    response = api.get("/api/panels/latency")
    assert response.status_code == 404
    assert "latency" in response.json()["detail"]


def test_empty_database_gives_empty_panels_not_errors(
    kafka_topics: KafkaSettings, influx_db: InfluxSettings
) -> None:
    settings = DashboardSettings(kafka=kafka_topics, influxdb=influx_db, record_lag=False)
    with TestClient(Dashboard(settings).app) as client:
        body = client.get("/api/dashboard").json()
    assert {name: panel["points"] for name, panel in body["panels"].items()} == dict.fromkeys(
        body["panels"], 0
    )
    missing = influx_db.model_copy(update={"database": "never_created_" + uuid.uuid4().hex[:6]})
    with TestClient(Dashboard(DashboardSettings(influxdb=missing, record_lag=False)).app) as client:
        assert client.get("/api/dashboard").status_code == 200


def test_influxdb_down_is_a_clear_503(influx_db: InfluxSettings) -> None:
    down = influx_db.model_copy(update={"port": free_port()})  # nothing listens there
    settings = DashboardSettings(influxdb=down, record_lag=False)
    with TestClient(Dashboard(settings).app) as client:
        response = client.get("/api/dashboard")
        health = client.get("/api/health")
    assert response.status_code == 503
    assert f"127.0.0.1:{down.port}" in response.json()["detail"]
    assert health.status_code == 503


def test_page_and_vendored_chart_library_are_served_locally(influx_db: InfluxSettings) -> None:
    with TestClient(Dashboard(DashboardSettings(influxdb=influx_db, record_lag=False)).app) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "://" not in page.text  # no CDN: every script and style comes from this app
        for asset in (
            "static/vendor/uPlot.iife.min.js",
            "static/vendor/uPlot.min.css",
            "static/dashboard.js",
        ):
            assert client.get(f"/{asset}").status_code == 200, asset


def test_mounted_under_a_prefix(influx_db: InfluxSettings, seeded: dashboard_data.Seeded) -> None:
    """How the collector serves it at /dashboard: the page's relative URLs resolve under the prefix."""
    dashboard = Dashboard(DashboardSettings(influxdb=influx_db, record_lag=False))
    parent = FastAPI()
    parent.mount("/dashboard", dashboard.app)
    try:
        with TestClient(parent) as client:
            redirect = client.get("/dashboard", follow_redirects=False)
            assert redirect.status_code in (307, 308)
            assert redirect.headers["location"].endswith("/dashboard/")
            assert "uPlot.iife.min.js" in client.get("/dashboard/").text
            assert client.get("/dashboard/static/vendor/uPlot.iife.min.js").status_code == 200
            body = client.get("/dashboard/api/dashboard").json()
            assert body["panels"]["ingest"]["total"] == dashboard_data.EVENTS
    finally:
        dashboard.close()
