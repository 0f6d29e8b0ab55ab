"""The built wheel installs one import name, `fireman`, holding every package (docs/decisions.md).

The card's folders (serving/, training/, streaming/, bench/) are linked into fireman/; a wheel built
from a checkout must contain them as real files, and nothing may be importable under a bare folder
name once the repository is not on the path.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # The build backend as pyproject.toml declares it (uv caches it after the first build).
    subprocess.run(
        [sys.executable, "-m", "uv", "build", "--wheel", "-q", "-o", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("fireman-*.whl")
    return built


def test_the_wheel_has_one_top_level_name_and_every_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"fireman"}
    for module in (
        "fireman/serving/scorer.py",
        "fireman/training/pipeline.py",
        "fireman/streaming/collector.py",
        "fireman/monitoring/monitor.py",
        "fireman/common/events.py",
        "fireman/bench/cli.py",
        "fireman/dashboard/static/index.html",
        "fireman/common/data/spambase.csv.gz",
    ):
        assert module in names
    entry_points = zipfile.ZipFile(wheel).read(
        next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    )
    assert b"fireman = fireman.cli:main" in entry_points
    assert b"bench = fireman.bench.cli:register" in entry_points


def test_the_unpacked_wheel_imports_as_fireman_only(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import importlib.util, fireman.serving.scorer, fireman.bench.cli, fireman.cli\n"
        "print(fireman.serving.scorer.__file__)\n"
        "print([n for n in ('serving', 'training', 'streaming', 'monitoring', 'dashboard', 'bench',"
        " 'fireman_common') if importlib.util.find_spec(n)])\n"
    )
    # Run from the unpacked wheel's folder, with it first on the path and the repository off it.
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    scorer_file, bare_names = result.stdout.splitlines()
    assert scorer_file == str(site / "fireman" / "serving" / "scorer.py")
    assert bare_names == "[]"
