"""Training data checks that need no server: validation, windows, splits, parquet hand-off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fireman.common.errors import UserError
from fireman.common.schema import FEATURE_NAMES
from fireman.training.evaluation import split
from fireman.training.pipeline import build_pipeline, fit_params_for
from fireman.training.sources import DataInfo, Dataset, read_parquet, resolve_window, validate, write_parquet


def frame(rows: int, labels: list[int] | None = None, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.random((rows, len(FEATURE_NAMES)))
    values[rng.random(values.shape) < 0.2] = np.nan
    data = pd.DataFrame(values, columns=list(FEATURE_NAMES))
    data["label"] = labels if labels is not None else [i % 2 for i in range(rows)]
    return data


def dataset(data: pd.DataFrame, time_ordered: bool = False) -> Dataset:
    return Dataset(data, DataInfo(source="influx", since="a", until="b", time_ordered=time_ordered))


def test_valid_frame_passes() -> None:
    validate(dataset(frame(50)), min_rows=50)


def test_missing_columns_are_named() -> None:
    with pytest.raises(UserError, match="lacks columns: Cont_3, Cont_9"):
        validate(dataset(frame(50).drop(columns=["Cont_3", "Cont_9"])), min_rows=10)


def test_too_few_rows_names_the_setting() -> None:
    with pytest.raises(
        UserError,
        match=r"too few.*: 49 labelled rows found, at least 50 needed \(FIREMAN_TRAIN_MIN_ROWS\): widen",
    ):
        validate(dataset(frame(49)), min_rows=50)


def test_single_class_is_refused() -> None:
    with pytest.raises(UserError, match=r"missing label class: every row.*label 0, none has label 1"):
        validate(dataset(frame(60, labels=[0] * 60)), min_rows=10)


def test_empty_frame_is_an_empty_window() -> None:
    with pytest.raises(UserError, match="empty training window"):
        validate(dataset(frame(0)), min_rows=10)


def test_window_from_last_hours_and_from_since() -> None:
    until = datetime(2026, 1, 2, tzinfo=UTC)
    assert resolve_window(None, until, 6, 168) == (until - timedelta(hours=6), until)
    naive = datetime(2026, 1, 1)
    assert resolve_window(naive, until, None, 168)[0] == naive.replace(tzinfo=UTC)
    with pytest.raises(UserError, match="empty training window"):
        resolve_window(until, until, None, 168)
    with pytest.raises(UserError, match="not both"):
        resolve_window(naive, None, 3, 168)


def test_time_split_holds_out_the_most_recent_rows() -> None:
    data = frame(100)
    _, holdout = split(dataset(data, time_ordered=True), 0.2, "time", 0)
    assert len(holdout) == 20
    pd.testing.assert_frame_equal(holdout, data.iloc[80:].reset_index(drop=True))
    with pytest.raises(UserError, match="--source influx"):
        split(dataset(data), 0.2, "time", 0)


def test_stratified_split_keeps_both_classes() -> None:
    train, holdout = split(dataset(frame(100)), 0.2, "stratified", 0)
    assert set(holdout["label"]) == {0, 1} and len(train) == 80


def test_parquet_carries_the_window(tmp_path: Path) -> None:
    original = Dataset(frame(30), DataInfo(source="influx", since="s", until="u", unlabelled_excluded=4))
    loaded = read_parquet(write_parquet(original, tmp_path / "history.parquet"))
    assert loaded.info == original.info
    pd.testing.assert_frame_equal(loaded.frame, original.frame)


def test_max_samples_is_a_cap_and_the_pipeline_handles_nan() -> None:
    assert fit_params_for({"max_samples": 10_000}, 500) == {"max_samples": None}
    assert fit_params_for({"max_samples": 100}, 500) == {"max_samples": 100}
    data = frame(200)
    model = build_pipeline(n_estimators=5, n_jobs=1).fit(data[list(FEATURE_NAMES)], data["label"])
    assert model.predict(data[list(FEATURE_NAMES)]).shape == (200,)
    with pytest.raises(TypeError, match="unknown pipeline parameters: depth"):
        build_pipeline(depth=3)
