"""Settings of ``fireman monitor`` (``FIREMAN_MONITOR_*``), built by the CLI and passed down."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fireman.common.settings import (
    LOOPBACK,
    MONITOR_GROUP,
    SCORER_GROUP,
    AirflowSettings,
    InfluxSettings,
    KafkaSettings,
    LiveEvidenceSettings,
    MlflowSettings,
    StateSettings,
    group_id_of,
)


class MonitorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIREMAN_MONITOR_", extra="ignore", env_file=None)

    group_id: str = MONITOR_GROUP
    # Windows of scored events, per model version: closed by count or by time, whichever comes first.
    window_size: int = Field(default=1000, ge=2, description="Events in a drift window.")
    window_seconds: float = Field(
        default=300.0, gt=0, description="Longest span of a window, in event time and in wall time."
    )
    min_window_size: int = Field(
        default=100,
        ge=2,
        description="A window closed by time with fewer events is not tested (written with tested=0).",
    )
    # Evidently's cost hardly depends on the rows tested (~1.5 s of CPU for 100 to 4,000 rows against
    # 2,000 reference rows, docs/decisions.md): a full default window is tested whole, and a window
    # merged from many is tested on a uniform sample of this size.
    sample_rows: int = Field(
        default=1000,
        ge=2,
        description="Most feature rows of a window tested for drift (a uniform sample of its events).",
    )
    min_feature_values: int = Field(
        default=10, ge=2, description="Non-null values a feature needs (window and reference) to be tested."
    )
    drift_threshold: float = Field(
        default=0.5, gt=0, le=1, description="Share of drifted features that makes a window's dataset drift."
    )
    alert_windows: int = Field(
        default=2, ge=1, description="Consecutive drifting windows that raise an alert."
    )
    # Performance alerts (fireman.monitoring.alerts): online accuracy and F1 against the version's hold-out.
    # 100 labels bound the noise of a window's accuracy to about 0.02 (at 0.95), a fifth of the margin,
    # and the demo's window (labels 2-5 s late) has them within seconds of opening.
    performance_min_labelled: int = Field(
        default=100, ge=1, description="Labels a window needs before its accuracy and F1 are judged."
    )
    performance_margin: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Drop below the hold-out accuracy or F1 (absolute) that makes a window underperform.",
    )
    performance_alert_windows: int = Field(
        default=2, ge=1, description="Consecutive underperforming windows that raise a performance alert."
    )
    reference_rows: int = Field(
        default=2000,
        ge=50,
        description="Most reference rows compared (a seeded sample; bounds Evidently's cost).",
    )
    # 0.1 keeps the scorer at >= 90% of its throughput on a 2-core machine (measured 95.8% against
    # 88.8% at 0.25, docs/performance.md). Windows closing faster than that wait and merge: every
    # event is still tested, in fewer, larger windows.
    drift_cpu_budget: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Most of one core the drift worker (Evidently) may use; windows closing faster wait "
        "and merge.",
    )
    html_report_every: int = Field(
        default=0, ge=0, description="Save an Evidently HTML report every N windows (0: never)."
    )
    # Joining the three topics.
    join_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long features, predictions and early labels wait for their match.",
    )
    max_unjoined: int = Field(
        default=200_000, ge=1000, description="Most events (and early labels) waiting to be joined."
    )
    label_wait_s: float = Field(
        default=24 * 3600.0, gt=0, description="How long a window's predictions wait for their labels."
    )
    max_awaiting_labels: int = Field(
        default=2_000_000, ge=1000, description="Most predictions kept for their late labels."
    )
    # Consumption and output.
    max_batch: int = Field(default=5000, ge=1)
    poll_timeout_ms: int = Field(default=500, ge=1)
    # More waiting windows keep a change late in a backlog in a window of its own; fewer test the
    # newest events sooner under a sustained overload (the oldest waiting window is tested first).
    drift_queue: int = Field(
        default=4,
        ge=1,
        description="Closed windows per version waiting for Evidently; beyond, adjacent ones merge.",
    )
    performance_flush_s: float = Field(
        default=2.0, gt=0, description="How often updated accuracy is written."
    )
    # The challenger against production (fireman.common.live_evaluation): a periodic query, off the hot loop.
    live_comparison_interval_s: float = Field(
        default=60.0, gt=0, description="How often the challenger's live accuracy and F1 are compared."
    )
    # Through a 600k-event burst on 2 cores the scorer kept 92.5% of its throughput at 0.1, 85% at 0.15
    # and 83% at 0.25 (4 runs each, side by side; docs/decisions.md). Sustained, the monitor then takes
    # in a tenth of its unpaced rate, ~4,500 events/s here, 20x the soak's rate. Give it more where the
    # monitor has a core of its own, or where sustained load is higher than bursts matter.
    intake_cpu_budget: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Most of one core the reading thread may use on average; 1 reads unpaced.",
    )
    # Giving way to the scorer (fireman.monitoring.priority): through a 600k-event burst on 2 cores, see
    # docs/decisions.md for the scorer's throughput with and without it.
    scorer_group_id: str = group_id_of(
        "SCORER",
        SCORER_GROUP,
        "The scorer's consumer group (its own variable), whose lag the monitor gives way to.",
    )
    # Two full scorer batches: a scorer keeping up is never that far behind between its commits.
    yield_lag: int = Field(
        default=10_000,
        ge=0,
        description="Scorer lag (events) beyond which the monitor gives way; 0: never gives way.",
    )
    yield_cpu_budget: float = Field(
        default=0.02,
        gt=0,
        le=1,
        description="Most of one core each monitor thread uses while the scorer is behind.",
    )
    nice: int = Field(default=10, ge=0, le=19, description="Niceness added by `fireman monitor` itself.")
    log_interval_s: float = Field(default=30.0, gt=0)
    metrics_host: str = Field(default=LOOPBACK, description="Where /metrics listens (0.0.0.0 in containers).")
    metrics_port: int = Field(default=9103, ge=0, le=65535, description="Prometheus /metrics port; 0 = off.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    influxdb: InfluxSettings = Field(default_factory=InfluxSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    live: LiveEvidenceSettings = Field(default_factory=LiveEvidenceSettings)
    airflow: AirflowSettings = Field(default_factory=AirflowSettings)

    @model_validator(mode="after")
    def _minimum_fits(self) -> MonitorSettings:
        if self.min_window_size > self.window_size:
            raise ValueError(
                f"min_window_size ({self.min_window_size}) is larger than window_size ({self.window_size})"
            )
        if self.performance_min_labelled > self.window_size:
            raise ValueError(
                f"performance_min_labelled ({self.performance_min_labelled}) is larger than window_size "
                f"({self.window_size}): no window could be judged"
            )
        if self.min_window_size > self.sample_rows:
            raise ValueError(
                f"min_window_size ({self.min_window_size}) is larger than sample_rows ({self.sample_rows}): "
                "no window could be tested"
            )
        return self
