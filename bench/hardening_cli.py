"""`fireman bench soak`, `cli` and `report`. Heavy imports stay inside the command functions."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add the soak, the CLI timings and the benchmark report to the `fireman bench` group."""

    @bench_app.command("soak")
    def bench_soak(
        minutes: float = typer.Option(10.0, min=0.5, help="Length of the run."),
        rate: float = typer.Option(200.0, min=1, help="Generator events per second."),
        batch: int = typer.Option(20, min=1, help="Events per generator POST."),
        sample_seconds: float = typer.Option(5.0, min=1, help="Seconds between samples."),
        monitor: bool = typer.Option(True, "--monitor/--no-monitor", help="Run the drift monitor too."),
    ) -> None:
        """The full pipeline at a fixed rate: RSS of every process, consumer lag, end-to-end latency."""
        import logging

        from bench.soak import SoakOptions, run_soak
        from fireman_common.runtime import configure_logging

        configure_logging("WARNING")
        logging.getLogger("kafka").setLevel(logging.ERROR)
        result = run_soak(
            SoakOptions(minutes=minutes, rate=rate, batch=batch, sample_s=sample_seconds, monitor=monitor)
        )
        if not (result.memory_flat and result.lag_bounded) or result.exited:
            raise typer.Exit(1)

    @bench_app.command("cli")
    def bench_cli(
        repeats: int = typer.Option(3, min=1, help="Runs of each command (the median counts)."),
    ) -> None:
        """Wall time of `fireman --help`, `models`, `promote` and `rollback`, beside `import mlflow`."""
        from bench.cli_startup import TARGET_S, run_bench

        timings = run_bench(repeats=repeats)
        if timings.slowest[1] > TARGET_S:
            raise typer.Exit(1)

    @bench_app.command("report")
    def bench_report(
        output: Path = typer.Option(Path("docs/performance.md"), help="Where to write the report."),
        soak_minutes: float = typer.Option(10.0, min=0.5, help="Length of the soak run."),
        quick: bool = typer.Option(False, "--quick", help="Short runs of every bench (a smoke test)."),
    ) -> None:
        """Run the collector, scorer, training, monitoring and soak benches; write the report."""
        import logging

        from bench.report import ReportOptions, run_report
        from fireman_common.runtime import configure_logging

        configure_logging("WARNING")
        logging.getLogger("kafka").setLevel(logging.ERROR)
        run_report(ReportOptions(output=output, soak_minutes=soak_minutes, quick=quick))
