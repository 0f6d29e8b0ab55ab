"""The MLflow tracking server (SQLite backend, local artifact root), started by ``mlflow/start-server.sh``.

With ``FIREMAN_POSTGRES_ENABLED`` its backend store is the ``mlflow`` database of the PostgreSQL that
``fireman services`` starts before it; artifacts stay in the state directory either way.
"""

from __future__ import annotations

import sys

import httpx

from fireman.services.base import MetadataService


class MlflowService(MetadataService):
    name = "mlflow"

    def ports(self) -> list[int]:
        return [self.settings.mlflow.port]

    def check_prerequisites(self) -> None:
        pass  # mlflow is a Python dependency of the project, installed by `make setup`

    def prepare(self) -> None:
        (self.dir / "artifacts").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return ["bash", str(self.root / "mlflow" / "start-server.sh")]

    def backend_store_uri(self) -> str:
        return self.database_uri(self.settings.postgres.mlflow_database, "mlflow.db")

    def environment(self) -> dict[str, str]:
        env = super().environment()
        settings = self.settings.mlflow
        env.update(
            PYTHON=sys.executable,
            MLFLOW_BACKEND_STORE_URI=self.backend_store_uri(),
            MLFLOW_ARTIFACTS_DESTINATION=str(self.dir / "artifacts"),
            MLFLOW_HOST=settings.host,
            MLFLOW_PORT=str(settings.port),
            MLFLOW_WORKERS=str(settings.workers),
        )
        return env

    def healthy(self) -> bool:
        try:
            response = httpx.get(f"{self.settings.mlflow.tracking_uri}/health", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def describe(self) -> str:
        return self.settings.mlflow.tracking_uri
