"""Process setup shared by every long-running fireman command: logging, settings errors, signals."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from fireman_common.errors import UserError

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def configure_logging(level: str = "INFO") -> None:
    # MLflow's artifact download progress bars would flood a service's log on every model load.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise UserError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, not {level!r}")
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "mlflow", "urllib3", "alembic", "kafka"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Build a service's settings; a bad FIREMAN_* value is a UserError naming the field, not a traceback."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "FIREMAN_")
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UserError(f"invalid {prefix}* settings: {problems}") from None


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM/SIGINT, so loops finish the batch in hand instead of dying mid-write."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def unwind_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so ``finally`` blocks stop the processes a command started.

    Python's default SIGTERM ends the process on the spot: a benchmark killed that way left its
    collector, sink, scorer, monitor and generator running.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
