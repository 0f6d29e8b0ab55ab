"""``fireman bench cli``: how long ``fireman --help``, ``models``, ``promote`` and ``rollback`` take.

Each command runs as a user runs it, a new ``fireman`` process against the MLflow server in the
settings, on a registered model of the bench's own (two versions without artifacts, deleted
afterwards), so the demo's ``production`` model is never touched. The baseline, measured in the same
run, is a process that only imports ``mlflow``: what every registry command paid before they went
over MLflow's REST API.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from fireman.common import production_history
from fireman.common.errors import UserError
from fireman.common.model_registry import RegistryClient, check_health
from fireman.common.settings import MlflowSettings

TARGET_S = 3.0
# From production at v1 and back: every round starts where the last one ended.
COMMANDS = (("--help",), ("models",), ("promote", "2"), ("rollback",))
BASELINE = "python -c 'import mlflow'"


@dataclass(frozen=True)
class CliTimings:
    seconds: dict[str, float]  # median wall time per command line
    baseline_s: float

    @property
    def slowest(self) -> tuple[str, float]:
        return max(self.seconds.items(), key=lambda item: item[1])


def _timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        command = " ".join(argv[2:])
        raise UserError(f"{command} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return elapsed


def _bench_model(settings: MlflowSettings) -> MlflowSettings:
    """A registered model of two versions, ``production`` at version 1."""
    import logging

    from fireman.common import mlflow_uri

    names = settings.model_copy(update={"model_name": f"bench-cli-{uuid.uuid4().hex[:8]}"})
    client = mlflow_uri.client(names)
    # After the import: MLflow configures its logger then. Its "waiting for model version" lines
    # would interleave with the table.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    client.create_registered_model(names.model_name)
    for _ in range(2):
        # Only aliases and tags are touched: no artifact is ever read from this source.
        client.create_model_version(names.model_name, source="s3://fireman-bench/no-artifacts", run_id=None)
    with RegistryClient(names) as registry:
        production_history.push(registry, names, "1", by="fireman bench cli", how="manual")
    return names


def run_bench(repeats: int = 3, console: Console | None = None) -> CliTimings:
    console = console or Console()
    settings = MlflowSettings()
    check_health(settings)
    names = _bench_model(settings)
    env = {
        **os.environ,
        "FIREMAN_MLFLOW_TRACKING_URI": names.tracking_uri,
        "FIREMAN_MLFLOW_MODEL_NAME": names.model_name,
    }
    samples: dict[str, list[float]] = {" ".join(command): [] for command in COMMANDS}
    baseline: list[float] = []
    try:
        with console.status("timing fireman commands…", spinner="dots"):
            # Interleaved, so a change in the machine's load touches every command alike.
            for _ in range(repeats):
                baseline.append(_timed([sys.executable, "-c", "import mlflow"], env))
                for command in COMMANDS:
                    samples[" ".join(command)].append(
                        _timed([sys.executable, "-m", "fireman.cli", *command], env)
                    )
    finally:
        with RegistryClient(names) as client:
            client.delete_model(names.model_name)
    timings = CliTimings(
        {key: statistics.median(values) for key, values in samples.items()}, statistics.median(baseline)
    )
    title = f"fireman CLI ({repeats} runs)"
    table = Table("command", "median wall time", "vs. importing mlflow", title=title)
    for key, seconds in timings.seconds.items():
        table.add_row(f"fireman {key}", f"{seconds:.2f} s", f"{seconds / timings.baseline_s:.2f}")
    table.add_row(BASELINE, f"{timings.baseline_s:.2f} s", "1.00")
    console.print(table)
    return timings
