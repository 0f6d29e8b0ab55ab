"""The ONNX export of a version: converted and checked at registration, used at load only if it agrees.

The sklearn model stays the truth: whatever is wrong with an export (none, corrupt, another model's),
the version loads and sklearn scores it.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from fireman.common import model as model_module
from fireman.common import onnx_export
from fireman.common.model import Lineage, ServingModel, build_serving_model, load_export
from fireman.common.schema import FEATURE_NAMES
from fireman.training.pipeline import build_pipeline

WIDTH = len(FEATURE_NAMES)


def training_frame(seed: int = 3, rows: int = 400) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows shaped like Spambase's (non-negative, heavy-tailed), a tenth of the values missing."""
    rng = np.random.default_rng(seed)
    values = rng.lognormal(size=(rows, WIDTH)) * (rng.random((rows, WIDTH)) < 0.7)
    values[rng.random(values.shape) < 0.1] = np.nan
    labels = (np.nan_to_num(values[:, 0]) + np.nan_to_num(values[:, 5]) > 2.0).astype(int)
    return pd.DataFrame(values, columns=list(FEATURE_NAMES)), labels


def fitted(seed: int = 0) -> tuple[object, pd.DataFrame]:
    """The training code's pipeline (imputer, forest), small, fitted on a DataFrame as training does."""
    frame, labels = training_frame()
    return build_pipeline(n_estimators=15, random_state=seed, n_jobs=1).fit(frame, labels), frame


def serving(estimator: object) -> ServingModel:
    return build_serving_model(estimator, tuple(FEATURE_NAMES), Lineage("spam", "7", "run-7"), 0.0)


def with_download(monkeypatch: pytest.MonkeyPatch, content: bytes) -> list[tuple[str, str]]:
    """The registry's artifact download, answering ``content``; records what was asked for."""
    asked: list[tuple[str, str]] = []

    def download(run_id: str, artifact: str) -> bytes:
        asked.append((run_id, artifact))
        return content

    monkeypatch.setattr(model_module, "_download", download)
    return asked


def test_the_training_pipeline_exports_and_matches_sklearn_with_missing_values() -> None:
    pipeline, frame = fitted()
    content = onnx_export.export(pipeline, frame.to_numpy())
    assert content is not None
    rows = onnx_export.check_rows(WIDTH, frame.to_numpy())
    assert np.isnan(rows).all(axis=1).any() and np.isnan(rows).any(axis=1).mean() > 0.5
    got = onnx_export.OnnxPredictor(content).predict_proba(rows)
    expected = pipeline.predict_proba(rows)  # type: ignore[attr-defined]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=onnx_export.PROBABILITY_TOLERANCE)
    decided = np.abs(expected[:, 1] - expected[:, 0]) > onnx_export.PROBABILITY_TOLERANCE  # not a tie
    labels = pipeline.predict(rows)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(np.argmax(got, axis=1)[decided], labels[decided])


def test_a_model_the_converter_cannot_take_is_registered_without_export(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Unknown:
        classes_ = np.array([0, 1])

        def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
            return np.tile([0.5, 0.5], (len(matrix), 1))

    with caplog.at_level(logging.WARNING):
        assert onnx_export.export(Unknown(), np.zeros((3, WIDTH))) is None
    assert "no ONNX export" in caplog.text


def test_another_models_export_fails_the_check() -> None:
    pipeline, frame = fitted(seed=0)
    other, _ = fitted(seed=1)
    other_content = onnx_export.convert(other, WIDTH)
    with pytest.raises(onnx_export.ExportRejected, match="differ from sklearn"):
        onnx_export.verify(
            onnx_export.OnnxPredictor(other_content),
            pipeline,
            onnx_export.check_rows(WIDTH, frame.to_numpy()),
        )


def test_a_checked_export_scores_in_place_of_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline, frame = fitted()
    content = onnx_export.convert(pipeline, WIDTH)
    asked = with_download(monkeypatch, content)
    model = serving(pipeline)
    export = load_export(model, onnx_export.ARTIFACT)
    assert asked == [("run-7", onnx_export.ARTIFACT)]
    assert export is not None
    onnx_model = replace(model, export=export)
    assert (model.backend, onnx_model.backend) == ("sklearn", "onnxruntime")
    rows = frame.to_numpy()
    predictions, probabilities = onnx_model.score(rows)
    expected_predictions, expected = model.score(rows)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=onnx_export.PROBABILITY_TOLERANCE)
    assert predictions == expected_predictions
    assert all(isinstance(value, float) for value in probabilities)


