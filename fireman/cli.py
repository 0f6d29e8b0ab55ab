"""The ``fireman`` command line. Each command builds its service's settings and hands them down.

Heavy imports (MLflow, scikit-learn, Airflow) happen inside the commands, so ``fireman --help`` and
``fireman services status`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fireman.common.errors import UserError

if TYPE_CHECKING:
    from fireman.services.manager import ServiceManager
    from fireman.stack import Stack

app = typer.Typer(no_args_is_help=True, add_completion=False, help="fireman: a streaming MLOps platform.")
services_app = typer.Typer(
    no_args_is_help=True, help="Run the local Kafka, InfluxDB, MLflow and Airflow servers."
)
app.add_typer(services_app, name="services")

console = Console()
err_console = Console(stderr=True)

ONLY_HELP = (
    "Comma-separated services: kafka, influxdb, mlflow, airflow (default: kafka,influxdb,mlflow), and "
    "postgres with FIREMAN_POSTGRES_ENABLED=true (then started before mlflow and airflow). With "
    "FIREMAN_KAFKA_BROKERS=3, kafka is the whole cluster and kafka-2, kafka-3 single nodes."
)


def _manager() -> ServiceManager:
    from fireman.common.settings import ServicesSettings
    from fireman.services.manager import ServiceManager

    return ServiceManager(ServicesSettings())


@services_app.command("start")
def services_start(only: str | None = typer.Option(None, "--only", help=ONLY_HELP)) -> None:
    """Start the services (idempotent) and wait until each one is healthy."""
    from fireman.services.manager import parse_names

    manager = _manager()
    manager.start(parse_names(only, available=manager.services), on_progress=console.print)


@services_app.command("stop")
def services_stop(only: str | None = typer.Option(None, "--only", help=ONLY_HELP)) -> None:
    """Stop the services that fireman started (by their recorded pid)."""
    from fireman.services.manager import parse_names

    manager = _manager()
    manager.stop(
        parse_names(only, default=manager.services, available=manager.services), on_progress=console.print
    )


@services_app.command("status")
def services_status(only: str | None = typer.Option(None, "--only", help=ONLY_HELP)) -> None:
    """Exit 0 only when every requested service is healthy."""
    from fireman.services.manager import parse_names

    manager = _manager()
    names = manager.with_peers(parse_names(only, available=manager.services))
    states = [manager.state(name) for name in names]
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
    kafka = _manager().kafka
    fetched = kafka.fetch_jars()
    console.print(f"kafka jars {'fetched into' if fetched else 'up to date in'} {kafka.libs}")


@app.command("up")
def up(
    generator: bool = typer.Option(True, "--generator/--no-generator", help="Run the demo sensor fleet."),
    detach: bool = typer.Option(False, "--detach", help="Start, then return (stop it: fireman down)."),
    status_interval_s: float = typer.Option(2.0, help="Seconds between live status lines."),
    profile: str = typer.Option("standard", help="Demo timing: standard (drift after ~2.5 min) or short."),
) -> None:
    """Start the platform: servers, a first model if none, then every fireman process and the generator."""
    import os
    import time

    from rich.live import Live

    from fireman.common.runtime import unwind_on_sigterm
    from fireman.common.settings import ServicesSettings
    from fireman.live import LiveStatus, render
    from fireman.serving.settings import ScorerSettings
    from fireman.stack import Stack, demo_environment
    from fireman.streaming.settings import CollectorSettings

    # Every process of the stack inherits these; what the user set explicitly wins.
    for key, value in demo_environment(profile).items():
        os.environ.setdefault(key, value)
    collector = CollectorSettings()
    os.environ.setdefault("FIREMAN_GENERATOR_COLLECTOR_URL", f"http://{collector.host}:{collector.port}")
    settings = ServicesSettings()
    stack = Stack(settings)
    try:
        stack.start(generator, on_progress=console.print)
    except BaseException:
        console.print("[red]start-up failed[/]; stopping what this command started")
        stack.stop(on_progress=console.print, only_started=True)
        raise
    console.print(_urls_table(stack))
    if detach:
        console.print("running in the background; stop it with [bold]fireman down[/]")
        return
    unwind_on_sigterm()
    live_status = LiveStatus(settings.kafka, settings.influxdb, settings.mlflow, ScorerSettings().group_id)
    try:
        with Live(console=console, refresh_per_second=1) as live:
            while True:
                live.update(render(live_status.sample()))
                time.sleep(status_interval_s)
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        live_status.close()
    _stop_stack(stack)


@app.command("down")
def down() -> None:
    """Stop a stack started by `fireman up --detach` (only the processes fireman started)."""
    from fireman.common.settings import ServicesSettings
    from fireman.stack import Stack

    _stop_stack(Stack(ServicesSettings()))


def _stop_stack(stack: Stack) -> None:
    survivors = stack.stop(on_progress=console.print)
    if survivors:
        err_console.print(f"still running after stop: {', '.join(survivors)}")
        raise typer.Exit(1)
    console.print("[green]stopped; nothing fireman started is left running[/]")


def _urls_table(stack: Stack) -> Table:
    from fireman.services.airflow import ADMIN_USER, AirflowService

    airflow = stack.servers.services["airflow"]
    assert isinstance(airflow, AirflowService)
    collector = stack.apps.services["collector"].describe()
    table = Table("what", "where", title="fireman is up")
    table.add_row("MLflow UI", stack.servers.services["mlflow"].describe())
    # The stack is a local demo, so its table shows the Airflow login outright.
    table.add_row(
        "Airflow UI", f"{airflow.settings.airflow.url}  (login {ADMIN_USER} / {airflow.admin_password()})"
    )
    table.add_row("Dashboard", stack.apps.services["dashboard"].describe())
    table.add_row("Collector API docs", f"{collector}/docs")
    table.add_row("Inference (Open Inference Protocol V2)", stack.apps.services["serve"].describe())
    return table


@app.command("settings")
def settings_table() -> None:
    """Print every FIREMAN_* setting as a Markdown table (the README's configuration section)."""
    from fireman.settings_doc import markdown_table

    typer.echo(markdown_table())


def _register_packages() -> None:
    from fireman.dashboard.cli import register as register_dashboard
    from fireman.monitoring.cli import register as register_monitoring
    from fireman.serving.cli import register as register_serving
    from fireman.streaming.cli import register as register_streaming
    from fireman.training.cli import register as register_training

    for register in (
        register_streaming,
        register_training,
        register_serving,
        register_monitoring,
        register_dashboard,
    ):
        register(app)
    # Plug-ins (the benchmarks) sit above the CLI in the layers: found by entry point, not imported.
    from importlib.metadata import entry_points

    for plugin in entry_points(group="fireman.cli"):
        plugin.load()(app)


_register_packages()


def main() -> None:
    """Entry point: user errors become one clear line on stderr and exit code 2, never a traceback."""
    from pydantic import ValidationError

    from fireman.common.runtime import settings_problem

    try:
        app()
    except UserError as exc:
        _fail(str(exc))
    except ValidationError as exc:  # settings built anywhere in a command: FIREMAN_* from the environment
        problem = settings_problem(exc)
        if problem is None:
            raise
        _fail(problem)


def _fail(message: str) -> None:
    # The message is plain text: brackets in it (a list, a path) are not Rich markup.
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(2) from None


if __name__ == "__main__":
    main()
