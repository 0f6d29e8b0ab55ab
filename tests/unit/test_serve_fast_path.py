"""fireman serve scores a forest tree by tree only where that gives exactly predict_proba's answer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

from fireman.common.model import Lineage, TreesInTurn, build_serving_model
from fireman.common.schema import FEATURE_NAMES
from fireman.serving import inference


def forest_model() -> tuple[Pipeline, np.ndarray]:
    rng = np.random.default_rng(3)
    rows = rng.lognormal(size=(400, len(FEATURE_NAMES)))
    rows[rng.random(rows.shape) < 0.1] = np.nan
    labels = (np.nan_to_num(rows[:, 0]) + np.nan_to_num(rows[:, 5]) > 2.5).astype(int)
    pipeline = Pipeline(
        [
            ("imputer", SimpleImputer(keep_empty_features=True)),
            ("forest", RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=-1)),
        ]
    ).fit(rows, labels)
    return pipeline, rows


def test_a_forest_is_scored_tree_by_tree_with_the_same_probabilities() -> None:
    pipeline, rows = forest_model()
    model = build_serving_model(pipeline, tuple(FEATURE_NAMES), Lineage("m", "1", "r"), 0.0)
    prepared = inference.prepare_for_requests(model)
    assert isinstance(prepared.estimator, TreesInTurn)
    np.testing.assert_array_equal(prepared.estimator.predict_proba(rows), pipeline.predict_proba(rows))


def test_a_fast_path_that_disagrees_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline, rows = forest_model()
    exact = TreesInTurn.predict_proba
    monkeypatch.setattr(TreesInTurn, "predict_proba", lambda self, matrix: exact(self, matrix) + 1e-12)
    model = build_serving_model(pipeline, tuple(FEATURE_NAMES), Lineage("m", "1", "r"), 0.0)
    prepared = inference.prepare_for_requests(model)
    assert prepared.estimator is pipeline
    assert pipeline.get_params()["forest__n_jobs"] == 1  # one thread: a request has a few rows
    np.testing.assert_array_equal(prepared.score(rows)[1], pipeline.predict_proba(rows)[:, 1])