def test_ties_are_scored_by_sklearn_so_every_class_is_sklearns(monkeypatch: pytest.MonkeyPatch) -> None:
    frame, labels = training_frame()
    pipeline = build_pipeline(n_estimators=2, random_state=0, n_jobs=1).fit(frame, labels)  # 1 vote each
    with_download(monkeypatch, onnx_export.convert(pipeline, WIDTH))
    model = serving(pipeline)
    export = load_export(model, onnx_export.ARTIFACT)
    assert export is not None
    onnx = export.predictor.predict_proba
    # float32 sums rounding a tie towards class 1, as they may with many trees.
    monkeypatch.setattr(
        export.predictor, "predict_proba", lambda matrix: onnx(matrix) + np.array([0.0, 1e-7])
    )
    onnx_model = replace(model, export=export)
    rows = onnx_export.check_rows(WIDTH, frame.to_numpy())
    expected_predictions, expected = model.score(rows)
    assert sum(value == 0.5 for value in expected) > 10  # the two trees disagree on these rows
    assert (np.argmax(export.predictor.predict_proba(rows), axis=1) != expected_predictions).any()
    predictions, probabilities = onnx_model.score(rows)
    assert predictions == expected_predictions
    tied = np.array(expected) == 0.5
    assert (np.array(probabilities)[tied] == 0.5).all()  # sklearn's own answer, exactly


def test_a_version_without_export_scores_with_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline, _ = fitted()
    asked = with_download(monkeypatch, b"")
    assert load_export(serving(pipeline), None) is None
    assert asked == []  # no export named: nothing downloaded


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not an onnx model", "corrupt"),
        (b"", "empty"),
    ],
)
def test_a_corrupt_export_is_refused_and_sklearn_serves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, content: bytes, why: str
) -> None:
    pipeline, _ = fitted()
    with_download(monkeypatch, content)
    with caplog.at_level(logging.WARNING):
        assert load_export(serving(pipeline), onnx_export.ARTIFACT) is None, why
    assert "version 7 scores with sklearn: its ONNX export is refused" in caplog.text


def test_another_models_export_is_refused_at_load_and_sklearn_serves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline, _ = fitted(seed=0)
    other, _ = fitted(seed=1)
    with_download(monkeypatch, onnx_export.convert(other, WIDTH))
    with caplog.at_level(logging.WARNING):
        assert load_export(serving(pipeline), onnx_export.ARTIFACT) is None
    assert "differ from sklearn" in caplog.text


def test_an_export_of_another_width_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline, _ = fitted()
    frame, labels = training_frame()
    narrow = build_pipeline(n_estimators=3, n_jobs=1).fit(frame.iloc[:, :5], labels)
    with_download(monkeypatch, onnx_export.convert(narrow, 5))
    assert load_export(serving(pipeline), onnx_export.ARTIFACT) is None


def test_a_failed_download_leaves_sklearn_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(run_id: str, artifact: str) -> bytes:
        raise OSError("artifact store unreachable")

    monkeypatch.setattr(model_module, "_download", unreachable)
    pipeline, _ = fitted()
    assert load_export(serving(pipeline), onnx_export.ARTIFACT) is None


def test_without_onnxruntime_sklearn_serves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sys

    pipeline, _ = fitted()
    with_download(monkeypatch, onnx_export.convert(pipeline, WIDTH))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    with caplog.at_level(logging.WARNING):
        assert load_export(serving(pipeline), onnx_export.ARTIFACT) is None
    assert "onnxruntime is not importable" in caplog.text


def test_labels_may_differ_only_on_an_exact_tie() -> None:
    class Fixed:
        def __init__(self, proba: list[list[float]]) -> None:
            self.proba = np.array(proba)

        def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
            return self.proba

    rows = np.zeros((2, WIDTH))
    tie = Fixed([[0.5, 0.5], [0.2, 0.8]])
    broken_the_other_way = Fixed([[0.4999999, 0.5000001], [0.2, 0.8]])
    onnx_export.verify(broken_the_other_way, tie, rows)  # type: ignore[arg-type]
    # Apart by more than the tolerance in sklearn, within it of each other, yet on either side of a half.
    near = Fixed([[0.5000075, 0.4999925], [0.2, 0.8]])
    flipped = Fixed([[0.4999990, 0.5000010], [0.2, 0.8]])
    with pytest.raises(onnx_export.ExportRejected, match="another class than sklearn on 1 rows"):
        onnx_export.verify(flipped, near, rows)  # type: ignore[arg-type]


def test_the_scorer_exposes_which_backend_scores_production() -> None:
    from fireman.serving.scorer import Scorer, scorer_metrics
    from fireman.serving.settings import ScorerSettings

    scorer = Scorer(ScorerSettings())
    scorer.stats.model_version, scorer.stats.model_backend = "3", "onnxruntime"
    samples = [sample for family in scorer_metrics(scorer).collect() for sample in family.samples]
    backend = [sample for sample in samples if sample.name == "fireman_scorer_model_backend"]
    assert [(sample.labels, sample.value) for sample in backend] == [
        ({"version": "3", "backend": "onnxruntime"}, 1.0)
    ]


def test_the_scorer_uses_exports_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    from fireman.serving.scorer import Scorer
    from fireman.serving.settings import ScorerSettings

    def onnx_on() -> bool:
        registry = Scorer(ScorerSettings()).new_registry()
        registry.close()
        return registry.onnx

    assert onnx_on() is True
    monkeypatch.setenv("FIREMAN_SCORER_ONNX", "false")
    assert onnx_on() is False
