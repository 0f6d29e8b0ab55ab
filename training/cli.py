"""`fireman` commands of the training package. Heavy imports stay inside the command functions."""

from __future__ import annotations

import json
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fireman.common.errors import UserError

console = Console()


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UserError(f"{option} {value!r} is not an ISO 8601 time (e.g. 2026-01-31T12:00:00Z)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    """``--param n_estimators=50 --param max_depth=null``: values are JSON, else plain strings."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param {item!r} is not KEY=VALUE")
        try:
            params[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.strip()] = raw
    return params


def _settings(**overrides: Any) -> Any:
    from fireman.training.settings import TrainingSettings

    return TrainingSettings(**{key: value for key, value in overrides.items() if value is not None})


def _registry(settings: Any) -> Any:
    # The registry over REST, not MlflowClient: importing mlflow alone takes several seconds.
    from fireman.common.model_registry import connect

    return connect(settings.mlflow, settings.health_timeout_s)


def quiet_mlflow() -> None:
    import logging
    import os

    # The run/experiment links and registration chatter would bury the summary. MLflow configures its
    # logger on import, so the level is set after importing it.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow writes run links straight to stdout, which would corrupt `--json` output.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import mlflow  # noqa: F401

    logging.getLogger("mlflow").setLevel(logging.WARNING)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `fireman` app."""

    @app.command("train")
    def train(
        source: str = typer.Option(
            "file", "--source", help="file (Spambase CSV) or influx (labelled history)."
        ),
        since: str | None = typer.Option(
            None, "--since", help="Influx window start, ISO 8601 (UTC if naive)."
        ),
        until: str | None = typer.Option(None, "--until", help="Influx window end (exclusive); default now."),
        last_hours: float | None = typer.Option(
            None, "--last-hours", help="Influx window: the last N hours (FIREMAN_TRAIN_HISTORY_HOURS)."
        ),
        promote: str = typer.Option(
            "auto",
            "--promote",
            help="auto (gate), never, force (bypass the gate), or live (challenger, decided on live data).",
        ),
        split: str | None = typer.Option(None, "--split", help="stratified (default) or time (influx only)."),
        missing_rate: float | None = typer.Option(
            None, "--missing-rate", help="MCAR rate for --source file."
        ),
        param: list[str] | None = typer.Option(
            None, "--param", help="Model parameter KEY=VALUE (repeatable)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
    ) -> None:
        """Train, log to MLflow, register a version and apply the promotion gate."""
        quiet_mlflow()
        from fireman.training.workflow import run_training

        settings = _settings(split=split, missing_rate=missing_rate)
        params = _parse_params(param)
        with console.status(f"training from {source}…", spinner="dots") if not as_json else nullcontext():
            outcome = run_training(
                settings,
                source=source,
                promote=promote,
                since=_parse_time(since, "--since"),
                until=_parse_time(until, "--until"),
                last_hours=last_hours,
                params=params,
            )
        if as_json:
            typer.echo(json.dumps(outcome.to_dict(), indent=2, sort_keys=True))
            return
        window = f"{outcome.since} .. {outcome.until}" if outcome.since else "whole file"
        console.print(f"run id    {outcome.run_id}")
        console.print(f"version   {settings.mlflow.model_name} v{outcome.version}")
        console.print(f"data      {outcome.source}, {window}, {outcome.rows} rows", highlight=False)
        if outcome.unlabelled_excluded:
            console.print(f"          {outcome.unlabelled_excluded} unlabelled events excluded")
        table = Table("metric", "hold-out")
        for key, value in outcome.metrics.items():
            table.add_row(key, f"{value:.4f}")
        console.print(table)
        verdict = "[green]promoted[/]" if outcome.promoted else "[yellow]not promoted[/]"
        console.print(f"decision  {verdict} ({outcome.decision}): {escape(outcome.reason)}")
        if outcome.challenger:
            console.print(
                f"          v{outcome.version} is now {settings.mlflow.challenger_alias!r}, scored in shadow "
                "beside production: `fireman promote --live` decides on live evidence",
                highlight=False,
            )

    @app.command("promote")
    def promote_version(
        version: str | None = typer.Argument(
            None, help="Registered model version to serve (with --live, default: the challenger alias's)."
        ),
        live: bool = typer.Option(
            False,
            "--live",
            help="Promote only if VERSION beats production on live labelled events "
            "(FIREMAN_TRAIN_LIVE_MIN_EVENTS, _GATE_METRIC, _MARGIN). Exit 1 when not promoted.",
        ),
        by: str | None = typer.Option(
            None, "--by", help="Who is promoting (default: FIREMAN_ACTOR or $USER)."
        ),
    ) -> None:
        """Point `production` at VERSION: manually, bypassing the gate, or with --live on live evidence."""
        from fireman.training import registry

        settings = _settings()
        if live:
            _promote_live(settings, version, by or registry.actor())
            return
        if version is None:
            raise UserError(
                "name the VERSION to promote, or use --live to promote the challenger on live evidence"
            )
        with _registry(settings) as client:
            change = registry.promote_manually(client, settings.mlflow, version, by or registry.actor())
        _print_change(settings, change.production, change.previous)

    def _print_change(settings: Any, production: str, previous: str | None, why: str = "") -> None:
        name = settings.mlflow.model_name
        console.print(f"{name}: production -> v{production}{escape(why)}", highlight=False, soft_wrap=True)
        if previous:
            console.print(f"{name}: previous -> v{previous}", highlight=False)

    def _promote_live(settings: Any, version: str | None, by: str) -> None:
        from fireman.training import live_gate

        live_gate.require_live_metric(settings)
        with _registry(settings) as client:
            decision = live_gate.decide(settings, client, version, by)
        if decision.promoted:
            _print_change(settings, decision.version, decision.champion, f" ({decision.reason})")
            return
        evidence = decision.comparison
        if decision.decision == "insufficient":
            message = (
                f"not enough live evidence for v{decision.version}: {evidence.events} of "
                f"{settings.live_min_events} labelled events scored by both it and production "
                f"v{decision.champion}; production unchanged"
            )
        else:
            message = (
                f"v{decision.version} not promoted: {decision.reason}; production stays v{decision.champion}"
            )
        # One line whatever the terminal's width: scripts read it.
        console.print(message, highlight=False, soft_wrap=True)
        raise typer.Exit(1)

    @app.command("rollback")
    def rollback(
        by: str | None = typer.Option(
            None, "--by", help="Who is rolling back (default: FIREMAN_ACTOR or $USER)."
        ),
    ) -> None:
        """Restore the version that served before the current one (a second rollback goes further back)."""
        from fireman.training import registry

        settings = _settings()
        with _registry(settings) as client:
            change = registry.rollback(client, settings.mlflow, by or registry.actor())
        name = settings.mlflow.model_name
        rolled = f" (rolled back from v{change.replaced})" if change.replaced else ""
        console.print(f"{name}: production -> v{change.production}{rolled}", highlight=False)
        console.print(change.note, highlight=False)

    @app.command("models")
    def models(as_json: bool = typer.Option(False, "--json", help="Print the versions as JSON.")) -> None:
        """Registered versions with their aliases, key hold-out metrics, data windows and gate decisions."""
        from dataclasses import asdict

        from fireman.training import registry

        settings = _settings()
        with _registry(settings) as client:
            rows = registry.list_versions(client, settings.mlflow)
        if as_json:
            typer.echo(json.dumps([asdict(row) for row in rows], indent=2))
            return
        if not rows:
            console.print(f"no versions of {settings.mlflow.model_name!r} yet: run `fireman train`")
            return
        # Version, aliases and decision never wrap or shorten; at 80 columns the rest folds. Data
        # windows and run ids are in --json.
        table = Table(title=settings.mlflow.model_name, box=box.SIMPLE_HEAD, pad_edge=False)
        for key in ("version", "aliases", "decision"):
            table.add_column(key, no_wrap=True, min_width=len(key))
        for key in registry.KEY_METRICS:
            table.add_column(key, justify="right", overflow="fold")
        table.add_column("created (UTC)", overflow="fold")
        for row in rows:
            metrics = [f"{row.metrics[k]:.3f}" if k in row.metrics else "-" for k in registry.KEY_METRICS]
            # The gate's verdict, the live gate's, and whether someone promoted the version past them
            # (who: --json).
            decision = (row.decision or "-") + (f", live {row.live}" if row.live else "")
            decision += " + manual" if row.manual else ""
            created = row.created.replace("T", " ")[:16]
            table.add_row(row.version, ", ".join(row.aliases) or "-", decision, *metrics, created)
        console.print(table)
