"""Settings of ``fireman dashboard`` (``FIREMAN_DASHBOARD_*``), built by the CLI and passed down."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fireman.common.settings import (
    LOOPBACK,
    MONITOR_GROUP,
    SCORER_GROUP,
    SINK_GROUP,
    InfluxSettings,
    KafkaSettings,
    Port,
    group_id_of,
)

MAX_WINDOW_S = 7 * 24 * 3600


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIREMAN_DASHBOARD_", extra="ignore", env_file=None)

    host: str = LOOPBACK
    port: Port = 8050
    refresh_s: float = Field(default=5.0, ge=1, le=300, description="How often the page polls the API.")
    window_s: int = Field(default=1800, ge=60, le=MAX_WINDOW_S, description="Time span the charts show.")
    max_points: int = Field(default=180, ge=10, le=2000, description="Most time buckets per chart.")
    lag_interval_s: float = Field(default=5.0, ge=1, description="How often consumer lag is sampled.")
    record_lag: bool = Field(
        default=True, description="Sample consumer lag from Kafka into the consumer_lag measurement."
    )
    scorer_group_id: str = group_id_of("SCORER", SCORER_GROUP)
    sink_group_id: str = group_id_of("SINK", SINK_GROUP)
    monitor_group_id: str = group_id_of("MONITOR", MONITOR_GROUP)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    influxdb: InfluxSettings = Field(default_factory=InfluxSettings)

    def consumer_groups(self) -> dict[str, list[str]]:
        """Each watched consumer group and the topics it reads."""
        kafka = self.kafka
        return {
            self.scorer_group_id: [kafka.topic_measurements],
            self.sink_group_id: [kafka.topic_measurements, kafka.topic_labels],
            self.monitor_group_id: [kafka.topic_measurements, kafka.topic_predictions, kafka.topic_labels],
        }
