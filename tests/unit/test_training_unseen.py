"""Which hold-out rows the champion trained on: fingerprints, compatibility under fresh masks, windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from fireman.common.dataset import load_spambase, mask_completely_at_random
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings
from fireman.streaming.generator import iter_rows
from fireman.streaming.settings import GeneratorSettings
from fireman.training import unseen
from fireman.training.sources import EVENT_TIME

FEATURES = list(FEATURE_NAMES)
START = datetime(2026, 3, 1, tzinfo=UTC)


def rows(*values: list[float]) -> pd.DataFrame:
    return pd.DataFrame([v + [0.0] * (len(FEATURES) - len(v)) for v in values], columns=FEATURES)


def test_a_fingerprint_is_a_hash_per_value_with_missing_values_normalised() -> None:
    data = rows([1.5, np.nan, -0.0], [1.5, float("nan"), 0.0], [1.5, 2.0, 0.0])
    prints = unseen.fingerprint(data)
    assert prints.shape == (3, len(FEATURES)) and prints.dtype == np.uint32
    assert (prints[0] == prints[1]).all()  # every NaN alike, -0.0 is 0.0
    assert prints[0, 1] == unseen.MISSING and prints[2, 1] != unseen.MISSING
    assert prints[0, 0] == prints[2, 0] and prints[2, 2] == unseen.ZERO


def test_compatible_rows_agree_on_every_value_both_have_and_share_a_non_zero_one() -> None:
    training = unseen.fingerprint(rows([1.5, 2.0, np.nan, 7.0], [0.3, 0.0, 0.0, 0.0]))
    holdout = rows(
        [1.5, np.nan, 4.0, 7.0],  # the first row with other holes: seen
        [1.5, 2.5, 4.0, 7.0],  # differs on a value both have: unseen
        [np.nan, 0.0, 0.0, 0.0],  # only zeros in common with the second row: not enough to call it seen
        [0.3, np.nan, 0.0, np.nan],  # the second row: seen
    )
    assert unseen.seen(unseen.fingerprint(holdout), training).tolist() == [True, False, False, True]
    assert unseen.seen(unseen.fingerprint(holdout), training[:0]).tolist() == [False] * 4


def test_compact_keeps_distinct_prints_and_says_when_it_sampled() -> None:
    prints = unseen.fingerprint(rows([1.0], [1.0], [2.0], [3.0]))
    kept, complete = unseen.compact(prints, 10, seed=0)
    assert (len(kept), complete) == (3, True)
    sampled, complete = unseen.compact(prints, 2, seed=0)
    assert (len(sampled), complete) == (2, False)


@pytest.fixture(scope="module")
def spambase(dataset_settings: DatasetSettings) -> pd.DataFrame:
    return load_spambase(dataset_settings)


def test_replays_of_the_files_training_rows_are_found_under_fresh_masks(spambase: pd.DataFrame) -> None:
    # What `fireman train --source file` fits on: the file masked with seed 0, 80% stratified.
    numbered = spambase.reset_index(drop=True).assign(row=lambda f: np.arange(len(f)))
    masked = mask_completely_at_random(numbered, 0.2, seed=0)
    train, _ = train_test_split(masked, test_size=0.2, stratify=masked["label"], random_state=0)
    prints, _ = unseen.compact(unseen.fingerprint(train), 10**6, seed=0)
    # The generator replays every row in another order with other holes.
    order = np.random.default_rng(0).permutation(len(spambase))
    replay = list(iter_rows(spambase, GeneratorSettings(limit=len(spambase))))
    frame = pd.DataFrame([[r.features.get(n, np.nan) for n in FEATURES] for r in replay], columns=FEATURES)
    # Spambase holds duplicate rows: a row is trained on if it or an identical copy was.
    copies = spambase[FEATURES].round(6).astype(str).agg("|".join, axis=1).to_numpy()
    trained = np.isin(copies[order], copies[train["row"].to_numpy()])
    found = unseen.seen(unseen.fingerprint(frame), prints)
    assert found[trained].mean() > 0.99  # a seen row kept would flatter the champion
    assert found[~trained].mean() < 0.1  # an unseen row dropped costs a little evidence
    drifted = list(iter_rows(spambase, GeneratorSettings(limit=len(spambase), drift_after=0)))
    shifted = pd.DataFrame([[r.features.get(n, np.nan) for n in FEATURES] for r in drifted], columns=FEATURES)
    assert not unseen.seen(unseen.fingerprint(shifted), prints).any()  # drifted rows differ and stay


def test_exclude_drops_the_champions_window_then_its_rows() -> None:
    values = [[float(i + 1), 1.0] for i in range(6)]
    holdout = rows(*values).assign(label=[0, 1] * 3)
    holdout[EVENT_TIME] = [int((START + timedelta(minutes=i)).timestamp() * 1000) for i in range(6)]
    window = {
        "data_source": "influx",
        "data_since": START.isoformat(),
        "data_until": (START + timedelta(minutes=2)).isoformat(),
    }
    trained = unseen.fingerprint(rows(values[4]))  # the fifth row, outside the window
    result = unseen.exclude(holdout, window, trained)
    assert (result.total, result.by_window, result.by_fingerprint, len(result.kept)) == (6, 2, 1, 3)
    assert result.kept[FEATURES[0]].tolist() == [3.0, 4.0, 6.0]
    assert result.counts() == {
        "holdout_rows": 3,
        "holdout_total": 6,
        "holdout_excluded": 3,
        "holdout_excluded_window": 2,
        "holdout_excluded_fingerprint": 1,
    }
    assert "3 of 6 hold-out rows compared" in result.text()


def test_a_file_champion_has_no_window_and_an_old_one_no_prints() -> None:
    holdout = rows([1.0], [2.0]).assign(label=[0, 1])
    result = unseen.exclude(holdout, {"data_source": "file", "data_since": "", "data_until": ""}, None)
    assert (result.excluded, len(result.kept)) == (0, 2)
    assert "no training fingerprints" in result.text()
