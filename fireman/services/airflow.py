"""Airflow 3 in standalone mode: SQLite metadata, the project's ``dags/`` folder, loopback only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from fireman.services.base import LocalService

ADMIN_USER = "admin"


class AirflowService(LocalService):
    name = "airflow"

    def ports(self) -> list[int]:
        return [self.settings.airflow.port]

    def check_prerequisites(self) -> None:
        pass  # apache-airflow is a Python dependency of the project

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def password_file(self) -> Path:
        return self.dir / "simple_auth_manager_passwords.json.generated"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "airflow", "standalone"]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        settings = self.settings.airflow
        env.update(
            AIRFLOW_HOME=str(self.dir),
            AIRFLOW__CORE__DAGS_FOLDER=str(self.root / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{ADMIN_USER}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(self.password_file),
            AIRFLOW__API__HOST=settings.host,
            AIRFLOW__API__PORT=str(settings.port),
            AIRFLOW__API__BASE_URL=settings.url,
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{settings.url}/execution/",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{self.dir / 'airflow.db'}",
            AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
            FIREMAN_PROJECT_ROOT=str(self.root),
        )
        return env

    def admin_password(self) -> str | None:
        try:
            return str(json.loads(self.password_file.read_text())[ADMIN_USER])
        except (OSError, ValueError, KeyError):
            return None

    def healthy(self) -> bool:
        try:
            response = httpx.get(f"{self.settings.airflow.url}/api/v2/monitor/health", timeout=3.0)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        components = response.json()
        return all(
            components.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler")
        )

    def describe(self) -> str:
        password = self.admin_password()
        login = f" (login {ADMIN_USER} / {password})" if password else ""
        return f"{self.settings.airflow.url}{login}"
