"""The whole local platform behind ``fireman up``: the servers, a first model, then the fireman processes.

Each fireman process (collector, sink, scorer, serve, monitor, dashboard, generator) is run like a
server: its own session, a pid file and a log under ``$FIREMAN_HOME/apps/<name>/``, so ``fireman down``
can stop a stack that ``fireman up --detach`` left running, and Ctrl-C stops exactly what was started.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import ClassVar

import httpx

from fireman.common.errors import UserError
from fireman.common.model_registry import RegistryClient
from fireman.common.settings import ServicesSettings
from fireman.dashboard.settings import DashboardSettings
from fireman.services.base import LocalService
from fireman.services.manager import Progress, ServiceManager
from fireman.services.process import PidRecord
from fireman.serving.settings import ServeSettings
from fireman.streaming.settings import DEFAULT_DRIFT_FEATURES, CollectorSettings

SERVERS = ("kafka", "influxdb", "mlflow", "airflow")


def fireman_executable() -> str:
    beside_python = Path(sys.executable).with_name("fireman")
    return str(beside_python) if beside_python.exists() else (shutil.which("fireman") or "fireman")


class AppProcess(LocalService):
    """A fireman process of the stack (``fireman <name>``); healthy while the process we started is alive."""

    @property
    def dir(self) -> Path:
        return self.settings.state.root / "apps" / self.name

    def ports(self) -> list[int]:
        return []

    def check_prerequisites(self) -> None:
        pass

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [fireman_executable(), self.name]

    def healthy(self) -> bool:
        return _running(self)

    def describe(self) -> str:
        return f"log {self.log_path}"


def _running(service: LocalService) -> bool:
    """The process fireman started for ``service`` is alive."""
    record = PidRecord.read(service.pid_path)
    return record is not None and record.process() is not None


class HttpApp(AppProcess):
    """A fireman process that serves HTTP: healthy while its health path answers 200."""

    health_path: ClassVar[str]
    # The process's settings class; its ``host`` and ``port`` are where it listens.
    settings_class: ClassVar[type[CollectorSettings | ServeSettings | DashboardSettings]]

    def url(self) -> str:
        settings = self.settings_class()
        return f"http://{settings.host}:{settings.port}"

    def ports(self) -> list[int]:
        return [self.settings_class().port]

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url()}{self.health_path}", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def describe(self) -> str:
        return self.url()


class CollectorApp(HttpApp):
    name = "collector"
    health_path = "/healthz"
    settings_class = CollectorSettings


class SinkApp(AppProcess):
    name = "sink"


class ScorerApp(AppProcess):
    name = "scorer"


class ServeApp(HttpApp):
    """Online inference (Open Inference Protocol V2) with the same production model as the scorer."""

    name = "serve"
    # Live, not ready: the process is up and answering; readiness (a loaded model) it reports itself.
    health_path = "/v2/health/live"
    settings_class = ServeSettings

    def describe(self) -> str:
        return f"{self.url()}/v2/models/{ServeSettings().mlflow.model_name}"


class MonitorApp(AppProcess):
    name = "monitor"


class DashboardApp(HttpApp):
    name = "dashboard"
    health_path = "/api/health"
    settings_class = DashboardSettings


class GeneratorApp(AppProcess):
    """The demo sensor fleet; its rate and drift come from the demo profile's FIREMAN_GENERATOR_* values."""

    name = "generator"


# The demo shifts 36 of 57 features: the generator's ten high-importance defaults alone move a drift
# share of about 0.18, below the monitor's default alert threshold (0.5), and the demo must alert.
DEMO_DRIFT_FEATURES = list(dict.fromkeys([*DEFAULT_DRIFT_FEATURES, *(f"Cont_{i}" for i in range(1, 32))]))

