"""``fireman bench train``: train from N rows of InfluxDB history, timing query, fit and log/register.

History is Spambase resampled with replacement, with 20% of feature values removed at random (MCAR)
and a unique event id and time per row, written in the sink's schema to a database of the bench's
own. The MLflow experiment and registered model are the bench's own too (deleted afterwards unless
``--keep``), so the demo's ``production`` model is never touched.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from fireman.common.dataset import load_spambase, mask_completely_at_random
from fireman.common.influx import InfluxClient, Point, to_line
from fireman.common.measurements import LABELS, MEASUREMENTS
from fireman.common.schema import FEATURE_NAMES
from fireman.training.settings import TrainingSettings

BATCH = 5_000
PHASES = (
    ("query", "InfluxDB query + join"),
    ("fit", "fit pipeline"),
    ("evaluate", "hold-out metrics"),
    ("log_register", "log to MLflow + register"),
    ("gate", "promotion gate"),
)


def write_history(settings: TrainingSettings, rows: int, end: datetime, console: Console) -> datetime:
    """Write ``rows`` labelled events ending at ``end``, one millisecond apart; returns the start."""
    frame = load_spambase(settings.dataset)
    rng = np.random.default_rng(7)
    sample = frame.iloc[rng.integers(0, len(frame), rows)].reset_index(drop=True)
    sample = mask_completely_at_random(sample, 0.2, seed=7)
    features = sample[list(FEATURE_NAMES)].to_numpy()
    labels = sample["label"].to_numpy()
    start = end - timedelta(milliseconds=rows)
    start_ns = int(start.timestamp() * 1000) * 1_000_000
    with InfluxClient(settings.influxdb) as client, Progress(console=console, transient=True) as progress:
        client.drop_database(settings.influxdb.database)
        client.ensure_database()
        task = progress.add_task("writing history", total=rows)
        for first in range(0, rows, BATCH):
            lines: list[str] = []
            for i in range(first, min(first + BATCH, rows)):
                event_id = f"bench-{i}"
                tags = {"sensor_id": f"sensor-{i % 16}"}
                time_ns = start_ns + i * 1_000_000
                values = {
                    name: float(v) for name, v in zip(FEATURE_NAMES, features[i], strict=True) if v == v
                }
                for point in (
                    Point(MEASUREMENTS.name, {**values, "event_id": event_id}, time_ns, tags),
                    Point(LABELS.name, {"label": int(labels[i]), "event_id": event_id}, time_ns, tags),
                ):
                    line = to_line(point)
                    if line is not None:
                        lines.append(line)
            client.write_lines(lines)
            progress.advance(task, len(lines) // 2)
    return start


def run_bench(rows: int = 100_000, keep: bool = False, console: Console | None = None) -> dict[str, float]:
    from fireman.training.tracking import connect
    from fireman.training.workflow import run_training

    console = console or Console()
    tag = uuid.uuid4().hex[:8]
    base = TrainingSettings()
    settings = base.model_copy(
        update={
            "influxdb": base.influxdb.model_copy(update={"database": "fireman_bench_train"}),
            "mlflow": base.mlflow.model_copy(
                update={"experiment": f"bench-train-{tag}", "model_name": f"bench-train-{tag}"}
            ),
        }
    )
    client = connect(settings.mlflow, settings.health_timeout_s)
    end = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    start = write_history(settings, rows, end, console)
    write_s = time.perf_counter() - started
    console.print(f"wrote {rows} labelled events to InfluxDB in {write_s:.1f} s (setup, not timed below)")
    try:
        with console.status("training from InfluxDB history…"):
            outcome = run_training(settings, source="influx", since=start, until=end + timedelta(seconds=1))
    finally:
        if not keep:
            with InfluxClient(settings.influxdb) as influx:
                influx.drop_database(settings.influxdb.database)
    total = sum(outcome.timings.get(key, 0.0) for key, _ in PHASES)
    table = Table(
        "phase", "seconds", "share", title=f"fireman bench train: {outcome.rows} rows from InfluxDB"
    )
    for key, label in PHASES:
        seconds = outcome.timings.get(key, 0.0)
        table.add_row(label, f"{seconds:.2f}", f"{seconds / total:.0%}")
    table.add_row("[bold]total[/]", f"[bold]{total:.2f}[/]", "100%")
    console.print(table)
    console.print(
        f"hold-out f1 {outcome.metrics['f1']:.4f} (resampled rows repeat, so this is not a quality figure); "
        f"target total <= 60 s: {'met' if total <= 60 else 'NOT met'}"
    )
    if not keep:
        client.delete_registered_model(settings.mlflow.model_name)
        experiment = client.get_experiment_by_name(settings.mlflow.experiment)
        if experiment is not None:
            client.delete_experiment(experiment.experiment_id)
    return {**outcome.timings, "total": total, "rows": float(outcome.rows)}
