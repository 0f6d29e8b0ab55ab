"""Shadow scoring against real Kafka, InfluxDB and MLflow: the challenger alias scored beside production.

Production answers on Kafka and in InfluxDB (``role=production``); the challenger only in InfluxDB
(``role=shadow``), for the same events, and never disturbs production.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from fireman.bench.workload import make_events, produce_events, spambase_rows
from fireman.common import production_history
from fireman.common.model_registry import RegistryClient
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings, InfluxSettings, KafkaSettings, MlflowSettings
from tests.support.scoring import (
    FailsWhenScoring,
    fit_frame,
    fit_pipeline,
    influx_rows,
    read_topic,
    register_model,
    running,
    scorer_settings,
    set_alias,
    wait_for,
)

pytestmark = pytest.mark.integration

SHADOW = "SELECT event_id, model_version, probability FROM predictions WHERE \"role\" = 'shadow'"
# The readers' form: production, and points written before roles existed.
PRODUCTION = "SELECT event_id, model_version FROM predictions WHERE \"role\" != 'shadow'"
# The challenger reads fewer features than production decodes, in another order: its matrix is picked
# out of production's.
CHALLENGER_FEATURES = tuple(reversed(FEATURE_NAMES[5:50]))


@pytest.fixture(scope="module")
def pipeline(dataset_settings: DatasetSettings) -> Any:
    return fit_pipeline(dataset_settings)


@pytest.fixture(scope="module")
def rows(dataset_settings: DatasetSettings) -> pd.DataFrame:
    # Shuffled: Spambase is sorted by class, and both classes should reach both models.
    return spambase_rows(dataset_settings, 3000).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture
def production(mlflow_names: MlflowSettings, pipeline: Any, rows: pd.DataFrame) -> str:
    return register_model(mlflow_names, pipeline, rows[list(FEATURE_NAMES)].head(50))


def challenger(mlflow_names: MlflowSettings, estimator: Any, features: pd.DataFrame, **log: Any) -> str:
    """Register ``estimator`` as a new version and point the challenger alias at it."""
    version = register_model(mlflow_names, estimator, features, promote=False, **log)
    set_alias(mlflow_names, mlflow_names.challenger_alias, version)
    return version


def kafka_versions(kafka: KafkaSettings, expected: int) -> dict[str, str]:
    messages = read_topic(kafka, kafka.topic_predictions, expected)
    values = [orjson.loads(m.value()) for m in messages]
    assert len(values) == expected, "an event was published twice, or a shadow prediction reached Kafka"
    return {v["event_id"]: v["model_version"] for v in values}


def test_challenger_scores_the_same_events_in_shadow_and_only_production_reaches_kafka(
    kafka_topics: KafkaSettings,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
    production: str,
    rows: pd.DataFrame,
    dataset_settings: DatasetSettings,
) -> None:
    from fireman.common.dataset import load_spambase

    model = fit_frame(load_spambase(dataset_settings), seed=1, columns=CHALLENGER_FEATURES)
    shadow_version = challenger(mlflow_names, model, rows[list(CHALLENGER_FEATURES)].head(50))
    events = make_events(rows)
    produce_events(kafka_topics, events)

    with running(scorer_settings(kafka_topics, influx_db, mlflow_names)) as scorer:
        assert wait_for(lambda: scorer.stats.committed >= len(events), 90), scorer.stats
        assert scorer.stats.shadow_version == shadow_version
        assert scorer.stats.shadow_scored == len(events)

    ids = {e.event_id for e in events}
    assert kafka_versions(kafka_topics, len(events)) == dict.fromkeys(ids, production)
    served = influx_rows(influx_db, PRODUCTION)
    assert len(served) == len(events)
    assert {p["event_id"]: p["model_version"] for p in served} == dict.fromkeys(ids, production)
    shadow = influx_rows(influx_db, SHADOW)
    assert len(shadow) == len(events)
    assert {p["event_id"]: p["model_version"] for p in shadow} == dict.fromkeys(ids, shadow_version)
    # The challenger scored its own features in its own order, as offline.
    offline = model.predict_proba(rows[list(CHALLENGER_FEATURES)])[:, 1]
    online = {p["event_id"]: p["probability"] for p in shadow}
    assert np.allclose([online[e.event_id] for e in events], offline)

    # The challenger is no production event: model_events and the production history know v1 only.
    model_events = influx_rows(influx_db, "SELECT * FROM model_events")
    assert [(e["event"], e["to_version"]) for e in model_events] == [("start", production)]
    with RegistryClient(mlflow_names) as client:
        history = production_history.read(client, mlflow_names.model_name)
    assert [entry.version for entry in history] == [production]


def test_a_challenger_that_is_production_writes_no_shadow_points(
    kafka_topics: KafkaSettings,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
    production: str,
    rows: pd.DataFrame,
) -> None:
    set_alias(mlflow_names, mlflow_names.challenger_alias, production)
    events = make_events(rows.head(1000))
    produce_events(kafka_topics, events)
    with running(scorer_settings(kafka_topics, influx_db, mlflow_names)) as scorer:
        assert wait_for(lambda: scorer.stats.committed >= len(events), 60), scorer.stats
        assert scorer.stats.shadow_version is None and scorer.stats.shadow_scored == 0
    assert len(influx_rows(influx_db, PRODUCTION)) == len(events)
    assert influx_rows(influx_db, SHADOW) == []


def test_shadow_scoring_follows_the_challenger_alias_set_and_removed_live(
    kafka_topics: KafkaSettings,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
    production: str,
    rows: pd.DataFrame,
    dataset_settings: DatasetSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Polled every 0.5 s instead of 10: the test moves the alias three times while the scorer runs and
    # waits for each move to be seen.
    settings = scorer_settings(kafka_topics, influx_db, mlflow_names, reload_interval_s=0.5)
    before, during, after = (make_events(rows.iloc[i : i + 500]) for i in (0, 500, 1000))
    with caplog.at_level(logging.INFO, logger="fireman.serving"), running(settings) as scorer:
        # No challenger alias: normal, said once at INFO.
        produce_events(kafka_topics, before)
        assert wait_for(lambda: scorer.stats.committed >= 500, 60), scorer.stats
        newer = challenger(
            mlflow_names, fit_pipeline(dataset_settings, seed=1), rows[list(FEATURE_NAMES)].head(50)
        )
        assert wait_for(lambda: scorer.stats.shadow_version == newer, 60)
        produce_events(kafka_topics, during)
        assert wait_for(lambda: scorer.stats.committed >= 1000, 60), scorer.stats
        set_alias(mlflow_names, mlflow_names.challenger_alias, None)
        assert wait_for(lambda: scorer.stats.shadow_version is None, 60)
        produce_events(kafka_topics, after)
        assert wait_for(lambda: scorer.stats.committed >= 1500, 60), scorer.stats

    ids = [e.event_id for e in (*before, *during, *after)]
    assert sorted(p["event_id"] for p in influx_rows(influx_db, PRODUCTION)) == sorted(ids)
    shadow = influx_rows(influx_db, SHADOW)
    assert sorted(p["event_id"] for p in shadow) == sorted(e.event_id for e in during)
    assert {p["model_version"] for p in shadow} == {newer}
    missing = [r for r in caplog.records if "has no alias" in r.getMessage()]
    assert len(missing) == 2 and {r.levelno for r in missing} == {logging.INFO}  # once per absence


def test_a_refused_or_failing_challenger_leaves_production_untouched(
    kafka_topics: KafkaSettings,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
    production: str,
    pipeline: Any,
    rows: pd.DataFrame,
) -> None:
    from sklearn.ensemble import RandomForestClassifier

    # Refused on load: its inputs are not event features.
    wrong = pd.DataFrame(
        rows[list(FEATURE_NAMES[:10])].fillna(0).to_numpy(), columns=[f"f_{i}" for i in range(10)]
    )
    challenger(mlflow_names, RandomForestClassifier(n_estimators=3).fit(wrong, rows["label"]), wrong)
    first, second = make_events(rows.head(1000)), make_events(rows.iloc[1000:2000])
    # Polled every 0.5 s instead of 10: the test moves the alias while the scorer runs.
    settings = scorer_settings(kafka_topics, influx_db, mlflow_names, reload_interval_s=0.5)
    with running(settings) as scorer:
        produce_events(kafka_topics, first)
        assert wait_for(lambda: scorer.stats.committed >= len(first), 60), scorer.stats
        assert scorer.stats.shadow_version is None
        # Loads and passes its check, then raises on every batch.
        failing = challenger(
            mlflow_names,
            FailsWhenScoring(pipeline),
            rows[list(FEATURE_NAMES)].head(50),
            serialization="cloudpickle",
        )
        assert wait_for(lambda: scorer.stats.shadow_version == failing, 60)
        produce_events(kafka_topics, second)
        assert wait_for(lambda: scorer.stats.committed >= len(first) + len(second), 60), scorer.stats
        assert scorer.stats.shadow_failures > 0 and scorer.stats.shadow_scored == 0

    ids = {e.event_id for e in (*first, *second)}
    assert kafka_versions(kafka_topics, len(ids)) == dict.fromkeys(ids, production)
    served = influx_rows(influx_db, PRODUCTION)
    assert {p["event_id"]: p["model_version"] for p in served} == dict.fromkeys(ids, production)
    assert len(served) == len(ids)
    assert influx_rows(influx_db, SHADOW) == []
    # A challenger's refusal is logged, not a model event: those are production's.
    assert influx_rows(influx_db, "SELECT * FROM model_events WHERE \"event\" = 'refused'") == []


def test_a_challenger_that_wins_on_the_live_stream_is_promoted_by_fireman_promote_live(
    kafka_topics: KafkaSettings,
    influx_db: InfluxSettings,
    mlflow_names: MlflowSettings,
    rows: pd.DataFrame,
    dataset_settings: DatasetSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole path at the live gate's defaults: the real scorer's shadow points, the sink's label
    points, and ``fireman promote --live`` as a user runs it (at least 500 events, the default N)."""
    from fireman.common.dataset import load_spambase
    from fireman.common.events import encode_label
    from fireman.common.influx import InfluxClient
    from fireman.common.measurements import LABELS
    from fireman.streaming.sink import label_point
    from tests.integration.test_cli_registry import run_fireman

    frame = load_spambase(dataset_settings)
    # Production is one stump fitted on 40 rows; the challenger a forest fitted on all of Spambase: it
    # should win on any fair sample. Both read all 57 features, as versions of one model do.
    stump = fit_frame(frame.sample(n=40, random_state=0), n_estimators=1, max_depth=1)
    weak = register_model(mlflow_names, stump, rows[list(FEATURE_NAMES)].head(50))
    strong = challenger(mlflow_names, fit_frame(frame, seed=1), rows[list(FEATURE_NAMES)].head(50))
    labelled = rows.head(700)
    events = make_events(labelled)
    produce_events(kafka_topics, events)
    with running(scorer_settings(kafka_topics, influx_db, mlflow_names)) as scorer:
        assert wait_for(lambda: scorer.stats.committed >= len(events), 90), scorer.stats
    assert scorer.stats.shadow_scored == len(events)
    with InfluxClient(influx_db) as client:
        client.write(
            [
                label_point(encode_label(e.event_id, e.sensor_id, e.timestamp, int(y)), LABELS.name)
                for e, y in zip(events, labelled["label"], strict=True)
            ]
        )

    monkeypatch.setenv("FIREMAN_INFLUXDB_URL", influx_db.url)
    monkeypatch.setenv("FIREMAN_INFLUXDB_DATABASE", influx_db.database)
    done, _ = run_fireman(mlflow_names, "promote", "--live")
    assert done.returncode == 0, done.stdout + done.stderr
    with RegistryClient(mlflow_names) as client:
        model = client.registered_model(mlflow_names.model_name)
    assert model is not None
    assert model.aliases.get(mlflow_names.production_alias) == strong
    assert mlflow_names.challenger_alias not in model.aliases  # it serves now: no longer a challenger
    assert model.aliases.get(mlflow_names.previous_alias) == weak
