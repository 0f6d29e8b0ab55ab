"""`fireman bench ...`: the benchmarks' commands. Heavy imports stay inside the command functions.

Benchmarks sit above the product (they import it, never the reverse), so the `fireman` CLI does not
import this module: it loads it as a plug-in through the ``fireman.cli`` entry point in
pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from fireman.training.cli import quiet_mlflow


def require_services(*names: str) -> None:
    """Stop with one line (exit 2) naming what is down, rather than a client's traceback mid-run."""
    from fireman.common.errors import UserError
    from fireman.common.settings import ServicesSettings
    from fireman.services.manager import ServiceManager

    services = ServiceManager(ServicesSettings()).services
    down = [f"{name} at {services[name].describe()}" for name in names if not services[name].healthy()]
    if down:
        raise UserError(
            f"this benchmark needs {', '.join(down)}: start the servers with `fireman services start`"
        )


def row_counts(text: str, option: str) -> list[int]:
    """``"1,100"`` as row counts; anything else is a usage error naming ``option`` (exit 2)."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a comma-separated list of row counts", param_hint=option
        ) from None
    if not counts or min(counts) < 1:
        raise typer.BadParameter("give at least one row count, each 1 or more", param_hint=option)
    return counts


def _quiet_logging() -> None:
    """Warnings only, and no librdkafka connection chatter, over a long run's progress output."""
    import logging

    from fireman.common.runtime import configure_logging

    configure_logging("WARNING")
    logging.getLogger("kafka").setLevel(logging.ERROR)


