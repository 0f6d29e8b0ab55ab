"""Should drift trigger a retrain? The logic of the ``monitor_drift`` DAG, without Airflow.

The monitor writes a point to ``alerts`` for every window that closes a run of at least K drifting
windows (``share_drifted_features`` at or above its threshold). For one interval this module:

1. reads the alerts in ``[start, end)``; none means no retrain;
2. finds the drift onset: from the first alert it walks back over the window-level ``drift`` points
   of the same model version for as long as they drift, and takes the earliest one's time;
3. applies the cool-down: a retrain recorded in ``retrain_triggers`` less than ``cooldown_hours``
   away from ``end`` (either side, so re-running an old interval is also covered) means no retrain;
4. otherwise asks for a retrain over ``[onset, end)``.

The cool-down state lives in InfluxDB, next to the alerts it is about: a point in
``retrain_triggers`` at the interval end, written by ``record_trigger`` after the retrain DAG run
was created. It survives an Airflow reset, is visible to dashboards, and writing it twice for the
same interval overwrites the same point.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fireman.common.influx import InfluxClient, Point, quote_identifier, quote_literal
from fireman.common.measurements import ALERTS, DRIFT, RETRAIN_TRIGGERS
from fireman.common.settings import InfluxSettings

log = logging.getLogger(__name__)


class DriftTriggerSettings(BaseSettings):
    """Settings of the ``monitor_drift`` DAG (``FIREMAN_DRIFT_TRIGGER_*``)."""

    model_config = SettingsConfigDict(env_prefix="FIREMAN_DRIFT_TRIGGER_", extra="ignore", env_file=None)

    cooldown_hours: float = Field(
        default=6.0, ge=0, description="No second drift-triggered retrain within this many hours."
    )
    lookback_hours: float = Field(
        default=24.0, gt=0, description="How far before the first alert the drift onset is searched."
    )
    drift_threshold: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of drifted features that counts as drifting when an alert carries no threshold.",
    )
    influxdb: InfluxSettings = Field(default_factory=InfluxSettings)


@dataclass(frozen=True)
class TriggerDecision:
    trigger: bool
    reason: str
    interval_start: str
    interval_end: str
    alerts: int = 0
    onset: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    model_version: str | None = None
    last_trigger: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def retrain_conf(self) -> dict[str, Any]:
        """The ``conf`` of the retrain DAG run: its window, and why it was asked for."""
        return {"window_start": self.window_start, "window_end": self.window_end, "reason": self.reason}


def monitor_interval(
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    run_after: datetime | None,
    hours: float = 1.0,
) -> tuple[datetime, datetime]:
    """A scheduled run's data interval; a run triggered without one looks back ``hours`` from its time."""
    if (
        data_interval_start is not None
        and data_interval_end is not None
        and data_interval_start < data_interval_end
    ):
        return _utc(data_interval_start), _utc(data_interval_end)
    end = _utc(data_interval_end or run_after or datetime.now(UTC))
    return end - timedelta(hours=hours), end


def decide_retrain(settings: DriftTriggerSettings, start: datetime, end: datetime) -> TriggerDecision:
    start, end = _utc(start), _utc(end)
    if start >= end:
        raise ValueError(f"empty interval: {start.isoformat()} is not before {end.isoformat()}")
    with InfluxClient(settings.influxdb) as client:
        alerts = _alerts(client, settings, start, end)
        if not alerts:
            return TriggerDecision(False, "no drift alert in the interval", _iso(start), _iso(end))
        first = alerts[0]
        first_at = _from_ms(first["time"])
        version = _text(first.get("model_version"))
        threshold = _number(first.get("threshold")) or settings.drift_threshold
        onset = _onset(client, settings, first_at, version, threshold)
        last = _last_trigger(client, settings, end)
    if last is not None:
        reason = (
            f"cool-down: a retrain was triggered at {_iso(last)}, less than "
            f"{settings.cooldown_hours:g} h from {_iso(end)}"
        )
        window: tuple[str | None, str | None] = (None, None)
    else:
        reason = f"{len(alerts)} drift alert(s) from {_iso(first_at)}; drift since {_iso(onset)}"
        window = (_iso(onset), _iso(end))
    return TriggerDecision(
        trigger=last is None,
        reason=reason,
        interval_start=_iso(start),
        interval_end=_iso(end),
        alerts=len(alerts),
        onset=_iso(onset),
        window_start=window[0],
        window_end=window[1],
        model_version=version,
        last_trigger=_iso(last) if last is not None else None,
    )


