"""Training, registration and the promotion gate against the real MLflow server.

One lifecycle per test model name: a weak first model becomes the champion because there is none,
a deliberately worse challenger is rejected (and says why), a model with the real defaults wins
(and meets F1 >= 0.90 on Spambase with 20% MCAR missingness), then rollback restores the old champion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.types import DataType
from typer.testing import CliRunner

from fireman.cli import app
from fireman.common.dataset import load_spambase, mask_completely_at_random
from fireman.common.errors import UserError
from fireman.common.mlflow_uri import bind
from fireman.common.mlflow_uri import client as mlflow_client
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings, MlflowSettings
from fireman.training.settings import TrainingSettings
from fireman.training.workflow import HOLDOUT_ARTIFACT, REFERENCE_ARTIFACT, run_training
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def cli_env(names: MlflowSettings) -> dict[str, str]:
    return {"FIREMAN_MLFLOW_EXPERIMENT": names.experiment, "FIREMAN_MLFLOW_MODEL_NAME": names.model_name}


def test_gated_lifecycle(mlflow_names: MlflowSettings, dataset_settings: DatasetSettings) -> None:
    settings = TrainingSettings(mlflow=mlflow_names, dataset=dataset_settings)
    client = mlflow_client(mlflow_names)
    name = mlflow_names.model_name

    def alias(which: str) -> str | None:
        aliases = client.get_registered_model(name).aliases
        return str(aliases[which]) if which in aliases else None

    # No champion yet: the first version is promoted whatever its quality.
    weak = run_training(settings, params={"n_estimators": 5, "max_depth": 3})
    assert (weak.version, weak.promoted, weak.decision) == ("1", True, "first")
    assert alias("production") == "1" and alias("previous") is None
    run = client.get_run(weak.run_id)
    assert {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "missing_rate"} <= set(
        run.data.metrics
    )
    assert run.data.params["data_source"] == "file" and run.data.params["rows_total"] == "4601"
    artifacts = {item.path for item in client.list_artifacts(weak.run_id)}
    assert {"confusion_matrix.png", "features.json", "reference", "holdout"} <= artifacts
    version_tags = client.get_model_version(name, "1").tags
    assert version_tags["data_source"] == "file" and version_tags["data_rows"] == "4601"

    # A deliberately worse challenger is registered, not promoted, and its tags say why. It becomes the
    # challenger alias: scored in shadow, it can still win on live data (`fireman promote --live`).
    worse = run_training(settings, params={"n_estimators": 1, "max_depth": 1})
    assert (worse.version, worse.promoted, worse.decision, worse.challenger) == ("2", False, "rejected", True)
    assert alias("production") == "1" and alias("challenger") == "2"
    tags = client.get_model_version(name, "2").tags
    assert tags["gate.decision"] == "rejected" and tags["gate.compared_with"] == "1"
    assert "does not beat the champion on f1" in tags["gate.reason"]
    compared = json.loads(tags["gate.metrics"])
    assert compared["challenger"]["f1"] < compared["champion"]["f1"]
    assert json.loads(client.get_model_version(name, "1").tags["gate.challenge.v2"])["decision"] == "rejected"

    # The real defaults win; the old champion keeps `previous`. This is also the quality acceptance.
    best = run_training(settings)
    print(f"\nhold-out F1 on Spambase with 20% MCAR missingness (defaults): {best.metrics['f1']:.4f}")
    assert best.metrics["f1"] >= 0.90
    assert (best.version, best.promoted, best.decision) == ("3", True, "promoted")
    assert alias("production") == "3" and alias("previous") == "1"
    assert alias("challenger") == "2"  # a promoted candidate does not take the challenger alias
    assert client.get_model_version(name, "1").tags["gate.replaced_by"] == "3"

    # Served through the alias, the model gives the in-memory pipeline's results on rows with NaNs.
    spambase = load_spambase(dataset_settings)
    rows = mask_completely_at_random(spambase.sample(300, random_state=1), 0.3, seed=3)[list(FEATURE_NAMES)]
    assert rows.isna().any(axis=1).all()
    expected = best.model.predict(rows)
    uri = f"models:/{name}@production"
    bind(mlflow_names)
    np.testing.assert_array_equal(mlflow.sklearn.load_model(uri).predict(rows), expected)
    pyfunc = mlflow.pyfunc.load_model(uri)
    inputs = pyfunc.metadata.get_input_schema().input_types_dict()
    assert list(inputs) == list(FEATURE_NAMES) and set(inputs.values()) == {DataType.double}
    np.testing.assert_array_equal(np.asarray(pyfunc.predict(rows)), expected)

    runner = CliRunner()
    env = cli_env(mlflow_names)
    # Rollback restores the version that served before (and says so); with nothing served before
    # that, a second rollback refuses instead of guessing.
    result = runner.invoke(app, ["rollback", "--by", "test-suite"], env=env)
    assert result.exit_code == 0, result.output
    assert "production -> v1 (rolled back from v3)" in result.output
    assert "v1 served before it" in " ".join(result.output.split())
    assert alias("production") == "1" and alias("previous") is None
    assert client.get_model_version(name, "3").tags["rollback.by"] == "test-suite"
    result = runner.invoke(app, ["rollback"], env=env)
    assert isinstance(result.exception, UserError), result.output
    assert "cannot tell which version served before v1" in str(result.exception)

    # A manual promotion bypasses the gate: the version keeps the gate's verdict and gains a record
    # of who promoted it, when, and from which version.
    result = runner.invoke(app, ["promote", "2", "--by", "alice"], env=env)
    assert result.exit_code == 0, result.output
    assert alias("production") == "2" and alias("previous") == "1"
    assert alias("challenger") is None  # the challenger now serves: no shadow beside itself
    tags = client.get_model_version(name, "2").tags
    assert tags["gate.decision"] == "rejected" and "does not beat the champion" in tags["gate.reason"]
    assert (tags["manual.by"], tags["manual.from_version"]) == ("alice", "1")
    result = runner.invoke(app, ["promote", "99"], env=env)
    assert isinstance(result.exception, UserError) and "unknown version 99" in str(result.exception)

    # At 80 columns the table keeps version, aliases and decision whole.
    shown = subprocess.run(
        [sys.executable, "-m", "fireman.cli", "models"],
        env={**os.environ, **env, "COLUMNS": "80", "FIREMAN_MLFLOW_TRACKING_URI": mlflow_names.tracking_uri},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert max(map(len, lines)) <= 80, shown.stdout
    assert any(line.split()[:4] == ["2", "production", "rejected", "+"] for line in lines if line.strip())
    assert any(line.split()[:3] == ["1", "previous", "first"] for line in lines if line.strip())

    result = runner.invoke(app, ["models", "--json"], env=env)
    assert result.exit_code == 0, result.output
    listed = {row["version"]: row for row in json.loads(result.stdout)}
    assert set(listed) == {"1", "2", "3"}
    assert listed["2"]["aliases"] == ["production"] and listed["1"]["aliases"] == ["previous"]
    assert listed["3"]["metrics"]["f1"] == pytest.approx(best.metrics["f1"])
    assert listed["3"]["data"]["data_source"] == "file"

    # The drift reference and the hold-out are in the run, as float64 feature columns.
    reference = mlflow.artifacts.download_artifacts(run_id=best.run_id, artifact_path=REFERENCE_ARTIFACT)

    sample = pd.read_parquet(reference)
    assert list(sample.columns) == list(FEATURE_NAMES) and (sample.dtypes == "float64").all()
    assert len(
        pd.read_parquet(
            mlflow.artifacts.download_artifacts(run_id=best.run_id, artifact_path=HOLDOUT_ARTIFACT)
        )
    )


def test_train_cli_json_and_never_mode(
    mlflow_names: MlflowSettings, dataset_settings: DatasetSettings
) -> None:
    result = CliRunner().invoke(
        app,
        ["train", "--promote", "never", "--param", "n_estimators=20", "--json"],
        env=cli_env(mlflow_names),
    )
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)  # MLflow's registration notes go to stderr
    assert (outcome["version"], outcome["promoted"], outcome["decision"]) == ("1", False, "skipped")
    assert set(outcome["metrics"]) == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    client = mlflow_client(mlflow_names)
    assert client.get_registered_model(mlflow_names.model_name).aliases == {}
    assert client.get_run(outcome["run_id"]).data.params["n_estimators"] == "20"


def test_unreachable_tracking_server_exits_2_quickly() -> None:
    env = {**os.environ, "FIREMAN_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    done = subprocess.run(
        [sys.executable, "-m", "fireman.cli", "rollback"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "unreachable" in done.stderr and "Traceback" not in done.stderr


def train(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fireman.cli", "train", "--promote", "never", *args],
        env={**os.environ, "COLUMNS": "80", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The error lines of a run that must end in exit 2; the environment's MLFLOW_* notices aside."""
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return [line for line in done.stderr.splitlines() if not line.startswith("ignoring MLFLOW_")]


