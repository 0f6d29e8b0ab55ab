"""`fireman models`, `promote` and `rollback` as a user runs them: new processes against real MLflow.

They must start fast (issue #13: under 3 s). ``fireman bench cli`` measures the time; this test
holds the cause: none of them imports ``mlflow`` (3 to 7 s on its own) or scikit-learn.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from fireman.common.model_registry import RegistryClient
from fireman.common.settings import MlflowSettings

pytestmark = pytest.mark.integration

HEAVY = ("mlflow", "sklearn", "pandas")


def run_fireman(names: MlflowSettings, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``fireman ARGS``; also returns the top-level packages the process imported."""
    env = {
        **os.environ,
        "FIREMAN_MLFLOW_TRACKING_URI": names.tracking_uri,
        "FIREMAN_MLFLOW_MODEL_NAME": names.model_name,
        "COLUMNS": "80",
    }
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fireman.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    return done, imported


def test_registry_commands_work_without_importing_mlflow(
    new_registered_model: Callable[[], MlflowSettings],
) -> None:
    names = new_registered_model()
    steps = [
        (("promote", "1", "--by", "ops"), "production -> v1"),
        (("promote", "3", "--by", "ops"), "previous -> v1"),
        (("rollback", "--by", "ops"), "production -> v1 (rolled back from v3)"),
        (("models",), "production"),
    ]
    for args, expected in steps:
        done, imported = run_fireman(names, *args)
        assert done.returncode == 0, done.stderr[-2000:]
        assert expected in done.stdout, done.stdout
        assert not imported & set(HEAVY), f"fireman {' '.join(args)} imported {imported & set(HEAVY)}"
    with RegistryClient(names) as client:
        assert client.version_by_alias(names.model_name, names.production_alias).version == "1"  # type: ignore[union-attr]


def test_an_unknown_version_is_one_line_and_exit_2(
    new_registered_model: Callable[[], MlflowSettings],
) -> None:
    names = new_registered_model()
    done, _ = run_fireman(names, "promote", "99")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert errors == [f"error: unknown version 99 of registered model {names.model_name!r}"], errors
