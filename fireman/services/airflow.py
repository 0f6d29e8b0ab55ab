"""Airflow 3 in standalone mode: SQLite metadata, the project's ``dags/`` folder, loopback only.

With ``FIREMAN_POSTGRES_ENABLED`` the metadata is the ``airflow`` database of the PostgreSQL that
``fireman services`` starts before it (psycopg2; Airflow derives its async engine, asyncpg, from it).

``airflow standalone`` runs the API server (UI + REST on one port), the scheduler, the DAG processor
and the triggerer as child processes it starts by the name ``airflow``, so the virtualenv's ``bin``
goes first on their PATH. Login is Airflow's simple auth manager with one ``admin`` user; we write
its password file ourselves before the first start, so the password is shown once by the command
that created it and afterwards only the file (mode 0600, in the state dir) is named.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import string
import sys
from pathlib import Path

import httpx

from fireman.common.airflow_api import PASSWORD_FILE_NAME
from fireman.common.settings import ServicesSettings
from fireman.services.base import MetadataService
from fireman.services.process import ServiceError

ADMIN_USER = "admin"
# Everything the UI and the REST API need to run a DAG; the triggerer only runs deferred tasks but
# standalone starts it too, and a dead one means something is wrong.
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "dag_processor", "triggerer")
_PASSWORD_ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "lIO01")


class AirflowService(MetadataService):
    name = "airflow"

    def __init__(self, settings: ServicesSettings, root: Path) -> None:
        super().__init__(settings, root)
        self._new_password: str | None = None

    def ports(self) -> list[int]:
        settings = self.settings.airflow
        return [settings.port, settings.worker_log_port, settings.trigger_log_port]

    def check_prerequisites(self) -> None:
        # Airflow is the `airflow` extra: an install for the runtime processes alone does without it.
        if importlib.util.find_spec("airflow") is None:
            raise ServiceError(
                f"Airflow is not installed in {sys.prefix}: install fireman with its `airflow` extra "
                "(pip install 'fireman[airflow]', or 'make setup' in a checkout)."
            )
        if self.settings.postgres.enabled and importlib.util.find_spec("asyncpg") is None:
            raise ServiceError(
                f"Airflow on PostgreSQL needs asyncpg, which is missing in {sys.prefix}: reinstall fireman's "
                "`airflow` extra (pip install 'fireman[airflow]', or 'make setup' in a checkout)."
            )

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.admin_password() is None:
            password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(20))
            self.password_file.write_text(json.dumps({ADMIN_USER: password}) + "\n")
            self.password_file.chmod(0o600)
            self._new_password = password

    @property
    def password_file(self) -> Path:
        return self.dir / PASSWORD_FILE_NAME  # where `fireman monitor` finds it (fireman.common.airflow_api)

    @property
    def dags_folder(self) -> Path:
        return self.root / "dags"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "airflow", "standalone"]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        settings = self.settings.airflow
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # DAGs start unpaused so the schedules close the loop without a click; set it to True in the
        # environment to keep Airflow's cautious default.
        env.setdefault("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False")
        env.update(
            AIRFLOW_HOME=str(self.dir),
            AIRFLOW__CORE__DAGS_FOLDER=str(self.dags_folder),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{ADMIN_USER}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(self.password_file),
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{settings.url}/execution/",
            AIRFLOW__API__HOST=settings.host,
            AIRFLOW__API__PORT=str(settings.port),
            AIRFLOW__API__BASE_URL=settings.url,
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=self.metadata_uri(),
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(settings.worker_log_port),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(settings.trigger_log_port),
            AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
            FIREMAN_PROJECT_ROOT=str(self.root),
        )
        return env

    def metadata_uri(self) -> str:
        return self.database_uri(self.settings.postgres.airflow_database, "airflow.db")

    def admin_password(self) -> str | None:
        try:
            return str(json.loads(self.password_file.read_text())[ADMIN_USER])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def healthy(self) -> bool:
        try:
            response = httpx.get(f"{self.settings.airflow.url}/api/v2/monitor/health", timeout=3.0)
            components = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return False
        return all((components.get(part) or {}).get("status") == "healthy" for part in HEALTH_COMPONENTS)

    def describe(self) -> str:
        url = self.settings.airflow.url
        if self._new_password:
            return f"{url} (login {ADMIN_USER} / {self._new_password}, saved in {self.password_file})"
        return f"{url} (login {ADMIN_USER}, password in {self.password_file})"

    def start_timeout_s(self) -> float:
        # Standalone starts four Python servers and migrates its database on first start: minutes on
        # a loaded 2-core machine.
        return max(self.settings.start_timeout_s, 300.0)
