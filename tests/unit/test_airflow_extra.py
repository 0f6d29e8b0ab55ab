"""Airflow is the `airflow` extra: the runtime processes work without it, and what needs it says so."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from fireman.common.settings import ServicesSettings
from fireman.services.airflow import AirflowService
from fireman.services.process import ServiceError
from tests.conftest import REPO_ROOT

# Every fireman module imported in a process where `import airflow` fails, then each runtime command's
# help: what an install without the extra can run. The DAG tasks' module is the one that needs Airflow.
WITHOUT_AIRFLOW = """
import importlib, pkgutil, sys

class NoAirflow:
    def find_spec(self, name, path=None, target=None):
        if name == "airflow" or name.startswith("airflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoAirflow())
import fireman
names = [m.name for m in pkgutil.walk_packages(fireman.__path__, "fireman.")]
for name in names:
    if name != "fireman.training.dag_tasks":
        importlib.import_module(name)
assert "airflow" not in sys.modules
from fireman.cli import app
from typer.testing import CliRunner
for command in ("collector", "sink", "scorer", "monitor", "serve", "dashboard"):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, (command, result.output)
print(len(names))
"""


def test_the_runtime_imports_and_runs_without_airflow() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_AIRFLOW], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) > 50  # the walk found the package's modules


def test_starting_airflow_without_the_extra_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "airflow" else real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    service = AirflowService(ServicesSettings(), tmp_path)
    with pytest.raises(ServiceError, match=r"fireman\[airflow\]"):
        service.check_prerequisites()
