"""The stream scorer against real Kafka, InfluxDB and MLflow: scoring, lineage, replays, hot reload."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from fireman.bench.workload import make_events, produce_events, spambase_rows
from fireman.common.events import encode_event
from fireman.common.kafka_io import admin_client, delete_topics, end_offsets, ensure_topics
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings, InfluxSettings, KafkaSettings, MlflowSettings
from fireman.serving.scorer import Scorer
from fireman.serving.settings import ScorerSettings
from tests.support.scoring import (
    FailsWhenScoring,
    fit_pipeline,
    influx_rows,
    read_topic,
    register_model,
    running,
    scorer_settings,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(dataset_settings: DatasetSettings) -> Any:
    return fit_pipeline(dataset_settings)


@pytest.fixture
def production(mlflow_names: MlflowSettings, pipeline: Any, dataset_settings: DatasetSettings) -> str:
    features = spambase_rows(dataset_settings, 50)[list(FEATURE_NAMES)]
    return register_model(mlflow_names, pipeline, features)


@dataclass(frozen=True)
class Rig:
    """One test's own topics, InfluxDB database and registered model name, and Spambase to feed them."""

    kafka: KafkaSettings
    influx: InfluxSettings
    mlflow: MlflowSettings
    dataset: DatasetSettings

    def scorer(self, **extra: Any) -> ScorerSettings:
        return scorer_settings(self.kafka, self.influx, self.mlflow, **extra)

    def rows(self, count: int) -> pd.DataFrame:
        return spambase_rows(self.dataset, count)

    def points(self, query: str) -> list[dict[str, Any]]:
        return influx_rows(self.influx, query)


@pytest.fixture
def rig(
    kafka_topics: KafkaSettings,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
    dataset_settings: DatasetSettings,
) -> Rig:
    return Rig(kafka_topics, influx_db, mlflow_names, dataset_settings)


def prediction_count(influx: InfluxSettings) -> int:
    rows = influx_rows(influx, "SELECT count(event_id) FROM predictions")
    return int(rows[0]["count"]) if rows else 0


def test_scores_every_event_with_the_production_version(rig: Rig) -> None:
    from fireman.training.settings import TrainingSettings
    from fireman.training.workflow import run_training

    trained = run_training(
        TrainingSettings(mlflow=rig.mlflow, dataset=rig.dataset),
        promote="force",
        params={"n_estimators": 60},
    )
    production, pipeline = trained.version, trained.model
    rows = rig.rows(5000)
    events = make_events(rows)
    poison = [
        b"{not json",
        orjson.dumps({"event_id": "p1", "sensor_id": "s", "timestamp": 1, "features": {"Cont_1": "x"}}),
    ]
    produce_events(rig.kafka, events, extra=poison)

    with running(rig.scorer()) as scorer:
        assert wait_for(lambda: scorer.stats.committed >= len(events) + len(poison), 90), scorer.stats

    messages = read_topic(rig.kafka, rig.kafka.topic_predictions, len(events))
    predictions = {p["event_id"]: p for p in (orjson.loads(m.value()) for m in messages)}
    assert len(messages) == len(events) == len(predictions)
    assert {p["model_version"] for p in predictions.values()} == {production}
    assert {p["model_name"] for p in predictions.values()} == {rig.mlflow.model_name}
    assert all(p["run_id"] for p in predictions.values())
    assert all(m.key().decode() == orjson.loads(m.value())["sensor_id"] for m in messages)

    offline = pipeline.predict(rows[list(FEATURE_NAMES)])
    offline_proba = pipeline.predict_proba(rows[list(FEATURE_NAMES)])[:, 1]
    online = np.array([predictions[e.event_id]["prediction"] for e in events])
    online_proba = np.array([predictions[e.event_id]["probability"] for e in events])
    assert (online == offline).all()
    assert np.allclose(online_proba, offline_proba)

    points = rig.points("SELECT event_id, prediction, model_version, latency_ms FROM predictions")
    assert len(points) == len(events)
    assert {p["event_id"] for p in points} == set(predictions)
    assert {p["model_version"] for p in points} == {production}
    by_id = {p["event_id"]: p for p in points}
    assert all(by_id[e.event_id]["prediction"] == predictions[e.event_id]["prediction"] for e in events)
    assert all(by_id[e.event_id]["time"] == e.timestamp for e in events[:100])

    dead = read_topic(rig.kafka, rig.kafka.topic_dlq, len(poison))
    assert sorted(m.value() for m in dead) == sorted(poison)
    reasons = [dict(m.headers())["error"].decode() for m in dead]
    assert any("invalid JSON" in r for r in reasons)
    assert any("features.Cont_1" in r for r in reasons)


