"""The ``fireman`` command line. Each command builds its service's settings and hands them down.

Heavy imports (MLflow, scikit-learn, Airflow) happen inside the commands, so ``fireman --help`` and
``fireman services status`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from fireman_common.errors import UserError

if TYPE_CHECKING:
    from fireman.services.manager import ServiceManager

app = typer.Typer(no_args_is_help=True, add_completion=False, help="fireman: a streaming MLOps platform.")
services_app = typer.Typer(
    no_args_is_help=True, help="Run the local Kafka, InfluxDB, MLflow and Airflow servers."
)
app.add_typer(services_app, name="services")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: measured side by side, reported as ratios.")
app.add_typer(bench_app, name="bench")

console = Console()
err_console = Console(stderr=True)

ONLY_HELP = "Comma-separated services: kafka, influxdb, mlflow, airflow (default: kafka,influxdb,mlflow)."


def _manager() -> ServiceManager:
    from fireman.services.manager import ServiceManager
    from fireman_common.settings import ServicesSettings

    return ServiceManager(ServicesSettings())


@services_app.command("start")
def services_start(only: str | None = typer.Option(None, "--only", help=ONLY_HELP)) -> None:
    """Start the services (idempotent) and wait until each one is healthy."""
    from fireman.services.manager import parse_names

    manager = _manager()
    manager.start(parse_names(only), on_progress=console.print)


@services_app.command("stop")
def services_stop(only: str | None = typer.Option(None, "--only", help=ONLY_HELP)) -> None:
    """Stop the services that fireman started (by their recorded pid)."""
    from fireman.services.manager import SERVICE_TYPES, parse_names

    manager = _manager()
    manager.stop(parse_names(only, default=SERVICE_TYPES), on_progress=console.print)


@services_app.command("status")
def services_status(only: str | None = typer.Option(None, "--only", help=ONLY_HELP)) -> None:
    """Exit 0 only when every requested service is healthy."""
    from fireman.services.manager import parse_names

    manager = _manager()
    states = [manager.state(name) for name in parse_names(only)]
    table = Table("service", "health", "pid", "address", "detail")
    for state in states:
        health = "[green]healthy[/]" if state.healthy else "[red]down[/]"
        pid = str(state.pid) if state.pid else "-"
        table.add_row(state.name, health, pid, state.where, state.detail)
    console.print(table)
    down = [state.name for state in states if not state.healthy]
    if down:
        err_console.print(f"not healthy: {', '.join(down)}")
        raise typer.Exit(1)


@services_app.command("fetch-kafka")
def services_fetch_kafka() -> None:
    """Fetch the Kafka broker jars from Maven Central into the state dir (run by `make setup`)."""
    manager = _manager()
    kafka = manager.kafka
    fetched = kafka.fetch_jars()
    console.print(f"kafka jars {'fetched into' if fetched else 'up to date in'} {kafka.libs}")


def _register_packages() -> None:
    from monitoring.cli import register as register_monitoring
    from serving.cli import register as register_serving
    from streaming.cli import register as register_streaming
    from training.cli import register as register_training

    for register in (register_streaming, register_training, register_serving, register_monitoring):
        register(app, bench_app)


_register_packages()


def main() -> None:
    """Entry point: user errors become one clear line on stderr and exit code 2, never a traceback."""
    try:
        app()
    except UserError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
