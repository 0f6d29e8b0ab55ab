"""Settings of ``fireman scorer`` (``FIREMAN_SCORER_*``) and ``fireman serve`` (``FIREMAN_SERVE_*``).

Each is built once by its CLI command and passed down; nothing here does I/O.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fireman.common.settings import (
    LOOPBACK,
    SCORER_GROUP,
    InfluxSettings,
    KafkaSettings,
    MlflowSettings,
    Port,
)


class ScorerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIREMAN_SCORER_", extra="ignore", env_file=None)

    group_id: str = Field(
        default=SCORER_GROUP,
        description="The scorer's consumer group; the monitor and the dashboard read this variable too.",
    )
    max_batch: int = Field(
        default=5000, ge=1, le=100_000, description="Most events scored in one model call."
    )
    # 25 ms: at 2,000 events/s a batch of ~50 waits at most 25 ms, so p99 stays well under 100 ms;
    # under a backlog batches fill at once and the wait never applies.
    max_wait_ms: int = Field(default=25, ge=1, description="Longest wait to fill a batch.")
    reload_interval_s: float = Field(
        default=10.0, gt=0, description="How often the registry alias is polled."
    )
    influx_buffer_points: int = Field(
        default=200_000, ge=1, description="Points awaiting InfluxDB before consumption pauses."
    )
    influx_chunk_points: int = Field(default=10_000, ge=1, description="Most points in one InfluxDB write.")
    drain_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="On shutdown or rebalance, how long to wait for pending InfluxDB writes.",
    )
    delivery_timeout_ms: int = Field(
        default=30_000,
        ge=1000,
        description="How long Kafka may take to acknowledge a prediction before its batch is scored again.",
    )
    log_interval_s: float = Field(default=10.0, gt=0)
    metrics_host: str = Field(default=LOOPBACK, description="Where /metrics listens (0.0.0.0 in containers).")
    metrics_port: int = Field(default=9102, ge=0, le=65535, description="Prometheus /metrics port; 0 = off.")
    onnx: bool = Field(
        default=True,
        description="Score with a version's ONNX export (onnxruntime) where it has one that matches "
        "sklearn; else, or when false, with sklearn.",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    influxdb: InfluxSettings = Field(default_factory=InfluxSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)


class ServeSettings(BaseSettings):
    """Online inference over the Open Inference Protocol V2 (``fireman serve``)."""

    model_config = SettingsConfigDict(env_prefix="FIREMAN_SERVE_", extra="ignore", env_file=None)

    host: str = LOOPBACK
    port: Port = 8010
    reload_interval_s: float = Field(
        default=10.0, gt=0, description="How often fireman serve polls the registry's production alias."
    )
    max_rows: int = Field(
        default=10_000, ge=1, description="Most rows in one inference request (more answers 413)."
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="Largest inference request body (more answers 413)."
    )
    access_log: bool = False
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