def test_replay_by_another_version_overwrites_instead_of_duplicating(
    rig: Rig, production: str, pipeline: Any
) -> None:
    rows = rig.rows(1000)
    events = make_events(rows, sensors=2)  # many events share a sensor and a millisecond
    produce_events(rig.kafka, events)
    with running(rig.scorer()) as scorer:
        assert wait_for(lambda: scorer.stats.committed >= len(events), 60)
    assert prediction_count(rig.influx) == len(events)

    newer = register_model(rig.mlflow, pipeline, rows[list(FEATURE_NAMES)].head(20))
    # A new group replays the whole topic, as after a lost offset commit, but with the new version.
    with running(rig.scorer()) as scorer:
        assert wait_for(lambda: scorer.stats.committed >= len(events), 60)
    points = rig.points("SELECT event_id, model_version FROM predictions")
    assert len(points) == len(events)
    assert {p["model_version"] for p in points} == {newer}


class Feed:
    """Produces Spambase events in small chunks from a thread, so events flow while the test acts."""

    def __init__(self, kafka: KafkaSettings, rows: pd.DataFrame, chunk: int = 200) -> None:
        self.kafka, self.rows, self.chunk = kafka, rows, chunk
        self.sent: list[str] = []
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        prefix = uuid.uuid4().hex[:8]
        for start in range(0, len(self.rows), self.chunk):
            if self.halt.is_set():
                return
            events = make_events(self.rows.iloc[start : start + self.chunk], prefix=f"{prefix}-{start}")
            produce_events(self.kafka, events)
            self.sent.extend(e.event_id for e in events)
            self.halt.wait(0.05)

    def __enter__(self) -> Feed:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.thread.join(timeout=60)


def versions_in_partition_order(kafka: KafkaSettings, expected: int) -> tuple[set[str], list[list[str]]]:
    messages = read_topic(kafka, kafka.topic_predictions, expected)
    by_partition: dict[int, list[tuple[int, str]]] = {}
    ids = set()
    for message in messages:
        value = orjson.loads(message.value())
        ids.add(value["event_id"])
        by_partition.setdefault(message.partition(), []).append((message.offset(), value["model_version"]))
    return ids, [[v for _, v in sorted(entries)] for entries in by_partition.values()]


def test_alias_move_switches_the_version_live_without_losing_events(
    rig: Rig, production: str, pipeline: Any
) -> None:
    rows = rig.rows(6000)
    settings = rig.scorer(reload_interval_s=0.5, max_batch=200)
    with running(settings) as scorer, Feed(rig.kafka, rows) as feed:
        assert wait_for(lambda: scorer.stats.scored > 500, 60)
        newer = register_model(rig.mlflow, pipeline, rows[list(FEATURE_NAMES)].head(20))
        assert wait_for(lambda: scorer.stats.model_version == newer, 60)
        switched_at = scorer.stats.scored
        assert wait_for(lambda: scorer.stats.scored > switched_at + 500 or not feed.thread.is_alive(), 60)
        feed.thread.join(timeout=60)
        assert wait_for(lambda: scorer.stats.committed >= len(feed.sent), 60)

    ids, versions = versions_in_partition_order(rig.kafka, len(feed.sent))
    assert ids == set(feed.sent)
    for sequence in versions:
        # In each partition, v1 until the switch and the new version from then on.
        assert sequence == sorted(sequence, key=lambda v: v == newer)
    assert any(newer in sequence for sequence in versions)
    assert prediction_count(rig.influx) == len(feed.sent)
    events = rig.points("SELECT * FROM model_events WHERE event = 'switch'")
    assert [(e["from_version"], e["to_version"]) for e in events] == [(production, newer)]
    assert events[0]["load_seconds"] > 0


