"""`fireman bench report --quick` end to end against the session's Kafka, InfluxDB and MLflow.

Short runs of every bench (not for quoting): what is checked is that each bench ran, fed the report
its figures with targets and verdicts, and that the written page says how and where they were made.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from fireman.bench.report import ReportOptions, run_report
from fireman.common.settings import DatasetSettings, InfluxSettings, KafkaSettings, MlflowSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quick_report_has_every_bench_with_figures_and_verdicts(
    # The benches use the default settings, which are the session's servers.
    kafka_service: KafkaSettings,
    influx_service: InfluxSettings,
    mlflow_service: MlflowSettings,
    dataset_settings: DatasetSettings,
    tmp_path: Path,
) -> None:
    output = tmp_path / "performance.md"
    console = Console(record=True, width=160)
    run_report(ReportOptions(output=output, soak_minutes=0.5, quick=True), console=console)

    page = output.read_text()
    assert "failed:" not in page, console.export_text()[-4000:]
    # The summary table ends where the next section (the capacity model) starts.
    summary = page.split("## Summary", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "---" not in line][1:]
    figures = [row.split(" | ")[0].lstrip("| ") for row in rows]
    for expected in (
        "collector (1 worker), events/s in batch POSTs of 1,000",
        "collector (2 workers), events/s in batch POSTs of 1,000",
        "scorer, end-to-end events/s (Kafka → model → Kafka + InfluxDB)",
        "scorer vs the seed's loop",
        "scorer p50 / p99 latency at 2,000 events/s, defaults",
        "scorer rate of good events with 5% raw poison mixed in",
        "model call alone, batches of 1,000, onnxruntime",
        "scorer end to end with monitoring on, defaults",
        "scorer throughput with monitoring on / off",
        "1 scorer in one group",
        "2 scorers in one group",
    ):
        assert any(figure.startswith(expected) for figure in figures), (expected, figures)
    # The latency and the monitored throughput stand beside the configuration before #17.
    for row in rows:
        if row.startswith(("| scorer p50 / p99 latency", "| scorer end to end with monitoring on")):
            assert "JSON events, scikit-learn" in row.split(" | ")[4], row
    # The capacity model is built from this run's figures, and checked against its scale-out runs.
    capacity = page.split("## Capacity model", 1)[1].split("## How the figures were produced", 1)[0]
    assert "| **all** |" in capacity and "| events/s | cores | scorer replicas |" in capacity, capacity
    assert "| 2 | " in capacity.split("measured / model", 1)[1], capacity
    assert any(figure.startswith("training from") for figure in figures), figures
    assert any(figure.startswith("soak") for figure in figures), figures
    assert any(figure.startswith("serve p50 / p99 latency, 100 rows") for figure in figures), figures
    assert any(figure.startswith("slowest of fireman --help, models") for figure in figures), figures
    verdicts = {row.split(" | ")[3] for row in rows}
    assert verdicts <= {"met", "**short**", "-"}, verdicts
    # One Kafka client, the shipped one: every collector figure is judged against its target.
    for row in rows:
        if row.startswith("| collector"):
            assert row.split(" | ")[3] in {"met", "**short**"}, row
    assert "--quick" in page and "## Machine" in page and "performance-notes.md" in page
