"""Settings of the ingest services: the HTTP collector, the InfluxDB sink and the sensor generator.

Each class is built once in its ``fireman`` command and passed down; nothing here does I/O.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fireman.common.settings import LOOPBACK, SINK_GROUP, DatasetSettings, InfluxSettings, KafkaSettings, Port


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, extra="ignore", env_file=None)


class CollectorSettings(BaseSettings):
    model_config = _config("FIREMAN_COLLECTOR_")

    host: str = LOOPBACK
    port: Port = 8000
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes, each with its own producer.")
    token: SecretStr | None = Field(
        default=None, description="When set, writes need 'Authorization: Bearer'."
    )
    max_batch: int = Field(default=10_000, ge=1, description="Most events or labels in one POST.")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    legacy_sensor_id: str = Field(default="legacy", description="sensor_id of events on POST /FIREMAN/SPAM.")
    ack_timeout_s: float = Field(default=15.0, gt=0, description="How long a POST waits for Kafka acks.")
    readiness_interval_s: float = Field(
        default=1.0, gt=0, description="How often Kafka reachability is checked."
    )
    linger_ms: int = Field(default=2, ge=0, description="Producer linger: batches concurrent requests.")
    access_log: bool = False
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)


class SinkSettings(BaseSettings):
    model_config = _config("FIREMAN_SINK_")

    group_id: str = SINK_GROUP
    batch_size: int = Field(
        default=5000, ge=1, description="Most Kafka records written per InfluxDB request."
    )
    poll_timeout_ms: int = Field(default=500, ge=1)
    shutdown_timeout_s: float = Field(default=30.0, ge=0, description="How long SIGTERM waits to drain.")
    log_interval_s: float = Field(default=10.0, gt=0, description="Seconds between two progress lines.")
    metrics_host: str = Field(
        default=LOOPBACK, description="Where /metrics listens (0.0.0.0 in a container)."
    )
    metrics_port: int = Field(default=9101, ge=0, le=65535, description="Prometheus /metrics port; 0 = off.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    influxdb: InfluxSettings = Field(default_factory=InfluxSettings)


DatasetName = Literal["spambase", "synthetic"]
DriftKind = Literal["shift", "scale", "swap", "labels"]

# High-importance Spambase features (char_freq_!, char_freq_$, capital run lengths, "remove", "free",
# "your", "000", "money"...): a shift there moves both the inputs and the model's output.
DEFAULT_DRIFT_FEATURES: tuple[str, ...] = (
    "Cont_52",
    "Cont_53",
    "Cont_55",
    "Cont_56",
    "Cont_57",
    "Cont_7",
    "Cont_16",
    "Cont_21",
    "Cont_23",
    "Cont_25",
)


class GeneratorSettings(BaseSettings):
    model_config = _config("FIREMAN_GENERATOR_")

    collector_url: str = f"http://{LOOPBACK}:8000"
    token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("FIREMAN_GENERATOR_TOKEN", "FIREMAN_COLLECTOR_TOKEN")
    )
    rate: float = Field(default=10.0, ge=0, description="Events per second; 0 sends as fast as possible.")
    batch: int = Field(default=1, ge=1, description="Events per POST.")
    sensors: int = Field(default=5, ge=1)
    limit: int | None = Field(default=None, ge=1, description="Stop after this many events.")
    loop: bool = Field(default=False, description="Start over when the dataset is exhausted.")
    missing_rate: float = Field(default=0.2, ge=0, lt=1)
    seed: int = 0
    drift_after: int | None = Field(default=None, ge=0)
    drift_kind: DriftKind = "shift"
    drift_features: tuple[str, ...] = DEFAULT_DRIFT_FEATURES
    drift_magnitude: float = Field(default=2.0, gt=0)
    label_delay_s: float = Field(default=5.0, ge=0)
    label_fraction: float = Field(default=1.0, ge=0, le=1)
    dataset: DatasetName = "spambase"
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=5, ge=0, description="Retries of a POST that got 503 or no answer.")
    data: DatasetSettings = Field(default_factory=DatasetSettings)

    @field_validator("collector_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # Checked here so a mistyped URL stops the run at its settings, before any event is sent.
        if not re.match(r"https?://[^/?#\s]+", value):
            raise ValueError("must be an http:// or https:// URL, like http://127.0.0.1:8000")
        return value