@pytest.mark.parametrize(
    ("param", "reason"),
    [
        ("n_estimators=abc", "'n_estimators' parameter of RandomForestClassifier must be an int"),
        ("n_estimators=-1", "'n_estimators' parameter of RandomForestClassifier must be an int"),
        ("criterion=bogus", "'criterion' parameter of RandomForestClassifier must be a str among"),
        ("imputer_strategy=bogus", "'strategy' parameter of SimpleImputer must be a str among"),
    ],
)
def test_a_bad_model_parameter_value_is_one_line_before_training(param: str, reason: str) -> None:
    [line] = errors(train({}, "--param", param))
    assert line.startswith(f"error: --param {param}: ") and reason in line, line


def _spambase_copy(rows: int) -> list[list[str]]:
    frame = load_spambase(DatasetSettings()).head(rows)
    return [list(frame.columns), *frame.astype(str).to_numpy().tolist()]


def _with(cells: list[list[str]], line: int, column: str, value: str) -> str:
    changed = [list(row) for row in cells]
    changed[line - 1][changed[0].index(column)] = value
    return "\n".join(",".join(row) for row in changed) + "\n"


BAD_FILES = {
    "text feature": (
        lambda c: _with(c, 18, "Cont_3", "abc"),
        "column Cont_3 line 18: 'abc' is not a finite number",
    ),
    "infinite feature": (
        lambda c: _with(c, 4, "Cont_1", "inf"),
        "column Cont_1 line 4: 'inf' is not a finite number",
    ),
    "empty label": (
        lambda c: _with(c, 6, "label", ""),
        "column label line 6: an empty cell is not a whole-number",
    ),
    "text label": (
        lambda c: _with(c, 6, "label", "spam"),
        "column label line 6: 'spam' is not a whole-number",
    ),
    "empty file": (lambda c: "", "is not a readable CSV file"),
    "header only": (lambda c: ",".join(c[0]) + "\n", "has a header but no rows"),
    "binary": (lambda c: bytes(range(256)) * 8, "is not a readable CSV file"),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=str)
def test_a_bad_training_file_is_one_line_naming_it(case: str, tmp_path: Path) -> None:
    make, expected = BAD_FILES[case]
    content = make(_spambase_copy(300))
    path = tmp_path / "spambase.csv"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    [line] = errors(train({"FIREMAN_SPAMBASE_PATH": str(path)}))
    assert line.startswith(f"error: {path}") and expected in line, line


def test_brackets_in_an_error_reach_stderr_intact(tmp_path: Path) -> None:
    # "[spam]" is valid Rich markup: printed as markup, the path would lose it.
    folder = tmp_path / "[spam]"
    folder.mkdir()
    assert errors(train({"FIREMAN_SPAMBASE_PATH": str(folder)})) == [
        f"error: FIREMAN_SPAMBASE_PATH points to {folder}, which is a directory"
    ]
