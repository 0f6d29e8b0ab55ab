"""`fireman` commands of the serving package. Heavy imports stay inside the command functions."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this package's commands to the `fireman` app and its `fireman bench` group."""

    @app.command("scorer")
    def scorer(
        log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    ) -> None:
        """Score `measurements` with the registry's production model (settings: FIREMAN_SCORER_*).

        SIGTERM or Ctrl-C finishes the batch in flight, commits and exits 0.
        """
        from fireman_common.runtime import configure_logging, load_settings, stop_on_signals
        from serving.scorer import Scorer
        from serving.settings import ScorerSettings

        configure_logging(log_level)
        Scorer(load_settings(ScorerSettings)).run(stop_on_signals())

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
        from bench.scorer import BenchOptions, run_bench
        from fireman_common.runtime import configure_logging

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
