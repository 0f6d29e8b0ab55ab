"""Live evidence for the promotion gate: production and shadow predictions and their labels in InfluxDB,
written the way the scorer (``predictions``, tag ``role``) and the sink (``labels``) write them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fireman.common.influx import InfluxClient, Point
from fireman.common.measurements import LABELS, PREDICTIONS, ROLE_PRODUCTION, ROLE_SHADOW
from fireman.common.pointtime import point_time_ns
from fireman.common.settings import InfluxSettings


@dataclass(frozen=True)
class Event:
    """One event: its label and what each version answered (None: no label, or not scored)."""

    event_id: str
    label: int | None
    production: int | None
    shadow: int | None
    production_version: str | None = None  # default: the champion
    shadow_version: str | None = None  # default: the challenger
    untagged: bool = False  # production's point carries no role tag (written before roles existed)
    label_delay_ms: int = 0  # the label's own timestamp comes this much after the event's


def scored(count: int, champion_right: int, challenger_right: int, prefix: str = "evt") -> list[Event]:
    """``count`` labelled events scored by both versions, half spam; the champion answers the first
    ``champion_right`` correctly and the challenger the first ``challenger_right``, the rest wrongly."""
    events = []
    for i in range(count):
        label = i % 2
        events.append(
            Event(
                f"{prefix}-{i}",
                label,
                production=label if i < champion_right else 1 - label,
                shadow=label if i < challenger_right else 1 - label,
            )
        )
    return events


def write(
    settings: InfluxSettings,
    events: list[Event],
    champion: str,
    challenger: str,
    start_ms: int | None = None,
    step_ms: int = 1000,
) -> None:
    """Event ``i`` at ``start_ms + i * step_ms`` (default: ending a minute ago)."""
    start = start_ms if start_ms is not None else int(time.time() * 1000) - 60_000 - len(events) * step_ms
    points = []
    for i, event in enumerate(events):
        ms = start + i * step_ms
        at = point_time_ns(ms, event.event_id)
        sensor = f"sensor-{i % 3}"
        if event.production is not None:
            role = None if event.untagged else ROLE_PRODUCTION
            version = event.production_version or champion
            points.append(_prediction(event, sensor, at, event.production, version, role))
        if event.shadow is not None:
            version = event.shadow_version or challenger
            points.append(_prediction(event, sensor, at, event.shadow, version, ROLE_SHADOW))
        if event.label is not None:
            label_at = point_time_ns(ms + event.label_delay_ms, event.event_id)
            fields = {"event_id": event.event_id, "label": event.label}
            points.append(Point(LABELS.name, fields, label_at, {"sensor_id": sensor}))
    with InfluxClient(settings) as client:
        client.write(points)


def _prediction(event: Event, sensor: str, at: int, value: int, version: str, role: str | None) -> Point:
    fields = {"event_id": event.event_id, "prediction": value, "probability": 0.5 + 0.4 * value}
    tags = {"sensor_id": sensor, **({"role": role} if role else {})}
    return Point(PREDICTIONS.name, {**fields, "latency_ms": 30, "model_version": version}, at, tags)
