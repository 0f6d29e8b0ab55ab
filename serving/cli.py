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
        from fireman.common.runtime import configure_logging, load_settings, stop_on_signals
        from fireman.serving.scorer import Scorer
        from fireman.serving.settings import ScorerSettings

        configure_logging(log_level)
        Scorer(load_settings(ScorerSettings)).run(stop_on_signals())
