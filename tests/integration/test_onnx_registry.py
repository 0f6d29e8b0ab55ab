"""Training logs a checked ONNX export with each version; the loader scores with it, or with sklearn.

MLflow here is a SQLite store in the test's own folder (no server): training's own registration code,
then the scorer's own loader, against the same tracking URI.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from fireman.common import mlflow_uri, onnx_export
from fireman.common.model import AliasTarget, Registry
from fireman.common.settings import DatasetSettings, MlflowSettings
from fireman.training import sources, workflow
from fireman.training.settings import TrainingSettings


@pytest.fixture
def settings(tmp_path: Path, dataset_settings: DatasetSettings) -> TrainingSettings:
    mlflow = MlflowSettings().model_copy(
        update={
            "tracking_uri_override": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "experiment": "onnx-test",
            "model_name": "onnx-test",
        }
    )
    # Artifacts in the test's folder too (a SQLite store's default is ./mlruns, wherever pytest runs).
    mlflow_uri.client(mlflow).create_experiment(
        mlflow.experiment, artifact_location=str(tmp_path / "artifacts")
    )
    # Small and in one thread: the export's checks are what is under test, not the forest.
    return TrainingSettings(mlflow=mlflow, dataset=dataset_settings, n_estimators=20, n_jobs=1)


def register(settings: TrainingSettings) -> AliasTarget:
    """One version, registered by training's own code, as `fireman train` registers it."""
    mlflow_uri.bind(settings.mlflow)
    client = mlflow_uri.client(settings.mlflow)
    registered, _, _ = workflow._train_and_register(settings, client, sources.load_file(settings), None)
    return AliasTarget(settings.mlflow.model_name, registered.version, registered.run_id)


def test_a_registered_version_carries_its_export_and_the_loader_scores_with_it(
    settings: TrainingSettings,
) -> None:
    target = register(settings)
    artifacts = [
        item.path for item in mlflow_uri.client(settings.mlflow).list_artifacts(target.run_id, "onnx")
    ]
    assert artifacts == [onnx_export.ARTIFACT]

    served = Registry(settings.mlflow, onnx=True).load(target)
    truth = Registry(settings.mlflow).load(target)
    assert (served.backend, truth.backend) == ("onnxruntime", "sklearn")

    rows = onnx_export.check_rows(len(served.feature_order))
    predictions, probabilities = served.score(rows)
    expected_predictions, expected = truth.score(rows)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=onnx_export.PROBABILITY_TOLERANCE)
    assert predictions == expected_predictions


def test_a_version_registered_without_export_scores_with_sklearn(
    settings: TrainingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unconvertible(estimator: object, width: int) -> bytes:
        raise RuntimeError("converter cannot take this model")

    monkeypatch.setattr(onnx_export, "convert", unconvertible)
    target = register(settings)  # registered all the same
    assert mlflow_uri.client(settings.mlflow).list_artifacts(target.run_id, "onnx") == []

    served = Registry(settings.mlflow, onnx=True).load(target)
    assert served.backend == "sklearn"


def test_a_corrupted_export_is_refused_at_load_and_sklearn_serves(
    settings: TrainingSettings, caplog: pytest.LogCaptureFixture
) -> None:
    target = register(settings)
    # Overwrite the logged export with garbage, as a damaged artifact store would serve it.
    client = mlflow_uri.client(settings.mlflow)
    local = Path(client.download_artifacts(target.run_id, onnx_export.ARTIFACT))
    stored = Path(urlparse(client.get_run(target.run_id).info.artifact_uri).path) / onnx_export.ARTIFACT
    assert stored.is_file()
    stored.write_bytes(local.read_bytes()[: len(local.read_bytes()) // 2])

    with caplog.at_level(logging.WARNING):
        served = Registry(settings.mlflow, onnx=True).load(target)
    assert served.backend == "sklearn"
    assert "scores with sklearn: its ONNX export is refused" in caplog.text
