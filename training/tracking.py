"""The MLflow connection: an explicit tracking URI, checked for health before anything is logged."""

from __future__ import annotations

import httpx
from mlflow import MlflowClient

from fireman_common import mlflow_uri
from fireman_common.errors import UserError
from fireman_common.settings import MlflowSettings


def check_health(settings: MlflowSettings, timeout_s: float = 3.0) -> None:
    """Fail fast with a clear message: MLflow's own client would retry for minutes."""
    url = f"{settings.tracking_uri.rstrip('/')}/health"
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise UserError(
            f"MLflow tracking server at {settings.tracking_uri} is unreachable ({type(exc).__name__}); "
            "start it with `fireman services start --only mlflow` or set FIREMAN_MLFLOW_TRACKING_URI"
        ) from exc
    if response.status_code != 200:
        raise UserError(
            f"MLflow tracking server at {settings.tracking_uri} is unhealthy: /health answered "
            f"{response.status_code}"
        )


def connect(settings: MlflowSettings, timeout_s: float = 3.0) -> MlflowClient:
    """A client bound to ``settings.tracking_uri``; also points MLflow's fluent API (log_model) at it."""
    check_health(settings, timeout_s)
    mlflow_uri.bind(settings)
    return mlflow_uri.client(settings)
