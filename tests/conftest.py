"""Shared fixtures: real local services, started once per session through ``fireman services``.

A healthy instance that is already running (a developer's ``make up``) is reused. Every test works
in names of its own (topics, InfluxDB databases, registered models), so tests neither see nor
disturb each other's data or a running demo.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fireman.common.mlflow_uri import MLFLOW_URI_VARIABLES
from fireman.common.settings import (
    DatasetSettings,
    InfluxSettings,
    KafkaSettings,
    MlflowSettings,
    ServicesSettings,
)
from fireman.services.manager import ServiceManager

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_SPAMBASE = REPO_ROOT.parent / "shared" / "data" / "spambase.csv"


# Nothing listens on port 1: a client that followed these would fail at once instead of reaching a
# real server by luck.
STRAY_MLFLOW_URI = "http://127.0.0.1:1"


def pytest_configure(config: pytest.Config) -> None:
    """Run every test as a user whose shell exports MLflow's own URI variables, pointing nowhere.

    fireman ignores them for its ``FIREMAN_MLFLOW_*`` settings. CI exports them at MLflow's default
    port, where the session's server often runs, and a test client built from a tracking URI alone took
    its registry from them and polled the wrong server for 15 minutes. Pointing them at nothing, on
    every machine, makes such a slip fail at once and everywhere.
    """
    for name in MLFLOW_URI_VARIABLES:
        os.environ[name] = STRAY_MLFLOW_URI
    # Every test, and every process a test starts, reads Spambase from the shared copy when there is one.
    if not os.environ.get("FIREMAN_SPAMBASE_PATH") and SHARED_SPAMBASE.is_file():
        os.environ["FIREMAN_SPAMBASE_PATH"] = str(SHARED_SPAMBASE)


@pytest.fixture(autouse=True)
def isolated_process_state() -> Iterator[None]:
    """Each test leaves the process as it found it: environment and MLflow's process-wide URIs.

    ``mlflow.set_tracking_uri`` and ``set_registry_uri`` write ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_REGISTRY_URI`` into ``os.environ``. Left there, one test's server reached later tests and
    every process they started: a model logged on a private server was registered on the shared one.
    """
    environ = dict(os.environ)
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]
    os.environ.clear()
    os.environ.update(environ)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def services_settings() -> ServicesSettings:
    os.environ.setdefault("FIREMAN_HOME", str(REPO_ROOT / ".fireman"))
    return ServicesSettings()


class SessionServices:
    """Starts shared services on first use; stops, at session end, only those this session started."""

    def __init__(self, manager: ServiceManager) -> None:
        self.manager = manager
        self.started: list[str] = []

    def need(self, name: str) -> None:
        if name in self.started:
            return
        already_up = self.manager.services[name].healthy()
        self.manager.start([name], on_progress=lambda _: None)
        if not already_up:
            self.started.append(name)


@pytest.fixture(scope="session")
def service_manager(services_settings: ServicesSettings) -> ServiceManager:
    return ServiceManager(services_settings, REPO_ROOT)


@pytest.fixture(scope="session")
def session_services(service_manager: ServiceManager) -> Iterator[SessionServices]:
    services = SessionServices(service_manager)
    yield services
    if os.environ.get("FIREMAN_TEST_KEEP_SERVICES") != "1":
        service_manager.stop(services.started, on_progress=lambda _: None)


@pytest.fixture(scope="session")
def kafka_service(session_services: SessionServices) -> KafkaSettings:
    session_services.need("kafka")
    return session_services.manager.settings.kafka


@pytest.fixture(scope="session")
def influx_service(session_services: SessionServices) -> InfluxSettings:
    session_services.need("influxdb")
    return session_services.manager.settings.influxdb


@pytest.fixture(scope="session")
def mlflow_service(session_services: SessionServices) -> MlflowSettings:
    session_services.need("mlflow")
    return session_services.manager.settings.mlflow


def fresh_topics(kafka: KafkaSettings, tag: str | None = None) -> KafkaSettings:
    """``kafka`` with four topics of its own (names ending in ``tag``, a random one by default), created."""
    from fireman.common.kafka_io import ensure_topics

    tag = tag or uuid.uuid4().hex[:10]
    settings = kafka.model_copy(
        update={
            "topic_measurements": f"measurements-{tag}",
            "topic_labels": f"labels-{tag}",
            "topic_predictions": f"predictions-{tag}",
            "topic_dlq": f"measurements-dlq-{tag}",
        }
    )
    ensure_topics(settings)
    return settings


@contextlib.contextmanager
def own_topics(kafka: KafkaSettings) -> Iterator[KafkaSettings]:
    """Fresh topics (``fresh_topics``) for a test or a module, deleted afterwards.

    Left behind, they pile up on a developer's broker (663 topics after a few days here), and every
    client that lists the cluster's metadata pays for them.
    """
    from fireman.common.kafka_io import delete_topics

    settings = fresh_topics(kafka)
    try:
        yield settings
    finally:
        delete_topics(settings, settings.topics())


@pytest.fixture
def kafka_topics(kafka_service: KafkaSettings) -> Iterator[KafkaSettings]:
    """Kafka settings whose four topics are fresh and belong to this test alone; deleted after it."""
    with own_topics(kafka_service) as settings:
        yield settings


@pytest.fixture
def influx_db(influx_service: InfluxSettings) -> Iterator[InfluxSettings]:
    """InfluxDB settings pointing at a fresh database, dropped after the test."""
    from fireman.common.influx import InfluxClient

    settings = influx_service.model_copy(update={"database": unique("test").replace("-", "_")})
    with InfluxClient(settings) as client:
        client.create_database()
    yield settings
    with InfluxClient(settings) as client:
        client.drop_database(settings.database)


def forget_model(names: MlflowSettings) -> None:
    """Delete a test's registered model: models left behind pile up on a shared server, and the MLflow
    UI cannot edit the aliases of a model past the first 100 of its list (it saves without a name)."""
    from fireman.common.model_registry import RegistryClient, RegistryError

    with RegistryClient(names) as client, contextlib.suppress(RegistryError):
        client.delete_model(names.model_name)


@pytest.fixture
def mlflow_names(mlflow_service: MlflowSettings) -> Iterator[MlflowSettings]:
    """MLflow settings with an experiment and registered model name of this test's own."""
    name = unique("spam-test")
    names = mlflow_service.model_copy(update={"experiment": name, "model_name": name})
    yield names
    forget_model(names)


