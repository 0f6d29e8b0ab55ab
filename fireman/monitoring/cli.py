"""`fireman` commands of the monitoring package. Heavy imports stay inside the command functions."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `fireman` app."""

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

        from fireman.common.airflow_api import AlertNotifier
        from fireman.common.metrics import MetricsServer
        from fireman.common.runtime import configure_logging, load_settings, stop_on_signals
        from fireman.monitoring.monitor import Monitor, monitor_metrics
        from fireman.monitoring.settings import MonitorSettings

        configure_logging(log_level)
        settings = load_settings(MonitorSettings)
        if settings.nice:
            # Monitoring is best effort: under CPU pressure the scorer goes first and the monitor lags.
            os.nice(settings.nice)
        stop = stop_on_signals()
        # Each alert also reaches Airflow at once (an asset event); without Airflow, its cron reads it.
        notifier = (
            AlertNotifier(settings.airflow, settings.state).start() if settings.airflow.alert_events else None
        )
        monitor = Monitor(settings, on_alert=notifier.notify if notifier else None)
        try:
            with MetricsServer(monitor_metrics(monitor), settings.metrics_host, settings.metrics_port):
                monitor.run(stop)
        finally:
            if notifier is not None:
                notifier.close()
