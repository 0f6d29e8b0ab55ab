"""A registered model with versions but no artifacts, for tests of aliases and tags."""

from __future__ import annotations

from fireman.common import mlflow_uri
from fireman.common.settings import MlflowSettings
from tests.conftest import unique

VERSIONS = ("1", "2", "3")


def registered_model(mlflow: MlflowSettings) -> MlflowSettings:
    """A new registered model of ``VERSIONS``; the returned settings name it.

    Callers delete it afterwards (``forget_model``), through the ``new_registered_model`` fixture.
    """
    names = mlflow.model_copy(update={"model_name": unique("history")})
    client = mlflow_uri.client(names)
    client.create_registered_model(names.model_name)
    for _ in VERSIONS:
        # Only aliases and tags are exercised: no artifact is ever read from this (unfetched) source.
        client.create_model_version(names.model_name, source="s3://fireman-tests/no-artifacts", run_id=None)
    return names
