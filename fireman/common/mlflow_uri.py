"""The one way fireman reaches MLflow: the ``FIREMAN_MLFLOW_*`` settings, for tracking and registry alike.

MLflow resolves its server from process-wide state: ``mlflow.set_tracking_uri`` and
``set_registry_uri`` also write ``MLFLOW_TRACKING_URI`` and ``MLFLOW_REGISTRY_URI`` into the
environment, which every child process inherits, and a client built with a tracking URI alone still
takes its registry from ``MLFLOW_REGISTRY_URI``. A URI left there by a user's shell or by an earlier
caller in the same process then silently wins: a model logged to one server was registered on
another. So fireman never lets MLflow guess: every client gets both URIs from the settings, and
:func:`bind` points the fluent API (``log_model``, ``load_model``) at the same server, registry
included.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from fireman.common.settings import MlflowSettings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# MLflow's own variables, which fireman overrides with its settings (see docs/decisions.md).
MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def client(settings: MlflowSettings) -> MlflowClient:
    """A client whose tracking and registry URIs are both ``settings.tracking_uri``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def bind(settings: MlflowSettings) -> None:
    """Point MLflow's process-wide tracking and registry URIs at ``settings.tracking_uri``."""
    import mlflow

    uri = settings.tracking_uri
    for name in MLFLOW_URI_VARIABLES:
        stray = os.environ.get(name)
        if stray and stray != uri:
            log.warning("ignoring %s=%s: fireman uses FIREMAN_MLFLOW_* settings (%s)", name, stray, uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