@pytest.fixture
def new_registered_model(mlflow_service: MlflowSettings) -> Iterator[Callable[[], MlflowSettings]]:
    """Makes registered models with versions and no artifacts (aliases and tags only); deleted after."""
    from tests.integration.registry_support import registered_model

    made: list[MlflowSettings] = []

    def make() -> MlflowSettings:
        made.append(registered_model(mlflow_service))
        return made[-1]

    yield make
    for names in made:
        forget_model(names)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    faults = sys.modules.get("tests.integration.faults_support")
    reports: list[str] = getattr(faults, "REPORTS", [])
    if reports:
        terminalreporter.section("fault injection: outage, recovery and per-event audit")
        for text in reports:
            terminalreporter.write_line(text)


@pytest.fixture(scope="session")
def dataset_settings() -> DatasetSettings:
    return DatasetSettings()


def share_kafka_jars(home: Path) -> None:
    """Link the Kafka jars of the main state dir into state dir ``home``, so they are not downloaded again."""
    shared = Path(os.environ.get("FIREMAN_HOME", REPO_ROOT / ".fireman")) / "kafka" / "libs"
    (home / "kafka").mkdir(parents=True)
    if shared.is_dir():
        (home / "kafka" / "libs").symlink_to(shared)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def private_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceManager]:
    """A Kafka and an InfluxDB of this test module's own, on free ports, for tests that stop servers.

    Tests that kill or stop a server use these so the shared instances other tests rely on stay up.
    Call ``private_services.start([...])`` for what the module needs; everything is stopped afterwards.
    The Kafka jars are shared with the main state dir, so nothing is downloaded twice.
    """
    home = tmp_path_factory.mktemp("fireman-home")
    settings = ServicesSettings(
        state={"home": home},
        kafka=KafkaSettings(port=free_port(), controller_port=free_port()),
        influxdb=InfluxSettings(port=free_port(), rpc_port=free_port()),
        mlflow=MlflowSettings(port=free_port()),
    )
    manager = ServiceManager(settings, REPO_ROOT)
    share_kafka_jars(home)
    yield manager
    manager.stop(list(manager.services), on_progress=lambda _: None)


@pytest.fixture(scope="module")
def fault_stack(private_services: ServiceManager) -> ServiceManager:
    """``private_services`` with Kafka, InfluxDB and MLflow running, for the fault-injection tests."""
    from tests.integration.faults_support import start_fault_stack

    return start_fault_stack(private_services)