def test_broken_model_is_refused_and_the_old_version_keeps_serving(rig: Rig, production: str) -> None:
    from sklearn.ensemble import RandomForestClassifier

    rows = rig.rows(2000)
    produce_events(rig.kafka, make_events(rows.head(1000)))
    with running(rig.scorer(reload_interval_s=0.5)) as scorer:
        assert wait_for(lambda: scorer.stats.committed >= 1000, 60)
        wrong = pd.DataFrame(
            rows[list(FEATURE_NAMES[:10])].fillna(0).to_numpy(), columns=[f"f_{i}" for i in range(10)]
        )
        broken = RandomForestClassifier(n_estimators=3, random_state=0).fit(wrong, rows["label"])
        broken_version = register_model(rig.mlflow, broken, wrong)

        def refused() -> list[dict[str, Any]]:
            return rig.points("SELECT * FROM model_events WHERE event = 'refused'")

        assert wait_for(lambda: bool(refused()), 60)
        produce_events(rig.kafka, make_events(rows.tail(1000)))
        assert wait_for(lambda: scorer.stats.committed >= 2000, 60)
        assert scorer.stats.model_version == production

    [event] = refused()
    assert (event["from_version"], event["to_version"]) == (production, broken_version)
    assert "not event features" in event["reason"]
    points = rig.points("SELECT event_id, model_version FROM predictions")
    assert len(points) == 2000
    assert {p["model_version"] for p in points} == {production}


def test_two_scorers_in_one_group_split_the_partitions(rig: Rig, production: str) -> None:
    settings = rig.scorer()
    with running(settings) as first, running(settings) as second:
        assert wait_for(lambda: len(first.assignment()) == len(second.assignment()) == 2, 60)
        events = make_events(rig.rows(8000))
        produce_events(rig.kafka, events)
        assert wait_for(lambda: first.stats.committed + second.stats.committed >= len(events), 90)
        assert first.stats.scored > 0 and second.stats.scored > 0
        assert sorted(first.assignment() + second.assignment()) == [
            (rig.kafka.topic_measurements, p) for p in range(4)
        ]

    messages = read_topic(rig.kafka, rig.kafka.topic_predictions, len(events))
    ids = [orjson.loads(m.value())["event_id"] for m in messages]
    assert len(ids) == len(set(ids)) == len(events)  # no event scored by both
    assert prediction_count(rig.influx) == len(events)


def test_influxdb_outage_keeps_kafka_output_flowing_pauses_then_loses_nothing(
    private_services: Any,
    kafka_topics: KafkaSettings,
    mlflow_names: MlflowSettings,
    production: str,
    dataset_settings: DatasetSettings,
) -> None:
    private_services.start(["influxdb"], on_progress=lambda _: None)
    # Retries at most 0.5 s apart, so the drain after the outage is not waiting out a back-off.
    influx = private_services.settings.influxdb.model_copy(
        update={"database": "scorer_outage", "retry_max_s": 0.5}
    )
    settings = scorer_settings(kafka_topics, influx, mlflow_names, max_batch=200, influx_buffer_points=1000)
    events = make_events(spambase_rows(dataset_settings, 5000))
    with running(settings) as scorer:
        assert wait_for(lambda: bool(scorer.assignment()), 60)
        private_services.stop(["influxdb"], on_progress=lambda _: None)
        produce_events(kafka_topics, events)
        assert wait_for(lambda: scorer.paused, 60)
        # Predictions kept reaching Kafka while InfluxDB was down, up to the buffer bound; nothing committed.
        assert len(read_topic(kafka_topics, kafka_topics.topic_predictions, 1000, timeout_s=10)) >= 1000
        assert scorer.stats.scored < len(events)
        assert scorer.stats.committed == 0
        private_services.start(["influxdb"], on_progress=lambda _: None)
        assert wait_for(lambda: scorer.stats.committed >= len(events), 120)
    assert prediction_count(influx) == len(events)


def test_predictions_kafka_refuses_are_not_committed_and_are_scored_again(rig: Rig, production: str) -> None:
    # Without its predictions topic (and with auto-create off) the broker refuses every prediction,
    # as it would during an outage longer than the delivery timeout.
    delete_topics(rig.kafka, [rig.kafka.topic_predictions])
    settings = rig.scorer(max_batch=100, delivery_timeout_ms=1500)
    events = make_events(rig.rows(400))
    with running(settings) as scorer:
        assert wait_for(lambda: bool(scorer.assignment()), 60)
        produce_events(rig.kafka, events)
        assert wait_for(lambda: scorer.stats.rewinds >= 2, 60), "the refused batch was not retried"
        assert scorer.stats.committed == 0
        assert prediction_count(rig.influx) == 0  # nothing of a refused batch reaches InfluxDB either
        ensure_topics(rig.kafka, [rig.kafka.topic_predictions])
        assert wait_for(lambda: scorer.stats.committed >= len(events), 120)
    messages = read_topic(rig.kafka, rig.kafka.topic_predictions, len(events))
    ids = [orjson.loads(m.value())["event_id"] for m in messages]
    assert sorted(ids) == sorted(e.event_id for e in events)
    assert prediction_count(rig.influx) == len(events)


