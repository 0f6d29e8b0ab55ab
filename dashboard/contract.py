"""The InfluxDB measurements the dashboard (and the Grafana dashboards) read, as their writers define them.

Writers: the sink (``measurements``), the scorer (``predictions``, ``model_events``), the monitor
(``performance``, ``drift``) and the dashboard's own lag sampler (``consumer_lag``). Tests check
this table against the writers' code and every Grafana query against this table, so a renamed
field fails a test instead of leaving an empty chart.
"""

from __future__ import annotations

from dataclasses import dataclass

from fireman_common.schema import FEATURE_NAMES


@dataclass(frozen=True)
class Measurement:
    name: str
    tags: frozenset[str]
    fields: frozenset[str]


def _m(name: str, tags: set[str], fields: set[str]) -> Measurement:
    return Measurement(name, frozenset(tags), frozenset(fields))


MEASUREMENTS = _m("measurements", {"sensor_id"}, {"event_id", *FEATURE_NAMES})
PREDICTIONS = _m(
    "predictions",
    {"sensor_id"},
    {"event_id", "prediction", "probability", "latency_ms", "model_version"},
)
PERFORMANCE = _m(
    "performance",
    {"model_version"},
    {"accuracy", "f1", "precision", "recall", "n_labelled", "label_coverage"},
)
# One measurement, two kinds of points: per window (tag model_version) and per feature (tag feature).
DRIFT = _m(
    "drift",
    {"model_version", "feature"},
    {
        "share_drifted_features",
        "drifted_features",
        "dataset_drift",
        "window_size",
        "missing_share",
        "prediction_drift_score",
        "drift_score",
        "drifted",
    },
)
MODEL_EVENTS = _m(
    "model_events",
    {"model_name", "event"},
    {"from_version", "to_version", "run_id", "load_seconds", "reason"},
)
CONSUMER_LAG = _m("consumer_lag", {"group"}, {"lag", "partitions"})

CONTRACT: dict[str, Measurement] = {
    m.name: m for m in (MEASUREMENTS, PREDICTIONS, PERFORMANCE, DRIFT, MODEL_EVENTS, CONSUMER_LAG)
}
