"""The alert notifier's pieces that need no Airflow: where credentials come from, and that an Airflow
that is unconfigured or unreachable costs the monitor nothing but one log line.

Its REST calls against a real Airflow: tests/integration/test_airflow_alert_events.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fireman.common.airflow_api import AlertNotifier, alert_extra, credentials, default_password_file
from fireman.common.influx import Point
from fireman.common.settings import AirflowSettings, StateSettings
from tests.conftest import free_port

ALERT = Point("alerts", {"onset_ns": 1}, 2_000_000_000, {"kind": "performance", "model_version": "3"})


def test_credentials_come_from_the_setting_else_the_standalones_password_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateSettings(home=tmp_path)
    assert credentials(AirflowSettings(), state) is None  # no standalone here yet

    default_password_file(state).parent.mkdir(parents=True)
    default_password_file(state).write_text(json.dumps({"admin": "generated"}))
    assert credentials(AirflowSettings(), state) == ("admin", "generated")

    monkeypatch.setenv("FIREMAN_AIRFLOW_API_USERNAME", "ops")
    monkeypatch.setenv("FIREMAN_AIRFLOW_API_PASSWORD", "secret")
    settings = AirflowSettings()
    assert credentials(settings, state) == ("ops", "secret")
    assert "secret" not in repr(settings)  # a SecretStr: not in logs or tracebacks

    monkeypatch.delenv("FIREMAN_AIRFLOW_API_USERNAME")
    monkeypatch.delenv("FIREMAN_AIRFLOW_API_PASSWORD")
    other = tmp_path / "passwords.json"
    other.write_text(json.dumps({"admin": "elsewhere"}))
    assert credentials(AirflowSettings(api_password_file=other), state) == ("admin", "elsewhere")
    assert credentials(AirflowSettings(api_username="nobody", api_password_file=other), state) is None


def test_without_a_password_alerts_are_dropped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = AlertNotifier(AirflowSettings(), StateSettings(home=tmp_path))
    with caplog.at_level(logging.WARNING, "fireman.common.airflow_api"):
        notifier._send([ALERT])
        notifier._send([ALERT])
    assert notifier.sent == 0
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cron runs only" in warnings[0], warnings


def test_an_unreachable_airflow_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on a port just freed: connection refused, at once.
    settings = AirflowSettings(port=free_port(), api_password="x", api_retry_for_s=0)
    notifier = AlertNotifier(settings, StateSettings(home=tmp_path))
    with caplog.at_level(logging.WARNING, "fireman.common.airflow_api"):
        notifier._send([ALERT])
        notifier._send([ALERT])
    warnings = [r.getMessage() for r in caplog.records if r.name == "fireman.common.airflow_api"]
    assert len(warnings) == 1 and "next cron run" in warnings[0], warnings

    # The same through the notifier's thread, as the monitor uses it: notify returns, close ends it.
    threaded = AlertNotifier(settings, StateSettings(home=tmp_path)).start()
    threaded.notify(ALERT)
    threaded.close()
    assert threaded.sent == 0 and not threaded._thread.is_alive()


def test_a_full_queue_drops_the_alert_instead_of_blocking_the_monitor(tmp_path: Path) -> None:
    notifier = AlertNotifier(AirflowSettings(), StateSettings(home=tmp_path), max_queued=1)  # not started
    notifier.notify(ALERT)
    notifier.notify(ALERT)
    assert notifier.dropped == 1


def test_the_event_names_each_alert() -> None:
    assert alert_extra([ALERT]) == {
        "alerts": [
            {"kind": "performance", "model_version": "3", "time_ns": 2_000_000_000, "measurement": "alerts"}
        ]
    }
