"""The shape every local service shares: a state directory, a log, a pid file and a health check."""

from __future__ import annotations

import os
import shutil
import signal
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from fireman.common.settings import ServicesSettings
from fireman.services.process import ServiceError


def project_root() -> Path:
    """The checkout that holds ``infra/``, ``mlflow/`` and ``dags/`` (the project is installed editable)."""
    root = Path(os.environ.get("FIREMAN_PROJECT_ROOT", Path(__file__).resolve().parents[2]))
    if not (root / "infra").is_dir():
        raise ServiceError(
            f"cannot find the fireman checkout at {root}; set FIREMAN_PROJECT_ROOT to the repository root"
        )
    return root


def require_executable(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServiceError(f"'{name}' was not found on PATH. {hint}")
    return path


class LocalService(ABC):
    name: ClassVar[str]
    # What `stop` sends the server's process group first (SIGKILL follows after the stop timeout).
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, settings: ServicesSettings, root: Path) -> None:
        self.settings = settings
        self.root = root

    @property
    def dir(self) -> Path:
        return self.settings.state.root / self.name

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.dir / f"{self.name}.pid"

    @abstractmethod
    def ports(self) -> list[int]:
        """Every port the server binds; all must be free (or ours) before it starts."""

    @abstractmethod
    def check_prerequisites(self) -> None:
        """Raise ServiceError naming what is missing (a binary, a jar directory, ...)."""

    @abstractmethod
    def prepare(self) -> None:
        """Write configuration and initialise storage. Runs before every start, so it must be idempotent."""

    @abstractmethod
    def command(self) -> list[str]: ...

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def needs(self) -> list[str]:
        """Services that must run before this one; ``ServiceManager.start`` starts them first."""
        return []

    def peers(self) -> list[str]:
        """What starting or stopping this name covers, itself included: the nodes of a cluster, which
        start together because none is healthy before a quorum of them runs."""
        return [self.name]

    @abstractmethod
    def healthy(self) -> bool:
        """One quick probe of the server's own health endpoint or protocol."""

    def after_start(self) -> None:  # noqa: B027 - optional hook, most services need nothing here
        """Create what the platform expects to exist (topics, databases). Must be idempotent."""

    def start_timeout_s(self) -> float:
        return self.settings.start_timeout_s

    def describe(self) -> str:
        """Where users reach the service, for status output."""
        return f"127.0.0.1:{self.ports()[0]}"


class MetadataService(LocalService):
    """A server keeping its metadata in a database: PostgreSQL when enabled, else a SQLite file."""

    def needs(self) -> list[str]:
        return ["postgres"] if self.settings.postgres.enabled else []

    def database_uri(self, database: str, sqlite_file: str) -> str:
        """``database`` in PostgreSQL, else the SQLite file ``sqlite_file`` in the service's dir."""
        if self.settings.postgres.enabled:
            return self.settings.postgres.url(database)
        return f"sqlite:///{self.dir / sqlite_file}"
