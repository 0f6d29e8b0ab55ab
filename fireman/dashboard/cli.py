"""`fireman` commands of the dashboard package. Heavy imports stay inside the command functions."""

from __future__ import annotations

from typing import Any

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `fireman` app."""

    @app.command("dashboard")
    def dashboard(
        host: str | None = typer.Option(None, help="Listen address (FIREMAN_DASHBOARD_HOST)."),
        port: int | None = typer.Option(None, help="Listen port (FIREMAN_DASHBOARD_PORT, default 8050)."),
        window: int | None = typer.Option(
            None, help="Seconds the charts show (FIREMAN_DASHBOARD_WINDOW_S, default 1800)."
        ),
    ) -> None:
        """Serve the live dashboard: ingest, predictions, accuracy, drift, model switches, consumer lag."""
        import uvicorn
        from rich.console import Console

        from fireman.common.runtime import configure_logging, load_settings
        from fireman.dashboard.app import Dashboard
        from fireman.dashboard.settings import DashboardSettings

        given: dict[str, Any] = {"host": host, "port": port, "window_s": window}
        options = {k: v for k, v in given.items() if v is not None}
        settings = load_settings(DashboardSettings, **options)
        configure_logging()
        Console().print(
            f"dashboard on [bold]http://{settings.host}:{settings.port}/[/] reading InfluxDB "
            f"{settings.influxdb.url}/{settings.influxdb.database}, lag of "
            f"{', '.join(settings.consumer_groups())} from Kafka {settings.kafka.bootstrap_servers}"
        )
        uvicorn.run(Dashboard(settings).app, host=settings.host, port=settings.port, log_level="warning")
