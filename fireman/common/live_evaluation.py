"""The live comparison: the challenger, scored in shadow, against production on the same labelled events.

The scorer writes both versions' answers to ``predictions`` (tag ``role``: ``shadow`` for the challenger;
production's are ``production``, or untagged from before roles existed) and the sink writes the delayed
ground truth to ``labels``. One comparison reads, from InfluxDB:

1. the challenger's most recent shadow predictions: at most ``max_events``, none older than
   ``lookback_hours`` (``LiveEvidenceSettings``, ``FIREMAN_LIVE_*``);
2. the champion's production predictions over the same time range (an event's points share its time);
3. the labels from the start of that range on, with no end: a label's point time is the timestamp its
   sender gave, which may be later than its event's.

and joins them by ``event_id`` here. Only events scored by both versions and labelled count, so both
sets of metrics are computed on exactly the same events. Memory stays bounded by ``max_events``: the
production rows and labels are streamed, and only those of the challenger's events are kept.

Training's promotion gate (``fireman promote --live``, the retrain DAG's live mode) and the monitor's
``live_comparison`` points use this one function, so the dashboard shows what the gate decides on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fireman.common.confusion import Confusion
from fireman.common.influx import InfluxClient, InfluxError, quote_literal
from fireman.common.influx import quote_identifier as _q
from fireman.common.measurements import LABELS, PREDICTIONS, PRODUCTION_ONLY, ROLE_SHADOW
from fireman.common.settings import LiveEvidenceSettings

METRICS = ("accuracy", "f1")


@dataclass(frozen=True)
class LiveComparison:
    champion_version: str
    challenger_version: str
    events: int  # labelled events scored by both versions: what ``champion`` and ``challenger`` measure
    champion: dict[str, float]  # accuracy and F1; NaN accuracy when ``events`` is 0
    challenger: dict[str, float]
    shadow_predictions: int  # the challenger's shadow predictions read (at most max_events)
    since_ms: int | None  # the time range of those predictions
    until_ms: int | None

    def to_dict(self) -> dict[str, Any]:
        """The evidence as recorded on the versions and in DAG logs (times in ISO 8601)."""
        return {
            "events": self.events,
            "champion": {"version": self.champion_version, **_rounded(self.champion)},
            "challenger": {"version": self.challenger_version, **_rounded(self.challenger)},
            "shadow_predictions": self.shadow_predictions,
            "since": _iso(self.since_ms),
            "until": _iso(self.until_ms),
        }


def compare(
    client: InfluxClient, champion_version: str, challenger_version: str, window: LiveEvidenceSettings
) -> LiveComparison:
    """Compare the two versions on the labelled events both scored; see the module's docstring."""
    shadow: dict[str, int] = {}
    span: tuple[int, int] | None = None
    production: dict[str, int] = {}
    labels: dict[str, int] = {}
    try:
        shadow, span = _shadow_predictions(client, challenger_version, window)
        if span is not None:
            since_ms, until_ms = span
            in_range = f"time >= {since_ms}ms AND time < {until_ms + 1}ms"  # points carry sub-ms offsets
            statement = (
                f"SELECT {_q('event_id')}, {_q('prediction')} FROM {_q(PREDICTIONS.name)} "
                f"WHERE {PRODUCTION_ONLY} "
                f"AND {_q('model_version')} = {quote_literal(champion_version)} AND {in_range}"
            )
            production = _by_event(client, statement, "prediction", keep=shadow)
            # In time order: a label given again later overwrites the earlier one.
            statement = (
                f"SELECT {_q('event_id')}, {_q('label')} FROM {_q(LABELS.name)} "
                f"WHERE time >= {since_ms}ms ORDER BY time ASC"
            )
            labels = _by_event(client, statement, "label", keep=production)
    except InfluxError as exc:
        if "database not found" not in str(exc):  # nothing written yet: no evidence, not an error
            raise
    champion, challenger = Confusion(), Confusion()
    for event_id, label in labels.items():
        champion.add(production[event_id], label)
        challenger.add(shadow[event_id], label)
    return LiveComparison(
        champion_version=str(champion_version),
        challenger_version=str(challenger_version),
        events=champion.n,
        champion=_metrics(champion),
        challenger=_metrics(challenger),
        shadow_predictions=len(shadow),
        since_ms=span[0] if span else None,
        until_ms=span[1] if span else None,
    )


def _shadow_predictions(
    client: InfluxClient, version: str, window: LiveEvidenceSettings
) -> tuple[dict[str, int], tuple[int, int] | None]:
    """The challenger's newest shadow predictions by event id, and their time range in epoch ms."""
    statement = (
        f"SELECT {_q('event_id')}, {_q('prediction')} FROM {_q(PREDICTIONS.name)} "
        f"WHERE {_q('role')} = {quote_literal(ROLE_SHADOW)} "
        f"AND {_q('model_version')} = {quote_literal(version)} "
        f"AND time > now() - {max(1, int(window.lookback_hours * 3600))}s "
        f"ORDER BY time DESC LIMIT {int(window.max_events)}"
    )
    predictions: dict[str, int] = {}
    times: list[int] = []
    for row in _rows(client, statement, "prediction"):
        predictions[str(row["event_id"])] = int(row["prediction"])
        times.append(int(row["time"]))
    return predictions, (min(times), max(times)) if times else None


def _by_event(client: InfluxClient, statement: str, field: str, keep: dict[str, int]) -> dict[str, int]:
    found: dict[str, int] = {}
    for row in _rows(client, statement, field):
        event_id = str(row["event_id"])
        if event_id in keep:
            found[event_id] = int(row[field])
    return found


def _rows(client: InfluxClient, statement: str, field: str) -> Iterator[dict[str, Any]]:
    return (row for row in client.iter_query(statement) if row.get("event_id") and row.get(field) is not None)


def _metrics(confusion: Confusion) -> dict[str, float]:
    computed = confusion.metrics()
    return {name: computed[name] for name in METRICS}


def _rounded(metrics: dict[str, float]) -> dict[str, float | None]:
    return {name: round(value, 6) if math.isfinite(value) else None for name, value in metrics.items()}


def _iso(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms is not None else None
