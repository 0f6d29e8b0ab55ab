"""Training from labelled history written through the real InfluxDB, in the sink's schema."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fireman.common.dataset import load_spambase, mask_completely_at_random
from fireman.common.errors import UserError
from fireman.common.influx import InfluxClient, Point
from fireman.common.mlflow_uri import client as mlflow_client
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings, InfluxSettings, MlflowSettings
from fireman.training import workflow
from fireman.training.settings import TrainingSettings

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SMALL_FOREST = {"n_estimators": 20}


def write_history(
    influx: InfluxSettings, dataset: DatasetSettings, events: int, labelled: int, label: int | None = None
) -> None:
    """``events`` measurements one second apart from START; the first ``labelled`` get a label.

    Labels carry a sub-millisecond offset from their event's time, as the sink may add, so only a
    join on ``event_id`` pairs them correctly.
    """
    spambase = load_spambase(dataset).sample(events, random_state=5).reset_index(drop=True)
    spambase = mask_completely_at_random(spambase, 0.2, seed=5)
    start_ns = int(START.timestamp()) * 1_000_000_000
    points = []
    for i, row in spambase.iterrows():
        event_id = f"evt-{i:05d}"
        tags = {"sensor_id": f"sensor-{int(i) % 3}"}
        time_ns = start_ns + int(i) * 1_000_000_000
        features = {name: float(row[name]) for name in FEATURE_NAMES if row[name] == row[name]}
        points.append(Point("measurements", {**features, "event_id": event_id}, time_ns + 17, tags))
        if int(i) < labelled:
            value = int(row["label"]) if label is None else label
            points.append(Point("labels", {"label": value, "event_id": event_id}, time_ns + 401, tags))
    with InfluxClient(influx) as client:
        client.write(points)


def settings_for(influx: InfluxSettings, names: MlflowSettings, dataset: DatasetSettings) -> TrainingSettings:
    return TrainingSettings(influxdb=influx, mlflow=names, dataset=dataset)


def test_influx_history_row_count_matches_labelled_events(
    influx_db: InfluxSettings, mlflow_names: MlflowSettings, dataset_settings: DatasetSettings
) -> None:
    write_history(influx_db, dataset_settings, events=400, labelled=340)
    settings = settings_for(influx_db, mlflow_names, dataset_settings).model_copy(update={"split": "time"})
    until = START + timedelta(hours=1)
    outcome = workflow.run_training(settings, source="influx", since=START, until=until, params=SMALL_FOREST)
    assert outcome.rows == 340 and outcome.unlabelled_excluded == 60
    assert (outcome.version, outcome.promoted) == ("1", True)
    client = mlflow_client(mlflow_names)
    tags = client.get_model_version(mlflow_names.model_name, "1").tags
    assert tags["data_source"] == "influx" and tags["data_rows"] == "340"
    assert tags["data_since"] == START.isoformat() and tags["data_until"] == until.isoformat()
    params = client.get_run(outcome.run_id).data.params
    assert (params["rows_holdout"], params["unlabelled_excluded"], params["split"]) == ("68", "60", "time")


def test_dag_steps_extract_validate_train_promote(
    influx_db: InfluxSettings, mlflow_names: MlflowSettings, dataset_settings: DatasetSettings, tmp_path: Path
) -> None:
    write_history(influx_db, dataset_settings, events=300, labelled=300)
    settings = settings_for(influx_db, mlflow_names, dataset_settings)
    extracted = workflow.extract_history(
        settings, tmp_path / "history.parquet", since=START, until=START + timedelta(hours=1)
    )
    assert extracted.rows == 300 and extracted.unlabelled_excluded == 0
    assert workflow.validate_file(settings, extracted.path) == 300
    registered = workflow.train_from_file(settings, extracted.path, params=SMALL_FOREST)
    assert registered.version == "1"
    client = mlflow_client(mlflow_names)
    assert client.get_registered_model(mlflow_names.model_name).aliases == {}  # the gate has not run yet
    decision = workflow.evaluate_and_promote(settings, registered.version)
    assert (decision.promoted, decision.decision, decision.champion) == (True, "first", None)
    assert client.get_registered_model(mlflow_names.model_name).aliases == {"production": "1"}
    tags = client.get_model_version(mlflow_names.model_name, "1").tags
    assert tags["data_since"] == START.isoformat()


def test_bad_windows_are_user_errors_and_log_no_model(
    influx_db: InfluxSettings, mlflow_names: MlflowSettings, dataset_settings: DatasetSettings
) -> None:
    write_history(influx_db, dataset_settings, events=250, labelled=250, label=1)
    settings = settings_for(influx_db, mlflow_names, dataset_settings)
    with pytest.raises(UserError, match=r"missing label class: every row.* has label 1"):
        workflow.run_training(settings, source="influx", since=START, until=START + timedelta(hours=1))
    with pytest.raises(UserError, match="empty training window: no measurements"):
        workflow.run_training(settings, source="influx", since=START - timedelta(days=2), until=START)
    with pytest.raises(UserError, match=r"too few labelled rows to train between .*: 10 labelled rows found"):
        workflow.run_training(settings, source="influx", since=START, until=START + timedelta(seconds=10))
    client = mlflow_client(mlflow_names)
    assert client.search_model_versions(f"name = '{mlflow_names.model_name}'") == []
    assert client.get_experiment_by_name(mlflow_names.experiment) is None


def test_a_file_champion_is_not_scored_on_its_own_training_rows(
    influx_db: InfluxSettings, mlflow_names: MlflowSettings, dataset_settings: DatasetSettings, tmp_path: Path
) -> None:
    from fireman.streaming.generator import iter_rows
    from fireman.streaming.settings import GeneratorSettings
    from fireman.training import unseen

    settings = settings_for(influx_db, mlflow_names, dataset_settings)
    champion = workflow.run_training(settings, source="file", params=SMALL_FOREST)
    settings = settings.model_copy(update={"split": "time"})  # the challenger's hold-out: its latest rows
    assert (champion.version, champion.decision) == ("1", "first")
    client = mlflow_client(mlflow_names)
    assert client.get_run(champion.run_id).data.params["fingerprint_complete"] == "True"

    # The generator replays Spambase with fresh holes; labels inverted (a concept shift) after 600 events.
    spambase = load_spambase(dataset_settings)
    replay = list(iter_rows(spambase, GeneratorSettings(limit=2000, drift_after=600, drift_kind="labels")))
    start_ns = int(START.timestamp()) * 1_000_000_000
    points = []
    for row in replay:
        time_ns = start_ns + row.index * 1_000_000_000
        tags = {"sensor_id": row.sensor_id}
        points.append(Point("measurements", {**row.features, "event_id": row.event_id}, time_ns, tags))
        points.append(Point("labels", {"label": row.label, "event_id": row.event_id}, time_ns, tags))
    with InfluxClient(influx_db) as influx:
        influx.write(points)

    # Triggered from the onset (event 600): only post-onset rows are trained on.
    onset = START + timedelta(seconds=600)
    outcome = workflow.run_training(
        settings, source="influx", since=onset, until=START + timedelta(hours=1), params=SMALL_FOREST
    )
    assert outcome.rows == 1400 and outcome.since == onset.isoformat()
    holdout = outcome.holdout
    # The hold-out is the last 280 rows; those the file champion trained on (about 80%) are left out.
    assert holdout["holdout_total"] == 280
    assert holdout["holdout_excluded_fingerprint"] == holdout["holdout_excluded"] > 200
    assert holdout["holdout_rows"] == 280 - holdout["holdout_excluded"] >= settings.gate_min_rows
    tags = client.get_model_version(mlflow_names.model_name, outcome.version).tags
    recorded = json.loads(tags["gate.metrics"])
    assert {key: recorded[key] for key in holdout} == holdout
    assert f"{holdout['holdout_rows']} of 280 hold-out rows compared" in tags["gate.reason"]

    # Check: the rows left are ones the champion never saw, and the concept shift makes it lose there.
    local = client.download_artifacts(champion.run_id, workflow.FINGERPRINT_ARTIFACT, str(tmp_path))
    prints = unseen.from_frame(pd.read_parquet(local))
    last = [[row.features.get(name, np.nan) for name in FEATURE_NAMES] for row in replay[-280:]]
    frame = pd.DataFrame(last, columns=list(FEATURE_NAMES))
    assert int(unseen.seen(unseen.fingerprint(frame), prints).sum()) == holdout["holdout_excluded"]
    assert outcome.decision == "promoted" and outcome.promoted


def test_after_a_shift_the_window_waits_for_rows_since_the_onset_and_never_reaches_back(
    influx_db: InfluxSettings, mlflow_names: MlflowSettings, dataset_settings: DatasetSettings, tmp_path: Path
) -> None:
    from fireman.training import dag_tasks, sources

    write_history(influx_db, dataset_settings, events=300, labelled=250)
    settings = settings_for(influx_db, mlflow_names, dataset_settings)
    onset, check_end = START + timedelta(seconds=100), START + timedelta(seconds=110)
    params = {"window_start": onset.isoformat(), "window_end": check_end.isoformat()}
    count = functools.partial(sources.count_labelled, settings)
    assert count(START, START + timedelta(hours=1)) == 250
    now = datetime.now(UTC)
    deadline = now + timedelta(hours=1)
    # 10 labelled rows in [onset, check end); 150 since the onset up to now, 250 counting pre-onset history.
    waiting = dag_tasks.wait_for_history(params, (onset, check_end), 200, count, now, deadline)
    assert (waiting.done, waiting.since, waiting.rows) == (False, onset, 150)
    done = dag_tasks.wait_for_history(params, (onset, check_end), 150, count, now, deadline)
    assert (done.done, done.since, done.rows) == (True, onset, 150) and done.until is not None
    extracted = workflow.extract_history(
        settings, tmp_path / "after.parquet", since=done.since, until=done.until
    )
    frame = sources.read_parquet(Path(extracted.path)).frame
    assert extracted.rows == 150 and int(frame[sources.EVENT_TIME].min()) >= int(onset.timestamp() * 1000)