def register(app: typer.Typer) -> None:
    """Add the `fireman bench` group to the `fireman` app."""
    bench_app = typer.Typer(
        no_args_is_help=True, help="Benchmarks: measured side by side, reported as ratios."
    )
    app.add_typer(bench_app, name="bench")

    @bench_app.callback()
    def setup() -> None:
        from fireman.common.runtime import unwind_on_sigterm

        unwind_on_sigterm()

    @bench_app.command("collector")
    def bench_collector(
        duration: float = typer.Option(10.0, help="Seconds per scenario."),
        concurrency: int = typer.Option(64, help="Concurrent connections for single-event POSTs."),
        batch_concurrency: int = typer.Option(4, help="Concurrent connections for batch POSTs."),
        batch_size: int = typer.Option(1000, help="Events per batch POST."),
        workers: str = typer.Option("1", help="Comma-separated collector worker counts to compare."),
        profile: Path | None = typer.Option(None, help="Write a cProfile of the collector (workers=1) here."),
    ) -> None:
        """Events/s through the collector, acknowledged by Kafka: single-event vs batch POSTs."""
        require_services("kafka")
        from fireman.bench.collector import BenchOptions, run_bench

        run_bench(
            BenchOptions(
                duration_s=duration,
                concurrency=concurrency,
                batch_concurrency=batch_concurrency,
                batch_size=batch_size,
                workers=[int(part) for part in workers.split(",") if part.strip()],
                profile=profile,
            )
        )

    @bench_app.command("scorer")
    def bench_scorer(
        events: int = typer.Option(200_000, min=1000, help="Events for the throughput run."),
        rate: int = typer.Option(2000, min=1, help="Events/s for the latency run."),
        latency_seconds: float = typer.Option(20.0, min=1.0, help="Length of the latency run."),
        baseline_seconds: float = typer.Option(10.0, min=1.0, help="Length of the per-message baseline run."),
        poison_share: float = typer.Option(
            0.05, min=0.0, max=0.5, help="Share of raw poison mixed into the second throughput run."
        ),
    ) -> None:
        """End-to-end scorer throughput and latency beside a one-predict-per-message baseline."""
        require_services("kafka", "influxdb", "mlflow")
        from fireman.bench.scorer import BenchOptions, run_bench
        from fireman.common.runtime import configure_logging

        configure_logging("WARNING")
        run_bench(
            BenchOptions(
                events=events,
                rate=rate,
                latency_seconds=latency_seconds,
                baseline_seconds=baseline_seconds,
                poison_share=poison_share,
            )
        )

    @bench_app.command("onnx")
    def bench_onnx(
        batches: str = typer.Option(
            "200,1000,5000",
            help="Comma-separated rows per model call (200: 2,000 events/s in 100 ms; 5000: the scorer's "
            "max batch, under backlog).",
        ),
        seconds: float = typer.Option(2.0, min=0.1, help="Seconds per backend and turn."),
        turns: int = typer.Option(3, min=1, help="Turns of every backend; each reports its best."),
    ) -> None:
        """Predict-only rows/s of the training pipeline: sklearn beside its ONNX export (no server)."""
        from fireman.bench.onnx import BenchOptions, run_bench

        run_bench(BenchOptions(batches=row_counts(batches, "--batches"), seconds=seconds, turns=turns))

    @bench_app.command("serve")
    def bench_serve(
        rate: float = typer.Option(200.0, min=1, help="Requests per second, open-loop."),
        duration: float = typer.Option(20.0, min=1, help="Seconds per scenario, after the warm-up."),
        rows: str = typer.Option("1,100", help="Comma-separated rows per request, one scenario each."),
    ) -> None:
        """p50/p99 latency of `fireman serve` (Open Inference Protocol V2) at a fixed request rate."""
        require_services("mlflow")
        from fireman.bench.serve import BenchOptions, run_bench

        quiet_mlflow()
        run_bench(BenchOptions(rate=rate, duration_s=duration, rows=row_counts(rows, "--rows")))

    @bench_app.command("shadow")
    def bench_shadow(
        events: int = typer.Option(100_000, min=1000, help="Events in the backlog each run scores."),
        repeats: int = typer.Option(2, min=1, help="Runs of each mode, in alternating order."),
    ) -> None:
        """Scorer throughput: production alone, with a challenger in its batch, or beside a second scorer."""
        require_services("kafka", "influxdb", "mlflow")
        quiet_mlflow()
        from fireman.bench.shadow import BenchOptions, run_bench
        from fireman.common.runtime import configure_logging

        configure_logging("WARNING")
        run_bench(BenchOptions(events=events, repeats=repeats))

    @bench_app.command("scale-out")
    def bench_scale_out(
        events: int = typer.Option(400_000, min=1000, help="Events in the backlog each run scores."),
        repeats: int = typer.Option(2, min=1, help="Runs of each mode, in alternating order (1, 2, 2, 1)."),
        monitor: bool = typer.Option(
            True, "--monitor/--no-monitor", help="Also time one monitor over the same events."
        ),
    ) -> None:
        """Scorer throughput with one and with two scorers in one consumer group; one monitor's rate."""
        require_services("kafka", "influxdb", "mlflow")
        quiet_mlflow()
        from fireman.bench.scale_out import BenchOptions, run_bench
        from fireman.common.runtime import configure_logging

        configure_logging("WARNING")
        run_bench(BenchOptions(events=events, repeats=repeats, monitor=monitor))

    @bench_app.command("train")
    def bench_train(
        rows: int = typer.Option(
            100_000, "--rows", help="Labelled events of InfluxDB history to train from."
        ),
        keep: bool = typer.Option(False, "--keep", help="Keep the benchmark database and model afterwards."),
    ) -> None:
        """Time training from InfluxDB history: query, fit and log/register, each measured separately."""
        require_services("influxdb", "mlflow")
        quiet_mlflow()
        from fireman.bench.train import run_bench

        run_bench(rows=rows, keep=keep, console=Console())

    @bench_app.command("monitoring")
    def bench_monitoring(
        events: int = typer.Option(600_000, min=2000, help="Events per scorer throughput run."),
        repeats: int = typer.Option(4, min=1, help="Runs per configuration; the figures are their means."),
        windows: int = typer.Option(5, min=1, help="Windows timed for the Evidently cost."),
    ) -> None:
        """Scorer throughput: monitor off and on, defaults and the JSON/sklearn path; Evidently's cost."""
        require_services("kafka", "influxdb", "mlflow")
        from fireman.bench.monitoring import BenchOptions, run_bench
        from fireman.common.runtime import configure_logging

        configure_logging("WARNING")
        run_bench(BenchOptions(events=events, repeats=repeats, windows=windows))

    @bench_app.command("soak")
    def bench_soak(
        minutes: float = typer.Option(10.0, min=0.5, help="Length of the run."),
        rate: float = typer.Option(200.0, min=1, help="Generator events per second."),
        batch: int = typer.Option(20, min=1, help="Events per generator POST."),
        sample_seconds: float = typer.Option(5.0, min=1, help="Seconds between samples."),
        monitor: bool = typer.Option(True, "--monitor/--no-monitor", help="Run the drift monitor too."),
    ) -> None:
        """The full pipeline at a fixed rate: RSS of every process, consumer lag, end-to-end latency."""
        require_services("kafka", "influxdb", "mlflow")
        from fireman.bench.soak import SoakOptions, run_soak

        _quiet_logging()
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
        require_services("mlflow")
        from fireman.bench.cli_startup import TARGET_S, run_bench

        timings = run_bench(repeats=repeats)
        if timings.slowest[1] > TARGET_S:
            raise typer.Exit(1)

    @bench_app.command("report")
    def bench_report(
        output: Path = typer.Option(Path("docs/performance.md"), help="Where to write the report."),
        soak_minutes: float = typer.Option(10.0, min=0.5, help="Length of the soak run."),
        quick: bool = typer.Option(False, "--quick", help="Short runs of every bench (a smoke test)."),
    ) -> None:
        """Run every bench (collector to soak), build the capacity model; write the report."""
        require_services("kafka", "influxdb", "mlflow")
        from fireman.bench.report import ReportOptions, run_report

        _quiet_logging()
        run_report(ReportOptions(output=output, soak_minutes=soak_minutes, quick=quick))