# Environment defaults of each demo profile; a variable the user has set wins. `standard` shifts after
# ~2.5 minutes; `short` compresses the story for the end-to-end test. Neither shortens monitor_drift's
# hourly schedule: the monitor's alert wakes it (an Airflow asset event) within seconds.
DEMO_PROFILES: dict[str, dict[str, str]] = {
    "standard": {
        # 50 events/s: a retrain after a shift waits for FIREMAN_TRAIN_SHIFT_MIN_ROWS (2,000) labelled rows
        # since the onset, 40 s here (100 s at 20 events/s, which kept the new version out past 3 min).
        "FIREMAN_GENERATOR_RATE": "50",
        "FIREMAN_GENERATOR_LOOP": "true",
        "FIREMAN_GENERATOR_DRIFT_AFTER": "7500",
        "FIREMAN_GENERATOR_DRIFT_KIND": "shift",
        "FIREMAN_GENERATOR_LABEL_DELAY_S": "5",
        # 6 s windows; the demo's scorer uses a few percent of a core, so Evidently may take a quarter of
        # one (the default 0.1 protects a busy scorer): windows are tested as they close, and two
        # drifting ones raise the alert well within a minute of the shift (70 s at 0.1 with 15 s windows).
        "FIREMAN_MONITOR_WINDOW_SIZE": "300",
        "FIREMAN_MONITOR_DRIFT_CPU_BUDGET": "0.25",
        "FIREMAN_SCORER_RELOAD_INTERVAL_S": "10",
        "FIREMAN_SERVE_RELOAD_INTERVAL_S": "10",
    },
    "short": {
        "FIREMAN_GENERATOR_RATE": "100",
        "FIREMAN_GENERATOR_LOOP": "true",
        "FIREMAN_GENERATOR_DRIFT_AFTER": "1500",
        "FIREMAN_GENERATOR_DRIFT_KIND": "shift",
        "FIREMAN_GENERATOR_LABEL_DELAY_S": "2",
        "FIREMAN_MONITOR_WINDOW_SIZE": "500",
        "FIREMAN_MONITOR_MIN_WINDOW_SIZE": "100",
        # Windows close every few seconds here; let Evidently test most of them.
        "FIREMAN_MONITOR_DRIFT_CPU_BUDGET": "0.5",
        "FIREMAN_SCORER_RELOAD_INTERVAL_S": "5",
        "FIREMAN_SERVE_RELOAD_INTERVAL_S": "5",
    },
}


def demo_environment(profile: str) -> dict[str, str]:
    if profile not in DEMO_PROFILES:
        raise UserError(f"unknown demo profile {profile!r}; choose from {', '.join(DEMO_PROFILES)}")
    return {**DEMO_PROFILES[profile], "FIREMAN_GENERATOR_DRIFT_FEATURES": json.dumps(DEMO_DRIFT_FEATURES)}


APP_TYPES: dict[str, type[LocalService]] = {
    cls.name: cls
    for cls in (CollectorApp, SinkApp, ScorerApp, ServeApp, MonitorApp, DashboardApp, GeneratorApp)
}


class Stack:
    def __init__(self, settings: ServicesSettings, root: Path | None = None) -> None:
        self.servers = ServiceManager(settings, root)
        self.apps = ServiceManager(settings, self.servers.root, types=APP_TYPES)

    def app_names(self, generator: bool) -> list[str]:
        return [name for name in APP_TYPES if generator or name != "generator"]

    def start(self, generator: bool, on_progress: Progress) -> None:
        self.servers.start(SERVERS, on_progress=on_progress)
        ensure_first_model(on_progress)
        self.apps.start(self.app_names(generator), on_progress=on_progress)

    def stop(self, on_progress: Progress, only_started: bool = False) -> list[str]:
        """Stop the apps, then the servers; returns the names of any process still alive afterwards.

        ``only_started`` limits it to what this Stack spawned, so a failed start-up leaves servers that
        were already running (another stack, a test session) alone.
        """
        self.apps.stop(self.apps.started if only_started else list(APP_TYPES), on_progress=on_progress)
        servers = self.servers.started if only_started else list(self.servers.services)
        self.servers.stop(servers, on_progress=on_progress)
        return [
            name
            for manager in (self.apps, self.servers)
            for name, service in manager.services.items()
            if _running(service)
        ]


def ensure_first_model(on_progress: Progress) -> None:
    """Train and promote a model from Spambase when the registry has no production model yet."""
    from fireman.training.registry import resolve_production
    from fireman.training.settings import TrainingSettings
    from fireman.training.workflow import run_training

    settings = TrainingSettings()
    with RegistryClient(settings.mlflow) as client:
        current = resolve_production(client, settings.mlflow)
    if current is not None:
        on_progress(f"model: {settings.mlflow.model_name}@production is version {current[0]}")
        return
    on_progress("model: registry is empty, training the first model from Spambase...")
    outcome = run_training(settings, source="file", promote="auto")
    f1 = outcome.metrics.get("f1", float("nan"))
    on_progress(f"model: version {outcome.version} trained (hold-out F1 {f1:.3f}), {outcome.reason}")
