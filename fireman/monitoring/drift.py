"""Drift of one window of scored events against the production version's reference, with Evidently 0.7.

Evidently drops NaNs and raises on a column with no values, so every feature is first checked here:
a feature with fewer than ``min_values`` non-null values in the window or the reference is left out
of the test (its missing share is still reported). Missing values are measured here, separately from
distribution drift. Results are read by metric identity: the preset's ``DriftedColumnsCount`` by its
fingerprint, and each ``ValueDrift`` by the column in its config, never by position.

Evidently renders plotly widgets for every metric while computing it; that is ~80% of its time
(~13 s of ~16 s for 1,000 x 57 against 2,000 reference rows on this machine). Windows that do not
save an HTML report run with rendering switched off (:func:`_no_rendering`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fireman.common.schema import FEATURE_NAMES

log = logging.getLogger(__name__)

PROBABILITY = "prediction_probability"
VALUE_DRIFT = "evidently:metric_v2:ValueDrift"

# Evidently's rendering switch is process-wide (class attributes), so every run takes this lock.
_EVIDENTLY_LOCK = threading.Lock()


@dataclass(frozen=True)
class Reference:
    """The production version's reference sample: features, and its own scores on them."""

    model_name: str
    version: str
    features: pd.DataFrame
    probabilities: np.ndarray | None = None


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    missing_share: float
    drift_score: float | None = None  # None: not tested (too few values)
    drifted: bool | None = None
    method: str | None = None


@dataclass
class WindowDrift:
    window_size: int
    missing_share: float
    tested_features: int
    drifted_features: int
    share_drifted_features: float
    dataset_drift: bool
    prediction_drift_score: float | None
    features: list[FeatureDrift] = field(default_factory=list)
    untested: dict[str, str] = field(default_factory=dict)  # feature -> why it was left out
    report_path: Path | None = None

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]


def missing_shares(window: np.ndarray) -> np.ndarray:
    """Share of missing values per feature (column) of a window."""
    if window.shape[0] == 0:
        return np.ones(window.shape[1])
    return np.isnan(window).mean(axis=0)


def compute_drift(
    reference: Reference,
    window: np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    drift_share: float,
    min_values: int,
    html_path: Path | None = None,
) -> WindowDrift:
    """Test one window (rows x ``FEATURE_NAMES``, NaN for missing) against ``reference``."""
    if window.ndim != 2 or window.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"a window has {len(FEATURE_NAMES)} feature columns, got shape {window.shape}")
    current = pd.DataFrame(window, columns=list(FEATURE_NAMES))
    missing = missing_shares(window)
    untested: dict[str, str] = {}
    tested: list[str] = []
    for name in FEATURE_NAMES:
        present = int(current[name].notna().sum())
        in_reference = int(reference.features[name].notna().sum()) if name in reference.features else 0
        if present < min_values:
            untested[name] = f"{present} value(s) in the window" + (" (all missing)" if present == 0 else "")
        elif in_reference < min_values:
            untested[name] = f"{in_reference} value(s) in the reference"
        else:
            tested.append(name)

    scores: dict[str, tuple[float, bool, str]] = {}
    prediction_score: float | None = None
    share = 0.0
    count = 0
    probability = np.asarray(probabilities, dtype=np.float64)
    with_probability = (
        reference.probabilities is not None
        and len(probability) == len(current)
        and np.isfinite(probability).sum() >= min_values
    )
    if tested:
        snapshot = _run_evidently(
            reference, current, tested, probability if with_probability else None, drift_share, html_path
        )
        count, share, scores = _read_results(snapshot, tested, drift_share)
        if with_probability:
            found = scores.pop(PROBABILITY, None)
            prediction_score = found[0] if found else None
    features = [
        FeatureDrift(name, float(missing[i]))
        if name not in scores
        else FeatureDrift(name, float(missing[i]), scores[name][0], scores[name][1], scores[name][2])
        for i, name in enumerate(FEATURE_NAMES)
    ]
    return WindowDrift(
        window_size=len(current),
        missing_share=float(np.isnan(window).mean()) if window.size else 1.0,
        tested_features=len(tested),
        drifted_features=count,
        share_drifted_features=share,
        # Evidently's own rule: the dataset drifts when at least ``drift_share`` of the columns do.
        dataset_drift=bool(tested) and share >= drift_share,
        prediction_drift_score=prediction_score,
        features=features,
        untested=untested,
        report_path=html_path if tested else None,
    )


def _run_evidently(
    reference: Reference,
    current: pd.DataFrame,
    tested: list[str],
    probability: np.ndarray | None,
    drift_share: float,
    html_path: Path | None,
) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    columns = list(tested)
    current_frame = current[columns].copy()
    reference_frame = reference.features[columns].astype("float64").copy()
    metrics: list[Any] = [DataDriftPreset(columns=tested, drift_share=drift_share)]
    if probability is not None and reference.probabilities is not None:
        current_frame[PROBABILITY] = probability
        reference_frame[PROBABILITY] = reference.probabilities
        columns.append(PROBABILITY)
        metrics.append(ValueDrift(column=PROBABILITY))
    definition = DataDefinition(numerical_columns=columns)
    with _EVIDENTLY_LOCK, _rendering(html_path is not None):
        snapshot = Report(metrics, include_tests=True).run(
            Dataset.from_pandas(current_frame, data_definition=definition),
            Dataset.from_pandas(reference_frame, data_definition=definition),
        )
        if html_path is not None:
            html_path.parent.mkdir(parents=True, exist_ok=True)
            snapshot.save_html(str(html_path))
    return snapshot


def _read_results(
    snapshot: Any, tested: list[str], drift_share: float
) -> tuple[int, float, dict[str, tuple[float, bool, str]]]:
    """(drifted count, drifted share, {column: (score, drifted, method)}) from a snapshot."""
    from evidently.core.metric_types import TestStatus
    from evidently.metrics import DriftedColumnsCount

    results = snapshot.metric_results
    # The preset builds its DriftedColumnsCount from the same arguments, so the fingerprint matches.
    counted = results.get(DriftedColumnsCount(columns=tested, drift_share=drift_share).metric_id)
    if counted is None:
        raise RuntimeError("Evidently's report has no DriftedColumnsCount result")
    scores: dict[str, tuple[float, bool, str]] = {}
    for result in results.values():
        location = result.metric_value_location
        params = location.metric.params if location is not None else {}
        if params.get("type") != VALUE_DRIFT:
            continue
        drifted = any(test.status == TestStatus.FAIL for test in result.tests)
        scores[str(params["column"])] = (float(result.value), drifted, str(params.get("method", "")))
    missing = [name for name in tested if name not in scores]
    if missing:
        raise RuntimeError(f"Evidently's report has no ValueDrift result for {', '.join(missing[:5])}")
    return int(counted.count.value), float(counted.share.value), scores


@contextlib.contextmanager
def _rendering(enabled: bool) -> Iterator[None]:
    if enabled:
        yield
        return
    with _no_rendering():
        yield


@contextlib.contextmanager
def _no_rendering() -> Iterator[None]:
    """Evidently without its plotly widgets; values and tests are computed as usual."""
    from evidently.metrics import column_statistics
    from evidently.presets import DataDriftPreset

    calculation = column_statistics.ValueDriftCalculation
    saved_render = calculation.__dict__["_render"]
    saved_preset = DataDriftPreset.__dict__["render"]
    calculation._render = lambda self, *args, **kwargs: []
    DataDriftPreset.render = lambda self, *args, **kwargs: []
    try:
        yield
    finally:
        calculation._render = saved_render
        DataDriftPreset.render = saved_preset
