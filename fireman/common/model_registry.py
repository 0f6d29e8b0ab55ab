"""MLflow's model registry over its REST API: versions, aliases, tags, and the run metrics shown beside them.

Everything fireman does with the registry (read and move ``production``, tag versions, list them) goes
through this client. Importing ``mlflow`` takes 3 to 7 s, which made ``fireman models``, ``promote``
and ``rollback`` take 5 to 7 s each, and the scorer's alias poll needs nothing of MLflow's client. The
REST API under ``/api/2.0/mlflow`` is MLflow's documented contract. Logging and loading models still
go through MLflow itself (``mlflow_uri``). Credentials are MLflow's own variables, read into
``MlflowSettings``, so both paths authenticate the same way.

No request is retried here: the CLI reports a failure at once, the scorer polls again, and DAG tasks
have Airflow's retry policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from fireman.common.errors import UserError
from fireman.common.http_client import HttpClient
from fireman.common.settings import MlflowSettings

API = "/api/2.0/mlflow"
# What MLflow answers for a model, version, alias or run that does not exist. A missing alias is
# INVALID_PARAMETER_VALUE (HTTP 400), not a 404.
MISSING = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})
SEARCH_PAGE = 1000


class RegistryError(Exception):
    """The registry refused a request or could not be reached; ``code`` is MLflow's ``error_code``."""

    def __init__(self, uri: str, code: str, message: str) -> None:
        super().__init__(f"MLflow at {uri}: {code}: {message}")
        self.code = code
        self.message = message

    @property
    def missing(self) -> bool:
        return self.code in MISSING


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    run_id: str
    creation_timestamp: int
    tags: dict[str, str] = field(default_factory=dict)
    # Filled by lookups of one version; MLflow's search leaves it empty (see RegisteredModel.aliases).
    aliases: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ModelVersion:
        return cls(
            name=raw["name"],
            version=str(raw["version"]),
            run_id=raw.get("run_id") or "",
            creation_timestamp=int(raw.get("creation_timestamp", 0)),
            tags={tag["key"]: tag.get("value", "") for tag in raw.get("tags", [])},
            aliases=tuple(raw.get("aliases", [])),
        )


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    tags: dict[str, str]
    aliases: dict[str, str]  # alias -> version

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RegisteredModel:
        return cls(
            name=raw["name"],
            tags={tag["key"]: tag.get("value", "") for tag in raw.get("tags", [])},
            aliases={entry["alias"]: str(entry["version"]) for entry in raw.get("aliases", [])},
        )


def _auth(settings: MlflowSettings) -> httpx.Auth | None:
    """Basic auth, unless a bearer token (which wins) goes in the client's headers."""
    if settings.tracking_username and not settings.tracking_token:
        return httpx.BasicAuth(settings.tracking_username, settings.tracking_password or "")
    return None


def _verify(settings: MlflowSettings) -> bool | str:
    if settings.tracking_insecure_tls:
        return False
    return settings.tracking_server_cert_path or True


class RegistryClient(HttpClient):
    """One connection to the registry at ``settings.tracking_uri``; safe to share between threads."""

    def __init__(self, settings: MlflowSettings, transport: httpx.BaseTransport | None = None) -> None:
        self.uri = settings.tracking_uri.rstrip("/")
        self._http = httpx.Client(
            base_url=self.uri + API,
            auth=_auth(settings),
            headers={"Authorization": f"Bearer {token}"} if (token := settings.tracking_token) else None,
            verify=_verify(settings),
            cert=settings.tracking_client_cert_path,
            timeout=settings.request_timeout_s,
            transport=transport,
        )

    # --- reads: None when the thing does not exist -------------------------------------------------

    def registered_model(self, name: str) -> RegisteredModel | None:
        found = self._get_or_none("/registered-models/get", {"name": name})
        return RegisteredModel.from_json(found["registered_model"]) if found else None

    def version(self, name: str, version: str) -> ModelVersion | None:
        found = self._get_or_none("/model-versions/get", {"name": name, "version": str(version)})
        return ModelVersion.from_json(found["model_version"]) if found else None

    def version_by_alias(self, name: str, alias: str) -> ModelVersion | None:
        found = self._get_or_none("/registered-models/alias", {"name": name, "alias": alias})
        return ModelVersion.from_json(found["model_version"]) if found else None

    def search_versions(self, filter_string: str) -> list[ModelVersion]:
        """Every version matching an MLflow filter such as ``name = 'spam-classifier'``."""
        versions: list[ModelVersion] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"filter": filter_string, "max_results": SEARCH_PAGE}
            if token:
                params["page_token"] = token
            page = self._call("GET", "/model-versions/search", params=params)
            versions += [ModelVersion.from_json(raw) for raw in page.get("model_versions", [])]
            token = page.get("next_page_token")
            if not token:
                return versions

    def run_metrics(self, run_id: str) -> dict[str, float] | None:
        """A run's latest metric values, or None when the run does not exist."""
        found = self._get_or_none("/runs/get", {"run_id": run_id})
        if found is None:
            return None
        metrics = found["run"].get("data", {}).get("metrics", [])
        return {metric["key"]: float(metric["value"]) for metric in metrics}

    # --- writes ------------------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(
            "POST", "/registered-models/alias", {"name": name, "alias": alias, "version": str(version)}
        )

    def delete_alias(self, name: str, alias: str) -> None:
        self._call("DELETE", "/registered-models/alias", {"name": name, "alias": alias})

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self._call("POST", "/registered-models/set-tag", {"name": name, "key": key, "value": value})

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        body = {"name": name, "version": str(version), "key": key, "value": value}
        self._call("POST", "/model-versions/set-tag", body)

    def delete_model(self, name: str) -> None:
        self._call("DELETE", "/registered-models/delete", {"name": name})

    # --- transport ---------------------------------------------------------------------------------

    def _get_or_none(self, path: str, params: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self._call("GET", path, params=params)
        except RegistryError as exc:
            if exc.missing:
                return None
            raise

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise RegistryError(self.uri, "UNREACHABLE", f"{type(exc).__name__}: {exc}") from exc
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            payload = {}
        if response.is_success and isinstance(payload, dict):
            return payload
        if not isinstance(payload, dict) or "error_code" not in payload:
            text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
            raise RegistryError(self.uri, f"HTTP_{response.status_code}", text or response.reason_phrase)
        raise RegistryError(self.uri, str(payload["error_code"]), str(payload.get("message", "")))


def check_health(settings: MlflowSettings, timeout_s: float = 3.0) -> None:
    """Fail fast with a clear message: MLflow's own client would retry for minutes."""
    url = f"{settings.tracking_uri.rstrip('/')}/health"
    try:
        response = httpx.get(url, timeout=timeout_s, verify=_verify(settings))
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


def connect(settings: MlflowSettings, timeout_s: float = 3.0) -> RegistryClient:
    """A registry client, after checking that the server answers."""
    check_health(settings, timeout_s)
    return RegistryClient(settings)
