"""Should an alert trigger a retrain? The logic of the ``monitor_drift`` DAG, without Airflow.

The monitor writes a point to ``alerts`` when a streak of bad windows holds: kind ``drift`` (at least K
windows whose ``share_drifted_features`` is at or above its threshold) or ``performance`` (accuracy
drops, from the labels). For one interval this module:

1. reads the alerts of any kind in ``[start, end)``; none means no retrain. The first one names the
   retrain's kind (run id ``<kind>__<interval end>``, conf ``trigger_kind``);
2. finds the onset: the alert's ``onset_ns`` field (the start of the streak's first window) when it has
   one; for older drift alerts, it walks back over the window-level ``drift`` points of the same model
   version for as long as they drift, and takes the earliest one's time;
3. applies the cool-down: a *successful* alert-triggered retrain (``retrains``, written by the retrain
   DAG's last task) whose window ended less than ``cooldown_hours`` away from ``end`` (either side, so
   re-running an old interval is also covered) means no retrain. A triggered retrain that failed
   leaves no such point, so the next check triggers again; one still queued or running (asked of
   Airflow by the caller, for the run ids in ``retrain_triggers``) is waited for;
4. otherwise asks for a retrain over ``[onset, end)``.

The state lives in InfluxDB, next to the alerts it is about: ``retrain_triggers`` (one point per
triggered retrain, at the interval end, written by ``record_trigger`` once the run was created) and
``retrains`` (one point per successful retrain, at the end of its window). Both survive an Airflow
reset, are visible to dashboards, and writing one twice overwrites the same point.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fireman.common.influx import InfluxClient, Point, quote_identifier, quote_literal
from fireman.common.measurements import ALERTS, DRIFT, RETRAIN_TRIGGERS, RETRAINS
from fireman.common.settings import InfluxSettings

log = logging.getLogger(__name__)


class DriftTriggerSettings(BaseSettings):
    """Settings of the ``monitor_drift`` DAG (``FIREMAN_DRIFT_TRIGGER_*``)."""

    model_config = SettingsConfigDict(env_prefix="FIREMAN_DRIFT_TRIGGER_", extra="ignore", env_file=None)

    cooldown_hours: float = Field(
        default=6.0,
        ge=0,
        description="No alert-triggered retrain within this many hours of a successful one.",
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


# Alerts written before kinds existed are drift alerts.
DEFAULT_KIND = "drift"
# The ``trigger`` tag of a ``retrains`` point of a run that monitor_drift started; other runs carry
# their Airflow run type (scheduled, manual...).
ALERT_TRIGGER = "alert"
# How the caller says which retrain runs are still under way: the run ids -> how many are queued or
# running (in the DAG, the task instance's get_dr_count; Airflow's tasks cannot read its database).
PendingRuns = Callable[[list[str]], int]


@dataclass(frozen=True)
class TriggerDecision:
    trigger: bool
    reason: str
    interval_start: str
    interval_end: str
    alerts: int = 0
    kind: str | None = None
    onset: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    model_version: str | None = None
    last_retrain: str | None = None
    pending_run: str | None = None

    @property
    def retrain_run_id(self) -> str:
        """One retrain per interval and kind: a re-run of this interval finds the run and skips."""
        return f"{self.kind or DEFAULT_KIND}__{self.interval_end}"

    def retrain_conf(self) -> dict[str, Any]:
        """The ``conf`` of the retrain DAG run: its window, and which alert asked for it and why."""
        return {
            "window_start": self.window_start,
            "window_end": self.window_end,
            "trigger_kind": self.kind,
            "reason": self.reason,
        }


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
        return utc(data_interval_start), utc(data_interval_end)
    end = utc(data_interval_end or run_after or datetime.now(UTC))
    return end - timedelta(hours=hours), end


def decide_retrain(
    settings: DriftTriggerSettings, start: datetime, end: datetime, pending: PendingRuns | None = None
) -> TriggerDecision:
    start, end = utc(start), utc(end)
    if start >= end:
        raise ValueError(f"empty interval: {start.isoformat()} is not before {end.isoformat()}")
    with InfluxClient(settings.influxdb) as client:
        alerts = _alerts(client, start, end)
        if not alerts:
            return TriggerDecision(False, "no alert in the interval", _iso(start), _iso(end))
        first = alerts[0]
        first_at = _from_ms(first["time"])
        kind = _text(first.get("kind")) or DEFAULT_KIND
        version = _text(first.get("model_version"))
        onset = _onset(client, settings, first, first_at, version)
        last = _last_success(client, settings, end)
        running = _pending_run(client, settings, end, pending) if last is None else None
    if last is not None:
        reason = (
            f"cool-down: a retrain succeeded with data until {_iso(last)}, less than "
            f"{settings.cooldown_hours:g} h from {_iso(end)}"
        )
    elif running is not None:
        reason = f"retrain {running} is still queued or running"
    else:
        reason = f"{_count(alerts)} from {_iso(first_at)}; {kind} since {_iso(onset)}"
    trigger = last is None and running is None
    return TriggerDecision(
        trigger=trigger,
        reason=reason,
        interval_start=_iso(start),
        interval_end=_iso(end),
        alerts=len(alerts),
        kind=kind,
        onset=_iso(onset),
        window_start=_iso(onset) if trigger else None,
        window_end=_iso(end) if trigger else None,
        model_version=version,
        last_retrain=_iso(last) if last is not None else None,
        pending_run=running,
    )


def check(
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    run_after: datetime | None,
    pending: PendingRuns | None = None,
) -> dict[str, Any] | bool:
    """The ``check_drift`` task (alerts of any kind): the decision with the retrain's run id and conf,
    or False to skip downstream."""
    settings = DriftTriggerSettings()
    start, end = monitor_interval(data_interval_start, data_interval_end, run_after)
    decision = decide_retrain(settings, start, end, pending)
    log.info("%s to %s: %s", decision.interval_start, decision.interval_end, decision.reason)
    if not decision.trigger:
        return False
    return {
        **asdict(decision),
        "retrain_run_id": decision.retrain_run_id,
        "retrain_conf": decision.retrain_conf(),
    }


def record(decision: dict[str, Any], dag_id: str) -> None:
    """The ``record_trigger`` task: remember a retrain that was triggered (the run ids the next checks
    ask Airflow about); idempotent for one interval."""
    if not decision.get("trigger"):
        return
    end = _parse(decision["interval_end"])
    run_id = decision.get("retrain_run_id") or ""
    fields: dict[str, Any] = {
        "alerts": int(decision.get("alerts") or 0),
        "onset": decision.get("onset") or "",
        "window_start": decision.get("window_start") or "",
        "window_end": decision.get("window_end") or "",
        "run_id": run_id,
        "reason": decision.get("reason") or "",
    }
    tags = {"dag_id": dag_id, "kind": decision.get("kind") or DEFAULT_KIND}
    point = Point(RETRAIN_TRIGGERS.name, fields, _ns(end), tags)
    with InfluxClient(DriftTriggerSettings().influxdb) as client:
        client.write([point])
    log.info("recorded the retrain triggered for %s (run %s)", decision["interval_end"], run_id)


def record_success(
    dag_id: str, run_id: str, run_type: str, params: Mapping[str, Any], extracted: Mapping[str, Any]
) -> None:
    """The retrain DAG's last task (it runs only when every other one succeeded): a ``retrains`` point
    at the end of the training window. Alert-triggered ones start the cool-down."""
    kind = _text(params.get("trigger_kind"))
    tags = {"dag_id": dag_id, "trigger": ALERT_TRIGGER if kind else str(getattr(run_type, "value", run_type))}
    if kind:
        tags["kind"] = kind
    fields: dict[str, Any] = {
        "run_id": run_id,
        "window_start": str(extracted["since"]),
        "window_end": str(extracted["until"]),
        "reason": str(params.get("reason") or ""),
    }
    point = Point(RETRAINS.name, fields, _ns(_parse(str(extracted["until"]))), tags)
    with InfluxClient(DriftTriggerSettings().influxdb) as client:
        client.write([point])
    log.info("recorded the successful retrain %s (%s) with data until %s", run_id, tags, extracted["until"])


# --- reading ---------------------------------------------------------------------------------------


def _alerts(client: InfluxClient, start: datetime, end: datetime) -> list[dict[str, Any]]:
    # SELECT * keeps the reader tolerant of fields the monitor adds or drops; only time is required.
    rows = client.query(
        f"SELECT * FROM {quote_identifier(ALERTS.name)} WHERE time >= {_ns(start)} AND time < {_ns(end)}"
    )
    return sorted((row for row in rows if row.get("time") is not None), key=lambda row: row["time"])


def _count(alerts: list[dict[str, Any]]) -> str:
    kinds = Counter(_text(row.get("kind")) or DEFAULT_KIND for row in alerts)
    return ", ".join(f"{n} {kind} alert(s)" for kind, n in kinds.items())


def _onset(
    client: InfluxClient,
    settings: DriftTriggerSettings,
    alert: dict[str, Any],
    alert_at: datetime,
    version: str | None,
) -> datetime:
    """The start of the streak of bad windows that the first alert closed."""
    onset_ns = alert.get("onset_ns")
    if isinstance(onset_ns, int | float) and not isinstance(onset_ns, bool) and onset_ns > 0:
        return min(alert_at, datetime.fromtimestamp(int(onset_ns) / 1e9, tz=UTC))
    if (_text(alert.get("kind")) or DEFAULT_KIND) != DEFAULT_KIND:
        return alert_at  # no window points to walk back over
    threshold = _number(alert.get("threshold")) or settings.drift_threshold
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


def _near(measurement: str, settings: DriftTriggerSettings, end: datetime, where: str = "") -> str:
    cooldown = timedelta(hours=settings.cooldown_hours)
    extra = f" AND {where}" if where else ""
    return (
        f"SELECT * FROM {quote_identifier(measurement)} "
        f"WHERE time > {_ns(end - cooldown)} AND time < {_ns(end + cooldown)}{extra}"
    )


def _last_success(client: InfluxClient, settings: DriftTriggerSettings, end: datetime) -> datetime | None:
    """The end of the latest successful alert-triggered retrain's window within the cool-down."""
    if settings.cooldown_hours <= 0:
        return None
    rows = client.query(_near(RETRAINS.name, settings, end, f'"trigger" = {quote_literal(ALERT_TRIGGER)}'))
    times = [_from_ms(row["time"]) for row in rows if row.get("time") is not None]
    return max(times) if times else None


def _pending_run(
    client: InfluxClient, settings: DriftTriggerSettings, end: datetime, pending: PendingRuns | None
) -> str | None:
    """A retrain triggered within the cool-down that Airflow still has queued or running."""
    if pending is None or settings.cooldown_hours <= 0:
        return None
    rows = client.query(_near(RETRAIN_TRIGGERS.name, settings, end))
    run_ids = sorted({str(row["run_id"]) for row in rows if row.get("run_id")})
    # One question per run: the answer is a count, and an empty list would count every run.
    return next((run_id for run_id in run_ids if pending([run_id]) > 0), None)


# --- small conversions -----------------------------------------------------------------------------


def utc(moment: datetime) -> datetime:
    """A plain ``datetime`` in UTC; Airflow hands out pendulum times, whose arithmetic can drop the zone."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return datetime.fromtimestamp(moment.timestamp(), tz=UTC)


def _iso(moment: datetime) -> str:
    return utc(moment).isoformat()


def _parse(text: str) -> datetime:
    return utc(datetime.fromisoformat(text))


def _ns(moment: datetime) -> int:
    return int(utc(moment).timestamp() * 1_000_000) * 1000


def _from_ms(ms: Any) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None  # bool is an int: True is 1.0


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
