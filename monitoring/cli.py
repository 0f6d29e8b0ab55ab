"""`fireman` commands of the monitoring package. Heavy imports stay inside the command functions."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this package's commands to the `fireman` app and its `fireman bench` group."""
