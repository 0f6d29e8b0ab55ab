"""Every InfluxDB measurement fireman writes, with its tags and fields: the one place that names them.

Writers: the sink (``measurements``, ``labels``), the scorer (``predictions``, ``model_events``), the
monitor (``performance``, ``drift``, ``alerts``, ``live_comparison``, ``monitor_stats``), the drift
DAG (``retrain_triggers``), the retrain DAG (``retrains``) and the dashboard's lag sampler
(``consumer_lag``). Readers (training, the drift DAG, the dashboard, Grafana) take the names from
here. Tests check this table against the writers' code and every Grafana query against this table,
so a renamed field fails a test instead of leaving an empty chart.
"""

from __future__ import annotations

from dataclasses import dataclass

from fireman.common.schema import FEATURE_NAMES


@dataclass(frozen=True)
class Measurement:
    name: str
    tags: frozenset[str]
    fields: frozenset[str]


def _m(name: str, tags: str, fields: str) -> Measurement:
    """A measurement from its tag and field names, each separated by spaces."""
    return Measurement(name, frozenset(tags.split()), frozenset(fields.split()))


MEASUREMENTS = Measurement("measurements", frozenset({"sensor_id"}), frozenset({"event_id", *FEATURE_NAMES}))
LABELS = _m("labels", "sensor_id", "event_id label")
# Tag ``role``: the production model's answer, or a challenger's scored in shadow on the same events
# (never published on Kafka). Points written before roles existed have no role: read them as production,
# that is, select production with ``"role" != 'shadow'``.
ROLE_PRODUCTION = "production"
ROLE_SHADOW = "shadow"
# The InfluxQL condition of a reader that wants production's predictions (old points included).
PRODUCTION_ONLY = f"\"role\" != '{ROLE_SHADOW}'"
PREDICTIONS = _m("predictions", "sensor_id role", "event_id prediction probability latency_ms model_version")
PERFORMANCE = _m(
    "performance",
    "model_version",
    "accuracy f1 precision recall n_labelled n_predictions label_coverage tp fp tn fn",
)
# One measurement, two kinds of points: per window (tag model_version) and per feature (tag feature).
# A window point covers ``events`` scored events in ``merged_windows`` windows (windows merge while
# they wait for the drift worker); ``window_size`` is the rows tested (a sample of at most
# FIREMAN_MONITOR_SAMPLE_ROWS). A window that could not be tested has ``tested=0``, its ``reason``
# and ``events``, and no drift fields.
DRIFT = _m(
    "drift",
    "model_version feature",
    "tested reason events merged_windows share_drifted_features drifted_features tested_features "
    "dataset_drift window_size missing_share prediction_drift_score drift_score drifted",
)
MODEL_EVENTS = _m("model_events", "model_name event", "from_version to_version run_id load_seconds reason")
# Tag ``kind``: ``drift`` (covariate drift: share_drifted_features ... window_size) or ``performance``
# (online accuracy or F1 below the hold-out: metric ... n_labelled); the others are common to both.
# ``onset_ns``: start of the first window of the run (fireman.monitoring.alerts).
ALERT_DRIFT = "drift"
ALERT_PERFORMANCE = "performance"
ALERTS = _m(
    "alerts",
    "kind model_name model_version",
    "consecutive_windows required_windows onset_ns message share_drifted_features threshold "
    "drifted_features features window_size metric value holdout margin n_labelled",
)
# One point per retrain monitor_drift triggered (tag kind: the alert's), at the checked interval's end.
RETRAIN_TRIGGERS = _m("retrain_triggers", "dag_id kind", "alerts onset window_start window_end run_id reason")
# One point per successful retrain run, at its training window's end, written by the retrain DAG's last
# task. Tag trigger: "alert" (then kind is the alert's) or the Airflow run type; the cool-down reads
# the alert-triggered ones.
RETRAINS = _m("retrains", "dag_id trigger kind", "run_id window_start window_end reason")
CONSUMER_LAG = _m("consumer_lag", "group", "lag partitions")
# The challenger (scored in shadow) against production on the same labelled events, written by the
# monitor every FIREMAN_MONITOR_LIVE_COMPARISON_INTERVAL_S while there is a challenger
# (fireman.common.live_evaluation). The metrics are absent while no event is labelled and scored by both.
LIVE_COMPARISON = _m(
    "live_comparison",
    "model_name champion_version challenger_version",
    "events champion_accuracy champion_f1 challenger_accuracy challenger_f1",
)
# The monitor's counters since it started, every FIREMAN_MONITOR_LOG_INTERVAL_S (time rounded to it):
# ``coverage`` is events_tested / (events_tested + events_untested), absent before any window is done;
# ``labels_*``: labels received, counted in a window, that came before their prediction, waiting for it
# now, and dropped (``unknown``: no prediction within the join timeout; ``expired``: its window was gone).
MONITOR_STATS = _m(
    "monitor_stats",
    "group",
    "events_scored events_tested events_untested events_waiting coverage windows_tested windows_untested "
    "windows_merged labels_received labels_applied labels_early labels_waiting labels_unknown "
    "labels_expired",
)

CONTRACT: dict[str, Measurement] = {
    m.name: m
    for m in (
        MEASUREMENTS,
        LABELS,
        PREDICTIONS,
        PERFORMANCE,
        DRIFT,
        ALERTS,
        MODEL_EVENTS,
        RETRAIN_TRIGGERS,
        RETRAINS,
        CONSUMER_LAG,
        LIVE_COMPARISON,
        MONITOR_STATS,
    )
}
