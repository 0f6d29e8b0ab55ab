"""The monitor against real Kafka, InfluxDB and MLflow, fed by the real stream scorer.

A model is trained once (``fireman.training.workflow.run_training``, which logs the drift reference and the
hold-out); the generator's library turns hold-out rows into events (with drift injected where a test
asks), the scorer scores them, and the monitor writes ``drift``, ``alerts`` and ``performance``.
Events go in 250 at a time, each chunk once the monitor has joined the previous one, as a live
stream arrives: the count windows then hold exactly events 0-999, 1000-1999 and 2000-2999.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fireman.common.influx import InfluxClient, Point
from fireman.common.kafka_io import AckProducer
from fireman.common.schema import FEATURE_NAMES, now_ms
from fireman.common.settings import (
    DatasetSettings,
    InfluxSettings,
    KafkaSettings,
    MlflowSettings,
    StateSettings,
)
from fireman.monitoring.monitor import Monitor
from fireman.monitoring.settings import MonitorSettings
from fireman.serving.scorer import Scorer
from fireman.streaming.settings import DEFAULT_DRIFT_FEATURES, GeneratorSettings
from tests.support.background import on_thread
from tests.support.scoring import scorer_settings, wait_for

pytestmark = pytest.mark.integration

EVENTS = 3000
CHUNK = 250
# The generator's ten default features plus twenty more: 30 of 57 shifted, over the 0.5 default.
SHIFTED = tuple(dict.fromkeys([*DEFAULT_DRIFT_FEATURES, *(f"Cont_{i}" for i in range(1, 30))]).keys())[:30]


@pytest.fixture(scope="module")
def trained(mlflow_service: MlflowSettings, dataset_settings: DatasetSettings) -> dict[str, Any]:
    """One small production model for the module: its settings, hold-out frame and hold-out accuracy."""
    import mlflow

    from fireman.training.settings import TrainingSettings
    from fireman.training.workflow import HOLDOUT_ARTIFACT, run_training

    name = f"monitor-test-{uuid.uuid4().hex[:10]}"
    names = mlflow_service.model_copy(update={"experiment": name, "model_name": name})
    settings = TrainingSettings(mlflow=names, dataset=dataset_settings, n_estimators=40, n_jobs=1)
    outcome = run_training(settings, source="file", promote="force")
    local = mlflow.artifacts.download_artifacts(
        run_id=outcome.run_id, artifact_path=HOLDOUT_ARTIFACT, tracking_uri=names.tracking_uri
    )
    return {"mlflow": names, "holdout": pd.read_parquet(local), "accuracy": outcome.metrics["accuracy"]}


def stream(
    kafka: KafkaSettings,
    influx: InfluxSettings,
    mlflow: MlflowSettings,
    events: list[dict[str, Any]],
    labels: list[dict[str, Any]],
    home: Path,
    expect_windows: int = EVENTS // 1000,
    on_alert: Callable[[Point], None] | None = None,
    **monitor_options: Any,
) -> Monitor:
    """Score ``events`` and monitor them; labels follow once every event is scored (they come late)."""
    import orjson

    scorer = Scorer(scorer_settings(kafka, influx, mlflow))
    settings = MonitorSettings(
        kafka=kafka,
        influxdb=influx,
        mlflow=mlflow,
        group_id=f"m-{uuid.uuid4().hex}",
        state=StateSettings(home=home),
        # Windows here come seconds apart; the default budget would shed some of them.
        drift_cpu_budget=1.0,
        **monitor_options,
    )
    monitor = Monitor(settings, on_alert=on_alert)
    producer = AckProducer(kafka)
    try:
        with on_thread(scorer.run, "scorer", join_s=90), on_thread(monitor.run, "monitor", join_s=90):
            for start in range(0, len(events), CHUNK):
                chunk = events[start : start + CHUNK]
                for event in chunk:
                    producer.produce(
                        kafka.topic_measurements, key=event["sensor_id"].encode(), value=orjson.dumps(event)
                    )
                producer.flush()
                done = start + len(chunk)
                assert wait_for(lambda done=done: monitor.book.stats.joined >= done, 60), monitor.book.stats
            for label in labels:
                producer.produce(
                    kafka.topic_labels, key=label["sensor_id"].encode(), value=orjson.dumps(label)
                )
            producer.flush()
            # Done when every window is through the drift worker, every label is counted, and
            # nothing is held in memory any more: all of it is in InfluxDB.
            assert wait_for(
                lambda: (
                    monitor.stats.windows_tested + monitor.stats.windows_skipped >= expect_windows
                    and monitor.book.stats.labels_applied >= len(labels)
                    and monitor.tracker.held_count() == 0
                ),
                120,
            ), (monitor.stats, monitor.book.stats)
    finally:
        producer.close()
    return monitor


def generated(holdout: pd.DataFrame, dataset: DatasetSettings, **drift: Any) -> tuple[list[dict], list[dict]]:
    from fireman.streaming.generator import generate

    # The hold-out already has the training run's missing values: no second mask.
    spec = GeneratorSettings(missing_rate=0.0, seed=3, data=dataset, **drift)
    return generate(holdout, EVENTS, spec, start_ms=now_ms() - 60_000, step_ms=10)


@dataclass(frozen=True)
class Rig:
    """One test's own topics and InfluxDB database, the module's model, and a state dir for the monitor."""

    kafka: KafkaSettings
    influx: InfluxSettings
    trained: dict[str, Any]
    dataset: DatasetSettings
    home: Path

    def generated(self, **drift: Any) -> tuple[list[dict], list[dict]]:
        return generated(self.trained["holdout"], self.dataset, **drift)

    def stream(self, events: list[dict], labels: list[dict], **options: Any) -> Monitor:
        return stream(self.kafka, self.influx, self.trained["mlflow"], events, labels, self.home, **options)

    def query(self, statement: str) -> list[dict[str, Any]]:
        with InfluxClient(self.influx) as client:
            return client.query(statement)


@pytest.fixture
def rig(
    kafka_topics: KafkaSettings,
    influx_db: InfluxSettings,
    trained: dict[str, Any],
    dataset_settings: DatasetSettings,
    tmp_path: Path,
) -> Rig:
    return Rig(kafka_topics, influx_db, trained, dataset_settings, tmp_path)


WINDOWS = "SELECT * FROM drift WHERE feature = '' ORDER BY time"
PERFORMANCE = "SELECT * FROM performance ORDER BY time"


def test_no_drift_no_alert_and_online_accuracy_matches_the_holdout(rig: Rig) -> None:
    events, labels = rig.generated()
    rig.stream(events, labels)

    windows = rig.query(WINDOWS)
    assert [w["window_size"] for w in windows] == [1000, 1000, 1000]
    assert [w["dataset_drift"] for w in windows] == [0, 0, 0], windows
    assert all(w["share_drifted_features"] < 0.5 for w in windows)
    assert all(w["prediction_drift_score"] is not None for w in windows)
    assert all(0.0 < w["missing_share"] < 0.5 for w in windows)
    assert rig.query("SELECT * FROM alerts") == []
    per_feature = rig.query("SELECT * FROM drift WHERE feature <> ''")
    assert len(per_feature) == 3 * len(FEATURE_NAMES)

    performance = rig.query(PERFORMANCE)
    assert len(performance) == 3
    assert sum(p["n_labelled"] for p in performance) == EVENTS
    assert all(p["label_coverage"] == 1.0 for p in performance)
    online = sum(p["accuracy"] * p["n_labelled"] for p in performance) / EVENTS
    assert abs(online - rig.trained["accuracy"]) <= 0.05, (online, rig.trained["accuracy"])
    assert {p["model_version"] for p in performance} == {w["model_version"] for w in windows}


def test_injected_drift_is_detected_after_the_injection_and_raises_an_alert(rig: Rig) -> None:
    events, labels = rig.generated(drift_after=1000, drift_kind="shift", drift_features=SHIFTED)
    notified: list[Point] = []  # what `fireman monitor` posts to Airflow as an asset event
    rig.stream(events, labels, on_alert=notified.append)

    windows = rig.query(WINDOWS)
    assert [w["dataset_drift"] for w in windows] == [0, 1, 1], windows
    assert windows[0]["share_drifted_features"] < 0.5 <= windows[1]["share_drifted_features"]

    per_feature = rig.query("SELECT drifted, drift_score FROM drift WHERE feature <> '' GROUP BY feature")
    drifted_by_window: dict[int, set[str]] = {}
    for row in per_feature:
        if row["drifted"] == 1:
            drifted_by_window.setdefault(row["time"], set()).add(row["feature"])
    before, first, second = (drifted_by_window.get(w["time"], set()) for w in windows)
    # A few features pass the per-feature test by chance in any window; the shifted ones all do after.
    assert len(before) <= 5, before
    assert set(SHIFTED) <= first and set(SHIFTED) <= second
    assert len((first | second) - set(SHIFTED) - before) <= 3  # the shifted features, not noise

    # The shift also costs accuracy, which may raise a performance alert beside: only drift's counted here.
    alerts = rig.query("SELECT * FROM alerts WHERE kind = 'drift'")
    assert len(alerts) == 1, alerts  # two consecutive drifting windows: the second one raises it
    alert = alerts[0]
    assert alert["time"] == windows[2]["time"]
    assert alert["kind"] == "drift" and alert["consecutive_windows"] == 2
    assert set(SHIFTED) <= set(alert["features"].split(","))
    # The hook saw the alert once it was written, as it is in InfluxDB.
    assert [(p.measurement, p.tags["kind"], p.time_ns // 1_000_000) for p in notified] == [
        ("alerts", "drift", alert["time"])
    ]

    performance = {p["time"]: p for p in rig.query(PERFORMANCE)}
    accuracy = [performance[w["time"]]["accuracy"] for w in windows]
    assert abs(accuracy[0] - rig.trained["accuracy"]) <= 0.05
    assert max(accuracy[1:]) < accuracy[0] - 0.1, accuracy


def test_all_null_feature_and_undersized_window_are_logged_not_fatal(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    events, labels = rig.generated()
    events = events[:260]
    for event in events:
        event["features"].pop("Cont_5", None)
    caplog.set_level(logging.WARNING, logger="monitoring")
    monitor = rig.stream(
        events,
        labels[:260],
        window_size=200,
        min_window_size=100,
        window_seconds=3.0,
        expect_windows=2,
    )

    assert monitor.stats.windows_tested == 1 and monitor.stats.windows_skipped == 1
    assert "Cont_5 left out of the drift test: 0 value(s) in the window (all missing)" in caplog.text
    assert "has 60 events, fewer than the minimum 100 (closed by idle): drift not tested" in caplog.text
    windows = rig.query(WINDOWS)
    assert [w["window_size"] for w in windows] == [200]
    assert windows[0]["tested_features"] == len(FEATURE_NAMES) - 1
    cont_5 = rig.query("SELECT * FROM drift WHERE feature = 'Cont_5'")
    assert len(cont_5) == 1
    assert cont_5[0]["missing_share"] == 1.0
    assert cont_5[0]["drift_score"] is None and cont_5[0]["drifted"] is None
    # Accuracy is still measured for both windows, tested for drift or not.
    assert sum(p["n_labelled"] for p in rig.query(PERFORMANCE)) == 260


def feed(producer: AckProducer, kafka: KafkaSettings, events: list[dict[str, Any]], monitor: Monitor) -> None:
    """Produce ``events`` a chunk at a time, each once ``monitor`` has joined the previous one."""
    import orjson

    joined = monitor.book.stats.joined
    for start in range(0, len(events), CHUNK):
        chunk = events[start : start + CHUNK]
        for event in chunk:
            producer.produce(
                kafka.topic_measurements, key=event["sensor_id"].encode(), value=orjson.dumps(event)
            )
        producer.flush()
        done = joined + start + len(chunk)
        assert wait_for(lambda done=done: monitor.book.stats.joined >= done, 60), monitor.book.stats


def window_starts_ns(influx: InfluxSettings) -> list[int]:
    with InfluxClient(influx) as client:
        return [row["time"] for row in client.query(WINDOWS, epoch="ns")]


def test_a_restarted_monitor_continues_the_drift_run_and_alerts_from_its_onset(rig: Rig) -> None:
    """The first drifting window is seen by one monitor, the second by a new one (K=2, the default)."""
    events, _ = rig.generated(drift_after=1000, drift_kind="shift", drift_features=SHIFTED)
    mlflow = rig.trained["mlflow"]
    settings = MonitorSettings(
        kafka=rig.kafka,
        influxdb=rig.influx,
        mlflow=mlflow,
        group_id=f"m-{uuid.uuid4().hex}",  # both monitors: the second goes on from the first's commits
        state=StateSettings(home=rig.home),
        # Windows here come seconds apart; the default budget would shed some of them.
        drift_cpu_budget=1.0,
    )
    scorer = Scorer(scorer_settings(rig.kafka, rig.influx, mlflow))
    producer = AckProducer(rig.kafka)
    seen: list[Point] = []
    try:
        with on_thread(scorer.run, "scorer", join_s=90):
            first = Monitor(settings, on_alert=seen.append)
            with on_thread(first.run, "monitor", join_s=90):
                feed(producer, rig.kafka, events[:2000], first)
                assert wait_for(
                    lambda: first.stats.windows_tested >= 2 and first.tracker.held_count() == 0, 120
                ), first.stats
            assert [w["dataset_drift"] for w in rig.query(WINDOWS)] == [0, 1]
            assert rig.query("SELECT * FROM alerts") == [] and seen == []

            second = Monitor(settings, on_alert=seen.append)
            with on_thread(second.run, "monitor", join_s=90):
                feed(producer, rig.kafka, events[2000:], second)
                assert wait_for(
                    lambda: second.stats.windows_tested >= 1 and second.tracker.held_count() == 0, 120
                ), second.stats
    finally:
        producer.close()

    assert [w["dataset_drift"] for w in rig.query(WINDOWS)] == [0, 1, 1]
    starts = window_starts_ns(rig.influx)
    with InfluxClient(rig.influx) as client:
        alerts = client.query("SELECT * FROM alerts", epoch="ns")
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert (alert["kind"], alert["time"]) == ("drift", starts[2])
    assert (alert["consecutive_windows"], alert["required_windows"]) == (2, 2)
    assert alert["onset_ns"] == starts[1]  # the window the first monitor saw drift in
    assert [p.time_ns for p in seen] == [starts[2]] and seen[0].fields["onset_ns"] == starts[1]


def test_inverted_labels_raise_a_performance_alert_and_no_drift_alert(rig: Rig) -> None:
    """Concept drift: the features stay as trained, the labels turn against the model after event 1000."""
    events, labels = rig.generated()
    index = {event["event_id"]: i for i, event in enumerate(events)}
    for label in labels:
        if index[label["event_id"]] >= 1000:
            label["label"] = 1 - label["label"]
    seen: list[Point] = []
    monitor = rig.stream(events, labels, on_alert=seen.append)

    assert [w["dataset_drift"] for w in rig.query(WINDOWS)] == [0, 0, 0]
    performance = rig.query(PERFORMANCE)
    assert [p["n_labelled"] for p in performance] == [1000, 1000, 1000]
    assert abs(performance[0]["accuracy"] - rig.trained["accuracy"]) <= 0.05
    assert max(p["accuracy"] for p in performance[1:]) < 0.2, performance

    starts = window_starts_ns(rig.influx)
    with InfluxClient(rig.influx) as client:
        alerts = client.query("SELECT * FROM alerts", epoch="ns")
    assert len(alerts) == 1, alerts  # the second underperforming window raises it; no drift alert
    alert = alerts[0]
    assert (alert["kind"], alert["time"], alert["onset_ns"]) == ("performance", starts[2], starts[1])
    assert (alert["consecutive_windows"], alert["required_windows"], alert["margin"]) == (2, 2, 0.1)
    assert alert["metric"] in ("accuracy", "f1") and alert["n_labelled"] == 1000
    assert alert["holdout"] - alert["value"] > 0.5
    if alert["metric"] == "accuracy":
        assert alert["holdout"] == pytest.approx(rig.trained["accuracy"])
    assert [p.time_ns for p in seen] == [starts[2]] and monitor.alerts.raised == 1
