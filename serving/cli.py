"""`fireman` commands of the serving package. Heavy imports stay inside the command functions."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `fireman` app."""

    @app.command("scorer")
    def scorer(
        log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    ) -> None:
        """Score `measurements` with the registry's production model (settings: FIREMAN_SCORER_*).

        A version under the challenger alias is scored too, in shadow: InfluxDB only, `role=shadow`.

        SIGTERM or Ctrl-C finishes the batch in flight, commits and exits 0.
        """
        from fireman.common.metrics import MetricsServer
        from fireman.common.runtime import configure_logging, load_settings, stop_on_signals
        from fireman.serving.scorer import Scorer, scorer_metrics
        from fireman.serving.settings import ScorerSettings

        configure_logging(log_level)
        settings = load_settings(ScorerSettings)
        scorer = Scorer(settings)
        with MetricsServer(scorer_metrics(scorer), settings.metrics_host, settings.metrics_port):
            scorer.run(stop_on_signals())

    @app.command("serve")
    def serve(
        host: str | None = typer.Option(None, help="Listen address (FIREMAN_SERVE_HOST)."),
        port: int | None = typer.Option(None, help="Listen port (FIREMAN_SERVE_PORT, default 8010)."),
        log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    ) -> None:
        """Answer Open Inference Protocol V2 requests with the production model (FIREMAN_SERVE_*).

        POST /v2/models/<model>/infer; health at /v2/health/live and /v2/health/ready. Moving the
        `production` alias switches the version served within FIREMAN_SERVE_RELOAD_INTERVAL_S.
        """
        import logging

        from fireman.common.runtime import configure_logging, load_settings
        from fireman.serving.inference import serve as run_server
        from fireman.serving.settings import ServeSettings

        configure_logging(log_level)
        given = {"host": host, "port": port}
        settings = load_settings(ServeSettings, **{k: v for k, v in given.items() if v is not None})
        logging.getLogger("fireman.serve").info(
            "inference on http://%s:%d/v2/models/%s (Open Inference Protocol V2), model from %s",
            settings.host,
            settings.port,
            settings.mlflow.model_name,
            settings.mlflow.tracking_uri,
        )
        run_server(settings)