def check(
    data_interval_start: datetime | None, data_interval_end: datetime | None, run_after: datetime | None
) -> dict[str, Any] | bool:
    """The ``check_drift`` task: the decision with the retrain's conf, or False to skip downstream."""
    settings = DriftTriggerSettings()
    start, end = monitor_interval(data_interval_start, data_interval_end, run_after)
    decision = decide_retrain(settings, start, end)
    log.info("%s to %s: %s", decision.interval_start, decision.interval_end, decision.reason)
    if not decision.trigger:
        return False
    return {**decision.to_dict(), "retrain_conf": decision.retrain_conf()}


def record(decision: dict[str, Any], dag_id: str, run_id: str | None) -> None:
    """The ``record_trigger`` task."""
    record_trigger(DriftTriggerSettings(), decision, dag_id, run_id)


def record_trigger(
    settings: DriftTriggerSettings, decision: dict[str, Any], dag_id: str, run_id: str | None
) -> None:
    """Remember a retrain that was triggered, for the cool-down; idempotent for one interval."""
    if not decision.get("trigger"):
        return
    end = _parse(decision["interval_end"])
    fields: dict[str, Any] = {
        "alerts": int(decision.get("alerts") or 0),
        "onset": decision.get("onset") or "",
        "window_start": decision.get("window_start") or "",
        "window_end": decision.get("window_end") or "",
        "run_id": run_id or "",
        "reason": decision.get("reason") or "",
    }
    point = Point(RETRAIN_TRIGGERS.name, fields, _ns(end), {"dag_id": dag_id})
    with InfluxClient(settings.influxdb) as client:
        client.write([point])
    log.info("recorded the retrain triggered for %s (run %s)", decision["interval_end"], run_id)


# --- reading ---------------------------------------------------------------------------------------


def _alerts(
    client: InfluxClient, settings: DriftTriggerSettings, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    # SELECT * keeps the reader tolerant of fields the monitor adds or drops; only time is required.
    rows = client.query(
        f"SELECT * FROM {quote_identifier(ALERTS.name)} WHERE time >= {_ns(start)} AND time < {_ns(end)}"
    )
    return sorted((row for row in rows if row.get("time") is not None), key=lambda row: row["time"])


def _onset(
    client: InfluxClient,
    settings: DriftTriggerSettings,
    alert_at: datetime,
    version: str | None,
    threshold: float,
) -> datetime:
    """The start of the run of drifting windows that the first alert closed."""
    where = [
        f"time <= {_ns(alert_at)}",
        f"time > {_ns(alert_at - timedelta(hours=settings.lookback_hours))}",
        # Window-level points have no ``feature`` tag; per-feature points share the measurement.
        "feature = ''",
    ]
    if version:
        where.append(f"model_version = {quote_literal(version)}")
    rows = client.query(
        f"SELECT share_drifted_features, dataset_drift FROM {quote_identifier(DRIFT.name)} "
        f"WHERE {' AND '.join(where)} ORDER BY time DESC"
    )
    onset = alert_at
    for row in rows:
        if not _drifting(row, threshold):
            break
        onset = min(onset, _from_ms(row["time"]))
    return onset


def _drifting(row: dict[str, Any], threshold: float) -> bool:
    share = _number(row.get("share_drifted_features"))
    if share is not None:
        return share >= threshold
    return bool(_number(row.get("dataset_drift")))


def _last_trigger(client: InfluxClient, settings: DriftTriggerSettings, end: datetime) -> datetime | None:
    if settings.cooldown_hours <= 0:
        return None
    cooldown = timedelta(hours=settings.cooldown_hours)
    rows = client.query(
        f"SELECT * FROM {quote_identifier(RETRAIN_TRIGGERS.name)} "
        f"WHERE time > {_ns(end - cooldown)} AND time < {_ns(end + cooldown)}"
    )
    times = [_from_ms(row["time"]) for row in rows if row.get("time") is not None]
    return max(times) if times else None


# --- small conversions -----------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    """A plain ``datetime`` in UTC; Airflow hands out pendulum times, whose arithmetic can drop the zone."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return datetime.fromtimestamp(moment.timestamp(), tz=UTC)


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat()


def _parse(text: str) -> datetime:
    return _utc(datetime.fromisoformat(text))


def _ns(moment: datetime) -> int:
    return int(_utc(moment).timestamp() * 1_000_000) * 1000


def _from_ms(ms: Any) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
