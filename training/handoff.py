"""How the retrain DAG's tasks hand the extracted training window to each other: MLflow artifacts.

Airflow may run ``extract``, ``validate`` and ``train`` on different workers, so a local path is no
hand-off. ``extract`` logs the window's parquet file as an artifact of a run in the experiment
``<experiment>-training-data`` (kept apart from the model runs that the MLflow UI compares) and passes
its ``runs:/`` URI on; the other tasks download it into a temporary directory. Every worker already
reaches MLflow's artifact store: it is where models are logged and loaded from.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fireman.common.errors import UserError
from fireman.common.settings import MlflowSettings
from fireman.training.tracking import connect

DATA_EXPERIMENT_SUFFIX = "-training-data"
DATA_ARTIFACT_DIR = "training-data"
DATA_TAG = "fireman.training_data_for"  # the DAG run (run key) the window was extracted for


def publish(settings: MlflowSettings, path: Path, run_key: str, timeout_s: float = 3.0) -> str:
    """Log ``path`` in a finished run of its own; returns the artifact's ``runs:/`` URI."""
    client = connect(settings, timeout_s)
    name = f"{settings.experiment}{DATA_EXPERIMENT_SUFFIX}"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run = client.create_run(experiment_id, tags={DATA_TAG: run_key}, run_name=f"data {run_key}"[:250])
    try:
        client.log_artifact(run.info.run_id, str(path), DATA_ARTIFACT_DIR)
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return f"runs:/{run.info.run_id}/{DATA_ARTIFACT_DIR}/{path.name}"


@contextmanager
def fetched(settings: MlflowSettings, uri: str, timeout_s: float = 3.0) -> Iterator[Path]:
    """The file behind ``uri`` (from :func:`publish`), in a temporary directory for the block."""
    import mlflow

    if not uri.startswith("runs:/"):
        raise UserError(f"training data must be an MLflow artifact URI (runs:/...), not {uri!r}")
    connect(settings, timeout_s)
    with tempfile.TemporaryDirectory(prefix="fireman-training-data-") as directory:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=directory, tracking_uri=settings.tracking_uri
        )
        yield Path(local)
