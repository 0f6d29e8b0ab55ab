"""The compact live status line of ``fireman up``: read from Kafka, MLflow and InfluxDB, never from logs."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaException

from fireman.common import production_history
from fireman.common.influx import InfluxClient, InfluxError
from fireman.common.kafka_io import ConsumerLag, admin_client, consumer_lag
from fireman.common.model_registry import RegistryClient, RegistryError
from fireman.common.settings import InfluxSettings, KafkaSettings, MlflowSettings


@dataclass
class Snapshot:
    events_per_s: float | None
    scorer_lag: int | None
    production_version: str | None
    drift_share: float | None
    accuracy: float | None


class LiveStatus:
    def __init__(
        self, kafka: KafkaSettings, influx: InfluxSettings, mlflow: MlflowSettings, scorer_group: str
    ) -> None:
        self.kafka = kafka
        self.influx = InfluxClient(influx)
        self.mlflow = mlflow
        self.registry = RegistryClient(mlflow)  # one connection for every sample, not one each
        self.scorer_group = scorer_group
        self._admin = admin_client(kafka, timeout_ms=3000)
        self._last: tuple[float, int] | None = None

    def close(self) -> None:
        self.influx.close()
        self.registry.close()

    def sample(self) -> Snapshot:
        lag = self._lag()
        # Only measurements is asked about: its end offsets sum to every event ever written.
        total = sum(lag.ends.values()) if lag is not None and lag.ends else None
        rate = None
        now = time.monotonic()
        if total is not None:
            if self._last is not None and now > self._last[0]:
                rate = (total - self._last[1]) / (now - self._last[0])
            self._last = (now, total)
        return Snapshot(
            events_per_s=rate,
            scorer_lag=lag.behind[self.scorer_group] if lag is not None and lag.ends else None,
            production_version=self._production_version(),
            drift_share=self._last_value('SELECT last("share_drifted_features") FROM "drift"'),
            accuracy=self._last_value('SELECT last("accuracy") FROM "performance"'),
        )

    def _lag(self) -> ConsumerLag | None:
        """The scorer group's lag, with the end offsets of ``measurements`` (None while Kafka is away)."""
        try:
            return consumer_lag(self._admin, {self.scorer_group: [self.kafka.topic_measurements]})
        except KafkaException:
            return None
        finally:
            self._admin.poll(0)  # hands librdkafka's queued log lines to logging

    def _production_version(self) -> str | None:
        try:
            return production_history.production_version(self.registry, self.mlflow)
        except RegistryError:
            return None

    def _last_value(self, query: str) -> float | None:
        try:
            rows = self.influx.query(query)
        except InfluxError:
            return None
        return float(rows[0]["last"]) if rows and rows[0].get("last") is not None else None


def render(snapshot: Snapshot) -> str:
    def fmt(value: float | int | str | None, pattern: str = "{}") -> str:
        return "-" if value is None else pattern.format(value)

    return (
        f"events/s {fmt(snapshot.events_per_s, '{:.1f}')} | scorer lag {fmt(snapshot.scorer_lag)} | "
        f"production v{fmt(snapshot.production_version)} | "
        f"drift share {fmt(snapshot.drift_share, '{:.2f}')} | "
        f"online accuracy {fmt(snapshot.accuracy, '{:.3f}')}"
    )
