"""Known data for every dashboard panel, written the way the platform's writers write it.

Ten minutes of history ending 20 s ago, so that every event falls in a complete rate bucket:
600 events (1/s), one prediction each (every third one spam), version 1 then a switch to version
2 halfway, performance and drift windows every 30 s, drift rising after the switch, and a refused
version 3 near the end. Version 1's predictions carry no role tag (written before roles existed),
version 2's are tagged production; after the switch a challenger, version 4, scores every event in
shadow (always spam, so a chart that counted it would show it) and the monitor compares the two
every 30 s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fireman.common.influx import InfluxClient, Point
from fireman.common.measurements import (
    DRIFT,
    LIVE_COMPARISON,
    MEASUREMENTS,
    MODEL_EVENTS,
    PERFORMANCE,
    PREDICTIONS,
    ROLE_PRODUCTION,
    ROLE_SHADOW,
)
from fireman.common.settings import InfluxSettings

NS = 1_000_000_000
EVENTS = 600
SPAM = EVENTS // 3
FEATURES = ("Cont_52", "Cont_53", "Cont_7", "Cont_16", "Cont_21")
DRIFTED = ("Cont_52", "Cont_53")
SHADOW_VERSION = "4"
# The last live comparison: production v2 against the shadow v4.
LIVE = {"champion_accuracy": 0.93, "champion_f1": 0.88, "challenger_accuracy": 0.95, "challenger_f1": 0.91}


@dataclass(frozen=True)
class Seeded:
    start_s: float
    switch_s: float
    end_s: float


def seed(settings: InfluxSettings, now_s: float | None = None) -> Seeded:
    now = time.time() if now_s is None else now_s
    end = now - 20
    start = end - EVENTS
    switch = start + EVENTS / 2
    points: list[Point] = []
    for i in range(EVENTS):
        t = int((start + i) * NS)
        sensor = f"sensor-{i % 3}"
        event_id = f"evt-{i}"
        points.append(
            Point(MEASUREMENTS.name, {"Cont_1": i / EVENTS, "event_id": event_id}, t, {"sensor_id": sensor})
        )
        before = start + i < switch
        version = "1" if before else "2"
        points.append(
            Point(
                PREDICTIONS.name,
                {
                    "event_id": event_id,
                    "prediction": 1 if i % 3 == 0 else 0,
                    "probability": 0.9 if i % 3 == 0 else 0.1,
                    "latency_ms": 40,
                    "model_version": version,
                },
                t,
                {"sensor_id": sensor} if before else {"sensor_id": sensor, "role": ROLE_PRODUCTION},
            )
        )
        if not before:
            shadow = {"event_id": event_id, "prediction": 1, "probability": 0.8, "latency_ms": 45}
            points.append(
                Point(
                    PREDICTIONS.name,
                    {**shadow, "model_version": SHADOW_VERSION},
                    t,
                    {"sensor_id": sensor, "role": ROLE_SHADOW},
                )
            )
    for k, at in enumerate(range(int(start) + 30, int(end), 30)):
        t = at * NS
        after = at >= switch
        version = "2" if after else "1"
        accuracy = 0.93 if after else 0.88 - 0.004 * k
        points.append(
            Point(
                PERFORMANCE.name,
                {
                    "accuracy": accuracy,
                    "f1": accuracy - 0.05,
                    "precision": accuracy - 0.02,
                    "recall": accuracy - 0.08,
                    "n_labelled": 30,
                    "label_coverage": 1.0,
                },
                t,
                {"model_version": version},
            )
        )
        if after:
            points.append(
                Point(
                    LIVE_COMPARISON.name,
                    {"events": 30 * k, **LIVE},
                    t,
                    {"model_name": "spam-classifier", "champion_version": "2", "challenger_version": "4"},
                )
            )
        drifted = DRIFTED if after else ()
        share = len(drifted) / len(FEATURES)
        points.append(
            Point(
                DRIFT.name,
                {
                    "share_drifted_features": share,
                    "drifted_features": len(drifted),
                    "dataset_drift": int(share >= 0.4),
                    "window_size": 300,
                    "missing_share": 0.2,
                    "prediction_drift_score": 0.05,
                },
                t,
                {"model_version": version},
            )
        )
        for feature in FEATURES:
            score = 0.001 if feature in drifted else 0.5
            points.append(
                Point(
                    DRIFT.name,
                    {"drift_score": score, "drifted": int(feature in drifted), "missing_share": 0.2},
                    t,
                    {"feature": feature},
                )
            )
    model = {"model_name": "spam-classifier"}
    points += [
        Point(
            MODEL_EVENTS.name,
            {"from_version": "", "to_version": "1", "run_id": "r1", "load_seconds": 1.5},
            int(start * NS),
            {**model, "event": "start"},
        ),
        Point(
            MODEL_EVENTS.name,
            {"from_version": "1", "to_version": "2", "run_id": "r2", "load_seconds": 0.8},
            int(switch * NS),
            {**model, "event": "switch"},
        ),
        Point(
            MODEL_EVENTS.name,
            {
                "from_version": "2",
                "to_version": "3",
                "reason": "signature mismatch: Cont_9",
                "load_seconds": 0.2,
            },
            int((end - 60) * NS),
            {**model, "event": "refused"},
        ),
    ]
    with InfluxClient(settings) as client:
        client.write(points)
    return Seeded(start_s=start, switch_s=switch, end_s=end)
