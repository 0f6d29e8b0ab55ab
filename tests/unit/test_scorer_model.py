"""The checks a model version passes before it serves: signature, fitted order, sample prediction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline

from fireman.common.model import Lineage, ModelRefused, build_serving_model, feature_order
from fireman.common.schema import FEATURE_NAMES

LINEAGE = Lineage("spam", "3", "run")


def frame(columns: list[str], rows: int = 40) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    data = pd.DataFrame(rng.random((rows, len(columns))), columns=columns)
    return data, (data.iloc[:, 0] > 0.5).astype(int).to_numpy()


def fitted(columns: list[str]) -> tuple[object, pd.DataFrame]:
    data, labels = frame(columns)
    model = make_pipeline(SimpleImputer(keep_empty_features=True), RandomForestClassifier(n_estimators=3))
    return model.fit(data, labels), data


def test_a_compatible_model_scores_in_signature_order_like_predict() -> None:
    columns = list(FEATURE_NAMES[:5])
    model, data = fitted(columns)
    order = feature_order(infer_signature(data, model.predict(data)))  # type: ignore[attr-defined]
    serving = build_serving_model(model, order, LINEAGE, 0.1)
    predictions, probabilities = serving.score(data.to_numpy())
    assert predictions == model.predict(data).tolist()  # type: ignore[attr-defined]
    assert np.allclose(probabilities, model.predict_proba(data)[:, 1])  # type: ignore[attr-defined]


def test_a_signature_with_unknown_features_is_refused() -> None:
    data, labels = frame(["f_0", "f_1"])
    with pytest.raises(ModelRefused, match="not event features"):
        feature_order(infer_signature(data, labels))


def test_a_model_without_signature_is_refused() -> None:
    with pytest.raises(ModelRefused, match="no input signature"):
        feature_order(None)


def test_a_model_that_cannot_predict_the_signature_width_is_refused() -> None:
    narrow, labels = frame(["a", "b"])
    model = RandomForestClassifier(n_estimators=2).fit(narrow.to_numpy(), labels)
    with pytest.raises(ModelRefused, match="failed to predict"):
        build_serving_model(model, tuple(FEATURE_NAMES[:5]), LINEAGE, 0.1)


def test_a_fitted_order_that_differs_from_the_signature_is_refused() -> None:
    model, _ = fitted(list(FEATURE_NAMES[:3]))
    with pytest.raises(ModelRefused, match="order differs"):
        build_serving_model(model, (FEATURE_NAMES[2], FEATURE_NAMES[1], FEATURE_NAMES[0]), LINEAGE, 0.1)


def test_a_model_without_the_positive_class_is_refused() -> None:
    data, _ = frame(list(FEATURE_NAMES[:2]))
    model = DummyClassifier().fit(data, np.zeros(len(data), dtype=int))
    with pytest.raises(ModelRefused, match="do not include 1"):
        build_serving_model(model, tuple(FEATURE_NAMES[:2]), LINEAGE, 0.1)
