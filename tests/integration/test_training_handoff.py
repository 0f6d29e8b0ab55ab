"""The retrain DAG's tasks hand the training window over through MLflow artifacts, not local paths."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fireman.common.errors import UserError
from fireman.common.mlflow_uri import client as mlflow_client
from fireman.common.settings import MlflowSettings
from fireman.training import handoff

pytestmark = pytest.mark.integration


def test_a_window_published_by_one_task_is_read_by_another_without_the_file(
    mlflow_names: MlflowSettings, tmp_path: Path
) -> None:
    window = pd.DataFrame({"Cont_1": [0.5, None, 2.0], "label": [1, 0, 1]})
    extracted = tmp_path / "extract-worker" / "run_1.parquet"
    extracted.parent.mkdir()
    window.to_parquet(extracted)
    uri = handoff.publish(mlflow_names, extracted, "manual__2026-12-02T00:00:00+00:00")
    extracted.unlink()  # another worker never sees the extracting worker's disk

    with handoff.fetched(mlflow_names, uri) as path:
        assert path.name == "run_1.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(path), window)
    assert not path.exists()  # the download is temporary

    client = mlflow_client(mlflow_names)
    run = client.get_run(uri.split("/")[1])
    experiment = client.get_experiment(run.info.experiment_id)
    # Apart from the model runs the MLflow UI compares, and tagged with the DAG run.
    assert experiment.name == f"{mlflow_names.experiment}-training-data"
    assert run.data.tags[handoff.DATA_TAG] == "manual__2026-12-02T00:00:00+00:00"
    assert run.info.status == "FINISHED"


def test_a_local_path_is_refused_as_training_data(mlflow_names: MlflowSettings, tmp_path: Path) -> None:
    with (
        pytest.raises(UserError, match="must be an MLflow artifact URI"),
        handoff.fetched(mlflow_names, str(tmp_path / "x.parquet")),
    ):
        pass