@pytest.mark.parametrize("onnx", [False, True], ids=["sklearn", "onnx"])
def test_a_value_beyond_float32_is_dead_lettered_and_the_events_after_it_are_scored(
    rig: Rig, production: str, onnx: bool
) -> None:
    # Finite in float64, infinite in float32: sklearn refused the batch (the scorer crash-looped on
    # it), onnxruntime scored an infinity. Both formats can carry it; the collector would refuse it.
    huge = [
        orjson.dumps(
            {"event_id": "huge-1", "sensor_id": "big1", "timestamp": 1, "features": {"Cont_1": 1e308}}
        ),
        encode_event("huge-2", "big1", 1, {"Cont_2": -1e39}, "binary"),
    ]
    before, after = make_events(rig.rows(20)), make_events(rig.rows(30))
    fmt = rig.kafka.measurement_format
    # On the poison's partition (same key) too, behind it, so they are scored only if it is passed.
    produce_events(rig.kafka, before, extra=[*huge, *(e.encode(fmt) for e in after)])

    with running(rig.scorer(onnx=onnx)) as scorer:
        total = len(before) + len(huge) + len(after)
        assert wait_for(lambda: scorer.stats.committed >= total, 60), scorer.stats
        assert scorer.stats.poison == len(huge)

    dead = read_topic(rig.kafka, rig.kafka.topic_dlq, len(huge))
    assert sorted(m.value() for m in dead) == sorted(huge)
    reasons = sorted(dict(m.headers())["error"].decode() for m in dead)
    assert reasons[0].startswith("features.Cont_1: expected a finite number"), reasons
    assert reasons[1].startswith("features.Cont_2: expected a finite number"), reasons
    messages = read_topic(rig.kafka, rig.kafka.topic_predictions, len(before) + len(after))
    scored = {orjson.loads(m.value())["event_id"] for m in messages}
    assert scored == {e.event_id for e in before + after}


def refusing_production(rig: Rig, pipeline: Any, above: float) -> str:
    """A production model that refuses, as scikit-learn does (ValueError), any rows holding a value above
    ``above``; it passes the load check, whose rows are zeros and missing values."""
    model = FailsWhenScoring(pipeline, above=above, error=ValueError)
    features = rig.rows(50)[list(FEATURE_NAMES)]
    return register_model(rig.mlflow, model, features, serialization="cloudpickle")


def test_an_event_the_model_refuses_is_dead_lettered_and_the_batch_around_it_scored(
    rig: Rig, pipeline: Any
) -> None:
    version = refusing_production(rig, pipeline, above=1e6)
    # Within the contract, so only the model can refuse it; behind it on its partition, more events.
    odd = encode_event("odd-1", "big1", 1, {"Cont_1": 1e9}, "binary")
    before, after = make_events(rig.rows(20)), make_events(rig.rows(30))
    produce_events(rig.kafka, before, extra=[odd, *(e.encode(rig.kafka.measurement_format) for e in after)])

    with running(rig.scorer()) as scorer:
        assert wait_for(lambda: scorer.stats.committed >= len(before) + 1 + len(after), 60), scorer.stats
        assert scorer.stats.poison == 1

    dead = read_topic(rig.kafka, rig.kafka.topic_dlq, 1)
    assert [m.value() for m in dead] == [odd]
    reason = dict(dead[0].headers())["error"].decode()
    assert reason.startswith(f"model version {version} refused the event: model bug"), reason
    messages = read_topic(rig.kafka, rig.kafka.topic_predictions, len(before) + len(after))
    assert {orjson.loads(m.value())["event_id"] for m in messages} == {e.event_id for e in before + after}


def test_a_model_that_refuses_every_event_stops_the_scorer_instead_of_dead_lettering_the_stream(
    rig: Rig, pipeline: Any
) -> None:
    # Every Spambase row has a value above 0.5: the model, not the events, is what is wrong.
    refusing_production(rig, pipeline, above=0.5)
    events = make_events(rig.rows(40))
    produce_events(rig.kafka, events)

    stop = threading.Event()
    deadline = threading.Timer(90, stop.set)  # a scorer that does not stop ends here, and the test fails
    deadline.start()
    try:
        with pytest.raises(ValueError, match="model bug"):
            Scorer(rig.scorer()).run(stop)
    finally:
        deadline.cancel()
    topics = [rig.kafka.topic_dlq, rig.kafka.topic_predictions]
    assert sum(end_offsets(admin_client(rig.kafka), topics).values()) == 0
