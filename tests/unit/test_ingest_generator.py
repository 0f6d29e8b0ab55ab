"""The generator's row stream: deterministic, MCAR-masked, drifted after N, labelled by fraction."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fireman.common.dataset import load_spambase
from fireman.common.schema import FEATURE_NAMES, EventIn, LabelIn
from fireman.common.settings import DatasetSettings
from fireman.streaming.generator import generate, iter_rows, synthetic_frame
from fireman.streaming.settings import GeneratorSettings
from tests.conftest import free_port


@pytest.fixture(scope="module")
def spambase(dataset_settings: DatasetSettings) -> pd.DataFrame:
    return load_spambase(dataset_settings)


def test_same_seed_same_stream_other_seed_other_stream(spambase: pd.DataFrame) -> None:
    settings = GeneratorSettings(seed=3)
    first = generate(spambase, 300, settings)
    assert generate(spambase, 300, settings) == first
    assert generate(spambase, 300, GeneratorSettings(seed=4))[0] != first[0]


def test_events_and_labels_follow_the_contract(spambase: pd.DataFrame) -> None:
    events, labels = generate(spambase, 500, GeneratorSettings(sensors=3, label_fraction=0.3), start_ms=1000)
    for event in events:
        EventIn.model_validate(event)
    for label in labels:
        LabelIn.model_validate(label)
    assert {event["sensor_id"] for event in events} == {"sensor-1", "sensor-2", "sensor-3"}
    assert len({event["event_id"] for event in events}) == 500
    assert [event["timestamp"] for event in events[:3]] == [1000, 2000, 3000]
    by_id = {event["event_id"]: event for event in events}
    assert all(by_id[label["event_id"]]["timestamp"] == label["timestamp"] for label in labels)
    assert 0.2 < len(labels) / 500 < 0.4
    # Shuffled, so both classes show up early (Spambase's file is sorted by class).
    assert {label["label"] for label in labels[:50]} == {0, 1}


def test_missing_rate_is_mcar_and_absent_not_zero(spambase: pd.DataFrame) -> None:
    events, _ = generate(spambase, 1000, GeneratorSettings(missing_rate=0.2))
    present = sum(len(event["features"]) for event in events)
    assert 0.18 < 1 - present / (1000 * len(FEATURE_NAMES)) < 0.22
    assert all(value == value for event in events for value in event["features"].values())
    none_missing, _ = generate(spambase, 50, GeneratorSettings(missing_rate=0.0))
    assert all(len(event["features"]) == len(FEATURE_NAMES) for event in none_missing)


def test_drift_starts_after_n_events(spambase: pd.DataFrame) -> None:
    base = GeneratorSettings(missing_rate=0.0, seed=5)
    clean, _ = generate(spambase, 400, base)
    drifted, _ = generate(
        spambase, 400, base.model_copy(update={"drift_after": 200, "drift_features": ("Cont_55", "Cont_7")})
    )
    assert drifted[:200] == clean[:200]
    for before, after in zip(clean[200:], drifted[200:], strict=True):
        assert after["features"]["Cont_55"] > before["features"]["Cont_55"]
        assert after["features"]["Cont_1"] == before["features"]["Cont_1"]


def test_loop_continues_past_the_dataset_and_limit_stops() -> None:
    frame = synthetic_frame(seed=1, rows=40)
    rows = list(iter_rows(frame, GeneratorSettings(dataset="synthetic", limit=100, loop=True)))
    assert len(rows) == 100 and len({row.event_id for row in rows}) == 100
    assert len(list(iter_rows(frame, GeneratorSettings(dataset="synthetic", loop=False)))) == 40


def test_synthetic_dataset_has_spambase_shape() -> None:
    frame = synthetic_frame(seed=0)
    assert list(frame.columns) == [*FEATURE_NAMES, "label"]
    assert frame.shape == (4601, 58)
    assert 0.3 < frame["label"].mean() < 0.5
    assert np.isfinite(frame[list(FEATURE_NAMES)].to_numpy()).all()


def test_labels_drift_inverts_labels_after_n_and_sends_the_same_features(spambase: pd.DataFrame) -> None:
    plain = list(iter_rows(spambase, GeneratorSettings(limit=400)))
    concept = list(iter_rows(spambase, GeneratorSettings(limit=400, drift_after=150, drift_kind="labels")))
    assert [row.features for row in concept] == [row.features for row in plain]
    assert [row.event_id for row in concept] == [row.event_id for row in plain]
    assert [row.label for row in concept[:150]] == [row.label for row in plain[:150]]
    assert [row.label for row in concept[150:]] == [1 - row.label for row in plain[150:]]


def test_labels_drift_keeps_inverting_on_later_passes(spambase: pd.DataFrame) -> None:
    small = spambase.head(50)
    looping = GeneratorSettings(limit=130, loop=True)
    plain = list(iter_rows(small, looping))
    concept = list(iter_rows(small, looping.model_copy(update={"drift_after": 20, "drift_kind": "labels"})))
    assert [row.label for row in concept[20:]] == [1 - row.label for row in plain[20:]]
    assert [row.features for row in concept] == [row.features for row in plain]


def generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fireman.cli", "generator", "--limit", "2", "--rate", "0", *args],
        env={**os.environ, "FIREMAN_GENERATOR_MAX_RETRIES": "0", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_events_nobody_accepted_make_the_generator_exit_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = generator("--url", url)
    assert done.returncode == 1, (done.stdout, done.stderr[-2000:])
    assert "failed 2" in done.stdout and f"2 of 2 events were not accepted by {url}" in done.stdout


def test_a_collector_url_that_is_not_one_is_an_error_before_sending() -> None:
    done = generator("--url", "notaurl")
    assert done.returncode == 2, (done.stdout, done.stderr[-2000:])
    assert done.stderr.splitlines() == [
        "error: invalid setting collector_url (command line)='notaurl': "
        "must be an http:// or https:// URL, like http://127.0.0.1:8000"
    ]
    assert "sent" not in done.stdout
