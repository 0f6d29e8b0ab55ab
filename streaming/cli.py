"""`fireman` commands of the streaming package. Heavy imports stay inside the command functions."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import typer

from fireman.common.runtime import configure_logging, stop_on_signals


def _overrides(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `fireman` app."""

    @app.command("collector")
    def collector(
        host: str | None = typer.Option(None, help="Listen address (FIREMAN_COLLECTOR_HOST)."),
        port: int | None = typer.Option(None, help="Listen port (FIREMAN_COLLECTOR_PORT, default 8000)."),
        workers: int | None = typer.Option(None, help="Worker processes (FIREMAN_COLLECTOR_WORKERS)."),
    ) -> None:
        """Run the HTTP collector: POST /v1/events, /v1/labels and the legacy /FIREMAN/SPAM into Kafka."""
        from fireman.streaming.collector import serve
        from fireman.streaming.settings import CollectorSettings

        configure_logging()
        options = _overrides(host=host, port=port, workers=workers)
        # Worker processes rebuild their settings from the environment, so options go there too.
        for key, value in options.items():
            os.environ[f"FIREMAN_COLLECTOR_{key.upper()}"] = str(value)
        settings = CollectorSettings(**options)
        logging.getLogger(__name__).info(
            "collector on http://%s:%d -> Kafka %s",
            settings.host,
            settings.port,
            settings.kafka.bootstrap_servers,
        )
        serve(settings)

    @app.command("sink")
    def sink(
        group_id: str | None = typer.Option(None, help="Kafka consumer group (FIREMAN_SINK_GROUP_ID)."),
        batch_size: int | None = typer.Option(
            None, help="Records per InfluxDB write (FIREMAN_SINK_BATCH_SIZE)."
        ),
    ) -> None:
        """Copy `measurements` and `labels` from Kafka into InfluxDB until SIGTERM (then drain and commit)."""
        from fireman.streaming.settings import SinkSettings
        from fireman.streaming.sink import SinkStats, run_sink

        configure_logging()
        log = logging.getLogger("fireman.sink")
        settings = SinkSettings(**_overrides(group_id=group_id, batch_size=batch_size))
        stop = stop_on_signals()
        log.info(
            "sink: %s + %s (group %s) -> %s/%s",
            settings.kafka.topic_measurements,
            settings.kafka.topic_labels,
            settings.group_id,
            settings.influxdb.url,
            settings.influxdb.database,
        )

        last = {"at": time.monotonic(), "written": 0}

        def report(stats: SinkStats) -> None:
            # A line per interval, not per batch: at demo rates every batch is a single event.
            now = time.monotonic()
            if now - last["at"] < settings.log_interval_s:
                return
            rate = (stats.written - last["written"]) / (now - last["at"])
            last.update(at=now, written=stats.written)
            log.info(
                "written %d (%.0f/s), dead-lettered %d, commits %d",
                stats.written,
                rate,
                stats.dead_lettered,
                stats.commits,
            )

        stats = run_sink(settings, stop, on_batch=report, metrics=True)
        log.info("sink stopped: %s", stats.as_dict())

    @app.command("generator")
    def generator(
        rate: float | None = typer.Option(
            None, help="Events per second, 0 = as fast as possible (default 10)."
        ),
        batch: int | None = typer.Option(None, help="Events per POST (default 1)."),
        sensors: int | None = typer.Option(None, help="Number of simulated sensors (default 5)."),
        limit: int | None = typer.Option(None, help="Stop after this many events."),
        loop: bool | None = typer.Option(None, "--loop/--no-loop", help="Start over at the end of the data."),
        missing_rate: float | None = typer.Option(
            None, help="Share of values removed at random (default 0.2)."
        ),
        seed: int | None = typer.Option(
            None, help="Seed for order, missingness, ids and labels (default 0)."
        ),
        drift_after: int | None = typer.Option(None, help="Inject drift after this many events."),
        drift_kind: str | None = typer.Option(
            None, help="shift, scale, swap (covariate) or labels (concept: labels inverted); default shift."
        ),
        drift_features: str | None = typer.Option(None, help="Comma-separated features to drift."),
        drift_magnitude: float | None = typer.Option(None, help="Shift in std units / scale factor - 1."),
        label_delay: float | None = typer.Option(
            None, help="Seconds before a row's label is posted (default 5)."
        ),
        label_fraction: float | None = typer.Option(None, help="Share of rows that get a label (default 1)."),
        dataset: str | None = typer.Option(None, help="spambase or synthetic (default spambase)."),
        url: str | None = typer.Option(None, help="Collector URL (FIREMAN_GENERATOR_COLLECTOR_URL)."),
    ) -> None:
        """Replay Spambase rows as sensor events with missing values, optional drift and delayed labels."""
        import httpx
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import Progress, SpinnerColumn, TextColumn

        from fireman.common.runtime import load_settings
        from fireman.streaming.generator import Generator, GeneratorStats, load_frame
        from fireman.streaming.settings import GeneratorSettings

        options = _overrides(
            rate=rate,
            batch=batch,
            sensors=sensors,
            limit=limit,
            loop=loop,
            missing_rate=missing_rate,
            seed=seed,
            drift_after=drift_after,
            drift_kind=drift_kind,
            drift_magnitude=drift_magnitude,
            label_delay_s=label_delay,
            label_fraction=label_fraction,
            dataset=dataset,
            collector_url=url,
        )
        if drift_features is not None:
            options["drift_features"] = tuple(
                name.strip() for name in drift_features.split(",") if name.strip()
            )
        settings = load_settings(GeneratorSettings, **options)
        frame = load_frame(settings)
        console = Console()
        stop = stop_on_signals()
        with (
            httpx.Client(base_url=settings.collector_url, timeout=settings.timeout_s) as client,
            Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console) as progress,
        ):
            task = progress.add_task("starting")

            def show(stats: GeneratorStats) -> None:
                progress.update(task, description=stats.summary())

            stats = Generator(settings, client, frame, on_progress=show).run(stop)
        console.print(f"{'stopped' if stop.is_set() else 'done'}: {escape(stats.summary())}")
        if stats.last_error:
            console.print(f"last error: {escape(stats.last_error)}")
        if lost := stats.failed + stats.rejected:
            # Exit non-zero so a script (or make) sees that events were lost, not just the log.
            console.print(f"{lost} of {stats.sent} events were not accepted by {settings.collector_url}")
            raise typer.Exit(1)
