"""The MLflow tracking connection (runs, experiments, artifacts), checked for health before logging.

The registry (versions, aliases, tags) is reached through ``fireman.common.model_registry`` instead.
"""

from __future__ import annotations

from mlflow import MlflowClient

from fireman.common import mlflow_uri, model_registry
from fireman.common.settings import MlflowSettings


def connect(settings: MlflowSettings, timeout_s: float = 3.0) -> MlflowClient:
    """A client bound to ``settings.tracking_uri``; also points MLflow's fluent API (log_model) at it."""
    model_registry.check_health(settings, timeout_s)
    mlflow_uri.bind(settings)
    return mlflow_uri.client(settings)
