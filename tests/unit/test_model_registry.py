"""The registry client's own behaviour: credentials it sends and how it reports failures.

The registry's answers themselves are tested against a real MLflow server (tests/integration); here
a transport records the requests, or stands in for what a real server never sends (a proxy's page).
"""

from __future__ import annotations

import httpx
import pytest

from fireman.common.model_registry import RegistryClient, RegistryError
from fireman.common.settings import MlflowSettings
from tests.conftest import free_port


def recording(seen: list[httpx.Request], response: httpx.Response) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    ("env", "header"),
    [
        ({"MLFLOW_TRACKING_USERNAME": "ops", "MLFLOW_TRACKING_PASSWORD": "s3cret"}, "Basic b3BzOnMzY3JldA=="),
        ({"MLFLOW_TRACKING_TOKEN": "tok", "MLFLOW_TRACKING_USERNAME": "ops"}, "Bearer tok"),
        ({}, None),
    ],
)
def test_mlflows_own_credential_variables_are_sent(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], header: str | None
) -> None:
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    seen: list[httpx.Request] = []
    answer = httpx.Response(200, json={"registered_model": {"name": "m"}})
    with RegistryClient(MlflowSettings(), transport=recording(seen, answer)) as client:
        assert client.registered_model("m") == client.registered_model("m")
    assert seen[0].headers.get("Authorization") == header
    assert seen[0].url.path == "/api/2.0/mlflow/registered-models/get"


def test_a_proxy_error_page_is_reported_by_status_and_first_line() -> None:
    page = httpx.Response(502, text="Bad Gateway\n<html>...</html>")
    client = RegistryClient(MlflowSettings(), transport=recording([], page))
    with client, pytest.raises(RegistryError, match=r"HTTP_502: Bad Gateway$") as raised:
        client.version_by_alias("m", "production")
    assert not raised.value.missing


def test_a_server_that_is_not_there_is_unreachable_not_missing() -> None:
    settings = MlflowSettings(FIREMAN_MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    with RegistryClient(settings) as client, pytest.raises(RegistryError) as raised:
        client.registered_model("m")
    assert raised.value.code == "UNREACHABLE" and not raised.value.missing
