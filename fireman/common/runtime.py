"""Process setup shared by every long-running fireman command: logging, settings errors, signals."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from fireman.common.errors import UserError

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


def load_settings(cls: type[SettingsT], **options: Any) -> SettingsT:
    """Build a service's settings (``options`` from the command line win over the environment).

    A bad value is a UserError naming the setting or the variable, not a traceback.
    """
    try:
        return cls(**options)
    except ValidationError as exc:
        raise UserError(settings_problem(exc, options) or str(exc)) from None


def settings_problem(exc: ValidationError, options: Mapping[str, Any] | None = None) -> str | None:
    """One line naming each bad environment variable, or None when ``exc`` is not about settings.

    A service's settings embed the connection settings (``KafkaSettings`` inside ``ScorerSettings``),
    which read their own prefix: the error's title names the class that failed, so the variable is
    that class's prefix and field (or the field's alias, e.g. ``FIREMAN_MLFLOW_TRACKING_URI``).
    """
    cls = _settings_classes().get(exc.title)
    if cls is None:
        return None
    prefix = str(cls.model_config.get("env_prefix", ""))
    problems = []
    for error in exc.errors(include_url=False):
        if not error["loc"]:  # a rule across fields: its message names the variables
            problems.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        name = str(error["loc"][0])
        field = cls.model_fields.get(name)
        if options and name in options:
            variable = f"{name} (command line)"
        else:
            variable = field.alias if field is not None and field.alias else f"{prefix}{name}".upper()
        shown = f"={error['input']!r}" if isinstance(error.get("input"), str | int | float) else ""
        problems.append(f"{variable}{shown}: {str(error['msg']).removeprefix('Value error, ')}")
    return "invalid setting " + "; ".join(problems)


def _settings_classes() -> dict[str, type[BaseSettings]]:
    found: dict[str, type[BaseSettings]] = {}
    pending = list(BaseSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def freeze_heap() -> None:
    """Take what is alive now (imported libraries, a loaded model) out of the cycle collector's scans.

    Call once, when a streaming service has started (its model loaded, Evidently imported) and
    before its loop: the services call it themselves, since only they know when that is. Their
    loops allocate a few objects per event, so the collector runs often, and each full pass walks
    every object in the process, ~390k with Evidently, MLflow and scikit-learn imported. Measured
    (docs/performance-notes.md, sixth round): the scorer alone 50.3k -> 60.9k events/s, the
    monitor's CPU 12.9 -> 11.9 µs per event, its in-memory intake alone 25-33 -> 10-12 µs.
    Frozen objects are still freed when their last reference goes; only cycles among them would
    stay, which is why the garbage is collected first. Objects made later (a reloaded model) are
    collected as usual.
    """
    gc.collect()
    gc.freeze()


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
