"""Airflow's REST API (v2), as far as fireman uses it: an alert becomes an asset event at once.

``monitor_drift`` is scheduled on its cron *or* on the asset ``ALERTS_ASSET``. When ``fireman monitor``
writes an alert, :class:`AlertNotifier` posts an event of that asset (``POST /api/v2/assets/events``),
and Airflow's scheduler creates a ``monitor_drift`` run within seconds instead of at the next cron
tick. The notifier is best effort by design: InfluxDB holds the alert and the cron reads it anyway,
so an Airflow that is down, unconfigured or refusing costs latency, never an alert. It never blocks
the monitor's loop (the POST is made on a thread of its own) and never raises into it.

Credentials: ``FIREMAN_AIRFLOW_API_USERNAME`` / ``FIREMAN_AIRFLOW_API_PASSWORD``, else the password
in the simple auth manager's JSON file, by default the one ``fireman services start`` generates for the
local standalone, so ``fireman up`` needs no configuration.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from fireman.common.http_client import HttpClient
from fireman.common.influx import Point
from fireman.common.retry import Backoff
from fireman.common.settings import AirflowSettings, StateSettings

log = logging.getLogger(__name__)

# monitor_drift's schedule names the asset by these; the notifier looks its id up by the URI.
ALERTS_ASSET_NAME = "fireman-alerts"
ALERTS_ASSET_URI = "x-fireman://alerts"
# The simple auth manager's password file, as `fireman services` writes it for the local standalone.
PASSWORD_FILE_NAME = "simple_auth_manager_passwords.json.generated"
# Retries of one event while Airflow is unreachable (a restart), for FIREMAN_AIRFLOW_API_RETRY_FOR_S.
RETRY = Backoff(initial_s=0.5, max_s=10.0)


class AirflowApiError(RuntimeError):
    """Airflow answered, and no retry would change the answer (bad credentials, unknown asset...)."""


class AirflowUnavailable(AirflowApiError):
    """Airflow could not be reached, timed out or answered 5xx: a retry may succeed."""


def default_password_file(state: StateSettings) -> Path:
    """Where the local standalone keeps its admin password (fireman.services.airflow writes it)."""
    return state.root / "airflow" / PASSWORD_FILE_NAME


def credentials(settings: AirflowSettings, state: StateSettings) -> tuple[str, str] | None:
    """The API user and password, or None when neither the setting nor the file gives a password."""
    user = settings.api_username
    if settings.api_password is not None:
        return user, settings.api_password.get_secret_value()
    path = settings.api_password_file or default_password_file(state)
    try:
        passwords = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    password = passwords.get(user) if isinstance(passwords, dict) else None
    return (user, str(password)) if password else None


class AirflowApi(HttpClient):
    """A JWT-authenticated client of ``/api/v2``: a token from ``/auth/token``, renewed on a 401."""

    def __init__(self, url: str, username: str, password: str, timeout_s: float) -> None:
        self.url = url
        self._username = username
        self._password = password
        self._http = httpx.Client(base_url=url, timeout=timeout_s)
        self._token: str | None = None

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call, its JSON answer; a rejected token is renewed once: tokens expire (401), and a
        restarted standalone may sign with a new secret (403 "Invalid JWT token")."""
        if self._token is None:
            self._token = self._new_token()
        response = self._send(method, path, self._token, **kwargs)
        if _token_rejected(response):
            self._token = self._new_token()
            response = self._send(method, path, self._token, **kwargs)
        _raise_for(response, f"{method} {path}")
        return response.json()

    def asset_id(self, uri: str) -> int:
        """The id of the asset with this URI; it exists once a DAG scheduled on it has been parsed."""
        found = self.request("GET", "/api/v2/assets", params={"uri_pattern": uri, "limit": 100})
        for asset in found.get("assets", []):
            if asset.get("uri") == uri:
                return int(asset["id"])
        raise AirflowApiError(f"Airflow has no asset {uri}: is the monitor_drift DAG loaded?")

    def post_asset_event(self, uri: str, extra: dict[str, Any]) -> dict[str, Any]:
        return self.request(
            "POST", "/api/v2/assets/events", json={"asset_id": self.asset_id(uri), "extra": extra}
        )

    def _new_token(self) -> str:
        response = self._call(
            "POST", "/auth/token", json={"username": self._username, "password": self._password}
        )
        _raise_for(response, "POST /auth/token")
        return str(response.json()["access_token"])

    def _send(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        return self._call(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AirflowUnavailable(f"{method} {self.url}{path}: {exc!r}") from exc


def _token_rejected(response: httpx.Response) -> bool:
    return response.status_code == 401 or (response.status_code == 403 and "Invalid JWT" in response.text)


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code < 400:
        return
    text = f"{what}: HTTP {response.status_code} {response.text[:300]}"
    if response.status_code >= 500 or response.status_code == 429:
        raise AirflowUnavailable(text)
    raise AirflowApiError(text)


def alert_extra(points: list[Point]) -> dict[str, Any]:
    """What an asset event says about the alerts behind it (shown in Airflow's asset view)."""
    return {
        "alerts": [
            {**dict(point.tags), "time_ns": point.time_ns, "measurement": point.measurement}
            for point in points
        ]
    }


class AlertNotifier:
    """``notify(point)`` from the monitor; the asset event is posted on the notifier's own thread.

    Alerts queued while a POST is under way go out together as one event: one more
    ``monitor_drift`` run reads them all. A full queue drops the alert (logged): the cron still
    reads it from InfluxDB. Failures are logged when the state changes (reachable, unreachable,
    not configured), not for every alert.
    """

    def __init__(self, settings: AirflowSettings, state: StateSettings, max_queued: int = 100) -> None:
        self.settings = settings
        self.state = state
        self.sent = 0  # events posted
        self.dropped = 0  # alerts that found the queue full
        self._queue: queue.Queue[Point | None] = queue.Queue(maxsize=max_queued)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-notifier", daemon=True)
        self._api: AirflowApi | None = None
        self._status = ""  # the last state logged

    def start(self) -> AlertNotifier:
        self._thread.start()
        return self

    def notify(self, point: Point) -> None:
        """Never blocks and never raises: the monitor calls it right after writing an alert."""
        try:
            self._queue.put_nowait(point)
        except queue.Full:
            self.dropped += 1
            log.warning("alert notifier queue full; monitor_drift reads this alert at its cron run")

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (within ``timeout_s``), then stop."""
        if self._thread.ident is not None:
            with contextlib.suppress(queue.Full):  # then the stop below ends the thread's wait
                self._queue.put(None, timeout=timeout_s)
            self._thread.join(timeout_s)
            self._stop.set()
            self._thread.join(1.0)
        if self._api is not None:
            self._api.close()

    def _run(self) -> None:
        while True:
            queued = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while queued[-1] is not None:  # everything queued meanwhile, in the same event
                    queued.append(self._queue.get_nowait())
            closing = queued[-1] is None
            batch = [point for point in queued if point is not None]
            if batch:
                try:
                    self._send(batch)
                except Exception:  # a bug here must not take the monitor down
                    log.exception("posting an alert event to Airflow failed")
            if closing or self._stop.is_set():
                return

    def _send(self, batch: list[Point]) -> None:
        api = self._connect()
        if api is None:
            self._report(
                "unconfigured",
                logging.WARNING,
                "no Airflow API password (FIREMAN_AIRFLOW_API_PASSWORD, or the file %s): "
                "monitor_drift reads alerts at its cron runs only",
                self.settings.api_password_file or default_password_file(self.state),
            )
            return
        # While Airflow is known to be down, one try per alert: retries (and their log lines) for each
        # alert would only repeat what the first said.
        retry_for = self.settings.api_retry_for_s if self._status != "failing" else 0.0
        deadline = time.monotonic() + retry_for
        started = time.monotonic()
        event: dict[str, Any] = {}
        try:
            for attempt in RETRY.retrying(
                AirflowUnavailable,
                sleep=self._stop.wait,
                give_up=lambda: self._stop.is_set() or time.monotonic() >= deadline,
                failure="Airflow unavailable",
            ):
                with attempt:
                    event = api.post_asset_event(ALERTS_ASSET_URI, alert_extra(batch))
        except AirflowApiError as exc:
            if not isinstance(exc, AirflowUnavailable):
                api.close()
                self._api = None  # credentials are read again: the standalone may have a new password
            self._report(
                "failing",
                logging.WARNING,
                "alert event not posted to Airflow at %s (%s): monitor_drift reads the alert at its "
                "next cron run",
                api.url,
                exc,
            )
            return
        self.sent += 1
        self._report("ok", logging.INFO, "alerts reach monitor_drift through Airflow at %s", api.url)
        log.info(
            "posted asset event %s for %d alert(s) in %.0f ms",
            event.get("id"),
            len(batch),
            1000 * (time.monotonic() - started),
        )

    def _connect(self) -> AirflowApi | None:
        # Read on every alert until found: the standalone may write its password file after the
        # monitor started.
        if self._api is None:
            found = credentials(self.settings, self.state)
            if found is not None:
                self._api = AirflowApi(self.settings.url, *found, timeout_s=self.settings.api_timeout_s)
        return self._api

    def _report(self, status: str, level: int, message: str, *args: object) -> None:
        if status != self._status:
            self._status = status
            log.log(level, message, *args)
