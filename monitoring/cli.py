"""`fireman` commands of the monitoring package. Heavy imports stay inside the command functions."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this package's commands to the `fireman` app and its `fireman bench` group."""

    @app.command("monitor")
    def monitor(
        log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    ) -> None:
        """Drift windows (Evidently) and online accuracy from delayed labels, into InfluxDB.

        Settings: FIREMAN_MONITOR_* (window size and seconds, drift threshold, alert windows...).
        Runs at a lower CPU priority than the scorer (FIREMAN_MONITOR_NICE). SIGTERM or Ctrl-C
        finishes the windows already closed, writes, commits and exits 0.
        """
        import os
        import signal
        import threading

        from pydantic import ValidationError

        from fireman_common.errors import UserError
        from monitoring.monitor import Monitor
        from monitoring.settings import MonitorSettings
        from serving.runtime import configure_logging

        configure_logging(log_level)
        try:
            settings = MonitorSettings()
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise UserError(f"invalid FIREMAN_MONITOR_* settings: {problems}") from None
        if settings.nice:
            # Monitoring is best effort: under CPU pressure the scorer goes first and the monitor lags.
            os.nice(settings.nice)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        Monitor(settings).run(stop)

    @bench_app.command("monitoring")
    def bench_monitoring(
        events: int = typer.Option(60_000, min=2000, help="Events per scorer throughput run."),
        repeats: int = typer.Option(2, min=1, help="Alternating off/on runs."),
        windows: int = typer.Option(5, min=1, help="Windows timed for the Evidently cost."),
    ) -> None:
        """Scorer throughput with the monitor off and on, side by side; Evidently's cost per window."""
        from bench.monitoring import BenchOptions, run_bench
        from serving.runtime import configure_logging

        configure_logging("WARNING")
        run_bench(BenchOptions(events=events, repeats=repeats, windows=windows))
