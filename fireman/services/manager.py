"""Start, stop and report on the local services, in dependency order."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from fireman.common.settings import ServicesSettings
from fireman.services.airflow import AirflowService
from fireman.services.base import LocalService, project_root
from fireman.services.influxdb import InfluxService
from fireman.services.kafka import KafkaService, kafka_nodes
from fireman.services.mlflow_server import MlflowService
from fireman.services.postgres import PostgresService
from fireman.services.process import (
    PidRecord,
    ServiceError,
    exclusive,
    port_owner,
    spawn,
    tail,
    terminate,
    wait_until,
)

SERVER_TYPES: tuple[type[LocalService], ...] = (
    PostgresService,
    KafkaService,
    InfluxService,
    MlflowService,
    AirflowService,
)
# PostgreSQL is a service only when MLflow and Airflow use it (FIREMAN_POSTGRES_ENABLED): otherwise
# start, stop and status list exactly these.
SERVICE_TYPES: dict[str, type[LocalService]] = {
    cls.name: cls for cls in SERVER_TYPES if cls is not PostgresService
}
DEFAULT_SERVICES = ("postgres", "kafka", "influxdb", "mlflow")
Progress = Callable[[str], object]


@dataclass(frozen=True)
class ServiceState:
    name: str
    healthy: bool
    pid: int | None
    owned: bool
    where: str
    detail: str = ""


def service_types(settings: ServicesSettings) -> dict[str, type[LocalService]]:
    """The servers ``fireman services`` runs with these settings, in start order."""
    types: dict[str, type[LocalService]] = {}
    for cls in SERVER_TYPES:
        if cls is PostgresService and not settings.postgres.enabled:
            continue
        for node in kafka_nodes(settings.kafka.brokers) if cls is KafkaService else [cls]:
            types[node.name] = node
    return types


def parse_names(
    only: str | None,
    default: Iterable[str] = DEFAULT_SERVICES,
    available: Collection[str] = tuple(SERVICE_TYPES),
) -> list[str]:
    """Turn ``--only kafka,mlflow`` into service names in start order; unknown names are an error.

    ``available`` are the services there are in start order (``ServiceManager.services``); defaults
    not among them (postgres, when disabled) are left out.
    """
    if only is None:  # no --only; an empty one names no service, an error rather than "all of them"
        defaults = set(default)
        return [name for name in available if name in defaults]
    names = [part.strip() for part in only.split(",") if part.strip()]
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        hint = " (postgres: with FIREMAN_POSTGRES_ENABLED=true)" if "postgres" in unknown else ""
        problem = (
            f"unknown service {', '.join(repr(n) for n in unknown)}" if unknown else "--only names no service"
        )
        raise ServiceError(f"{problem}; choose from {', '.join(available)}{hint}")
    return [name for name in available if name in names]


class ServiceManager:
    def __init__(
        self,
        settings: ServicesSettings,
        root: Path | None = None,
        types: Mapping[str, type[LocalService]] | None = None,
    ) -> None:
        self.settings = settings
        self.root = root or project_root()
        types = service_types(settings) if types is None else types
        self.services = {name: cls(settings, self.root) for name, cls in types.items()}
        # What this manager itself spawned, so a failed start-up can undo exactly that.
        self.started: list[str] = []

    def start(self, names: Iterable[str], on_progress: Progress = print) -> list[ServiceState]:
        """Start ``names``, each after the services it needs (``LocalService.needs``); the peers of a
        cluster are all launched before any is awaited."""
        states = []
        with self._exclusive(on_progress):
            for group in self._peer_groups(self.with_needs(names)):
                started = time.monotonic()
                launched = [(self.services[name], self._launch(self.services[name])) for name in group]
                for service, (_, record) in launched:
                    if record is not None:
                        self._await_health(service, record)
                # What after_start creates (a cluster's topics) belongs to the group: once, when all are up.
                launched[-1][0].after_start()
                took = time.monotonic() - started
                for service, (reused, _) in launched:
                    what = "already running" if reused else f"started in {took:.1f}s"
                    on_progress(f"{service.name}: {what} at {service.describe()}")
                    states.append(self.state(service.name))
        return states

    def _exclusive(self, on_progress: Progress) -> AbstractContextManager[None]:
        """One start or stop at a time per state dir, across processes (``fireman up`` and a test
        session, say)."""
        # As long as the other holder may need to start or stop everything there is.
        timeout_s = sum(s.start_timeout_s() + self.settings.stop_timeout_s for s in self.services.values())
        return exclusive(self.settings.state.root / "services.lock", timeout_s, on_progress)

    def with_needs(self, names: Iterable[str]) -> list[str]:
        ordered: list[str] = []
        for name in self.with_peers(names):
            for wanted in (*self.with_peers(self.services[name].needs()), name):
                if wanted not in ordered:
                    ordered.append(wanted)
        return ordered

    def with_peers(self, names: Iterable[str]) -> list[str]:
        ordered: list[str] = []
        for name in names:
            ordered += [peer for peer in self.services[name].peers() if peer not in ordered]
        return ordered

    def _peer_groups(self, names: list[str]) -> list[list[str]]:
        groups: list[list[str]] = []
        for name in names:
            if groups and name in self.services[groups[-1][0]].peers():
                groups[-1].append(name)
            else:
                groups.append([name])
        return groups

    def _launch(self, service: LocalService) -> tuple[bool, PidRecord | None]:
        """Spawn ``service`` unless an instance of it runs: (reused, the process to await, if any)."""
        if service.healthy():
            return True, None
        record = PidRecord.read(service.pid_path)
        if record and record.process():
            # Ours, but not answering yet: it may still be starting, so give it the deadline too.
            return True, record
        for port in service.ports():
            owner = port_owner(port)
            if owner:
                raise ServiceError(
                    f"{service.name}: port {port} is already in use by {owner}. Stop that process or set "
                    f"another port (see the FIREMAN_{service.name.upper()}_* settings)."
                )
        service.check_prerequisites()
        service.prepare()
        record = spawn(
            service.command(), service.log_path, service.pid_path, service.environment(), self.root
        )
        self.started.append(service.name)
        return False, record

    def _await_health(self, service: LocalService, record: PidRecord) -> None:
        def ready_or_dead() -> bool:
            return record.process() is None or service.healthy()

        timeout_s = service.start_timeout_s()
        ok = wait_until(ready_or_dead, timeout_s, interval_s=0.25)
        if ok and record.process() is not None:
            return
        if record.process() is None:
            reason = "exited during start-up"
        else:
            reason = f"did not become healthy within {timeout_s:.0f}s"
            terminate(record, self.settings.stop_timeout_s, service.stop_signal)
        record.forget(service.pid_path)
        raise ServiceError(
            f"{service.name} {reason}. Last lines of {service.log_path}:\n{tail(service.log_path)}"
        )

    def stop(self, names: Iterable[str], on_progress: Progress = print) -> None:
        # Stop in reverse start order so clients go before the servers they use. The nodes of a cluster
        # stop together: the last one left alone would wait for a quorum that is gone.
        with self._exclusive(on_progress):
            for group in reversed(self._peer_groups(self.with_peers(names))):
                with ThreadPoolExecutor(len(group)) as pool:
                    outcomes = list(pool.map(self._stop_one, reversed(group)))
                for outcome in outcomes:
                    on_progress(outcome)

    def _stop_one(self, name: str) -> str:
        service = self.services[name]
        record = PidRecord.read(service.pid_path)
        stopped = record is not None and terminate(record, self.settings.stop_timeout_s, service.stop_signal)
        service.pid_path.unlink(missing_ok=True)
        if stopped:
            return f"{name}: stopped"
        outcome = f"{name}: {'not started by fireman' if record is None else 'was not running'}"
        # Say who holds the port, or a user believes the server is stopped while it still answers.
        held = [
            f"port {port} is in use by {owner}" for port in service.ports() if (owner := port_owner(port))
        ]
        return f"{outcome} ({'; '.join(held)}, not a process this state dir started)" if held else outcome

    def state(self, name: str) -> ServiceState:
        service = self.services[name]
        record = PidRecord.read(service.pid_path)
        proc = record.process() if record else None
        healthy = service.healthy()
        detail = ""
        if not healthy:
            detail = "process running but not answering" if proc else "not running"
        return ServiceState(
            name=name,
            healthy=healthy,
            pid=proc.pid if proc else None,
            owned=proc is not None,
            where=service.describe(),
            detail=detail,
        )

    @property
    def kafka(self) -> KafkaService:
        service = self.services["kafka"]
        assert isinstance(service, KafkaService)
        return service
