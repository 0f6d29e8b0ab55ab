"""Drift injection makes a clearly visible covariate shift on the chosen features, and only there."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from fireman.common.dataset import load_spambase, mask_completely_at_random
from fireman.common.errors import UserError
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings
from fireman.streaming.drift import apply_drift
from fireman.streaming.settings import DEFAULT_DRIFT_FEATURES


@pytest.fixture(scope="module")
def frame(dataset_settings: DatasetSettings) -> pd.DataFrame:
    return mask_completely_at_random(load_spambase(dataset_settings), 0.2, seed=1)


@pytest.mark.parametrize("kind", ["shift", "scale", "swap"])
def test_each_kind_shifts_the_chosen_features_visibly(frame: pd.DataFrame, kind: str) -> None:
    sample = frame.sample(500, random_state=3)
    drifted = apply_drift(sample, kind, DEFAULT_DRIFT_FEATURES)
    reference = frame.sample(500, random_state=4)
    for name in DEFAULT_DRIFT_FEATURES:
        before, after = reference[name].dropna(), drifted[name].dropna()
        # Without drift, two samples of the same data give p-values of 0.5 and more here.
        assert ks_2samp(before, after).pvalue < 0.01, f"{kind} on {name} is not visible"
    untouched = [name for name in FEATURE_NAMES if name not in DEFAULT_DRIFT_FEATURES]
    pd.testing.assert_frame_equal(drifted[untouched], sample[untouched])
    assert drifted["label"].equals(sample["label"])


def test_missing_values_stay_missing_and_input_is_not_modified(frame: pd.DataFrame) -> None:
    sample = frame.head(200)
    copy = sample.copy()
    for kind in ("shift", "scale", "swap"):
        drifted = apply_drift(sample, kind, ["Cont_52", "Cont_7"])
        assert (
            drifted[["Cont_52", "Cont_7"]].isna().sum().sum()
            == sample[["Cont_52", "Cont_7"]].isna().sum().sum()
        )
        if kind != "swap":
            assert (drifted["Cont_52"].isna() == sample["Cont_52"].isna()).all()
    pd.testing.assert_frame_equal(sample, copy)


def test_shift_uses_the_reference_spread() -> None:
    frame = pd.DataFrame({"Cont_1": [0.0, 1.0, np.nan]})
    drifted = apply_drift(frame, "shift", ["Cont_1"], magnitude=2.0, reference_std={"Cont_1": 0.5})
    assert drifted["Cont_1"].tolist()[:2] == [1.0, 2.0] and np.isnan(drifted["Cont_1"].iloc[2])


def test_scale_widens_the_spread_around_the_reference_mean() -> None:
    frame = pd.DataFrame({"Cont_1": [0.0, 2.0]})
    drifted = apply_drift(frame, "scale", ["Cont_1"], magnitude=1.0, reference_mean={"Cont_1": 1.0})
    assert drifted["Cont_1"].tolist() == [-1.0, 3.0]


def test_swap_trades_the_first_half_with_the_second() -> None:
    frame = pd.DataFrame({"Cont_1": [1.0], "Cont_2": [2.0], "Cont_3": [3.0], "Cont_4": [4.0]})
    drifted = apply_drift(frame, "swap", ["Cont_1", "Cont_2", "Cont_3", "Cont_4"])
    assert drifted.iloc[0].tolist() == [3.0, 4.0, 1.0, 2.0]
    odd = apply_drift(frame[["Cont_1", "Cont_2", "Cont_3"]], "swap", ["Cont_1", "Cont_2", "Cont_3"])
    assert odd.iloc[0].tolist() == [2.0, 3.0, 1.0]


@pytest.mark.parametrize(
    ("kind", "features", "magnitude", "message"),
    [
        ("tilt", ["Cont_1"], 1.0, "unknown drift kind"),
        ("shift", ["Cont_99"], 1.0, "unknown drift feature"),
        ("shift", [], 1.0, "at least one"),
        ("swap", ["Cont_1"], 1.0, "two distinct"),
        ("scale", ["Cont_1"], 0.0, "positive"),
    ],
)
def test_bad_drift_options_are_user_errors(
    kind: str, features: list[str], magnitude: float, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        apply_drift(pd.DataFrame({"Cont_1": [1.0]}), kind, features, magnitude)


def test_labels_kind_inverts_the_labels_and_leaves_every_feature_alone(frame: pd.DataFrame) -> None:
    sample = frame.sample(500, random_state=3)
    drifted = apply_drift(sample, "labels", DEFAULT_DRIFT_FEATURES)
    assert (drifted["label"] == 1 - sample["label"]).all()
    pd.testing.assert_frame_equal(drifted[list(FEATURE_NAMES)], sample[list(FEATURE_NAMES)])
    # A concept shift is invisible to a two-sample test on the features: same values, same p-value 1.
    for name in DEFAULT_DRIFT_FEATURES:
        assert ks_2samp(sample[name].dropna(), drifted[name].dropna()).pvalue == 1.0
    features_only = sample[list(FEATURE_NAMES)]
    pd.testing.assert_frame_equal(apply_drift(features_only, "labels", DEFAULT_DRIFT_FEATURES), features_only)
