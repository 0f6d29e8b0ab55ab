"""The compact live status line of ``fireman up``: read from Kafka, MLflow and InfluxDB, never from logs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from fireman_common import production_history
from fireman_common.influx import InfluxClient, InfluxError
from fireman_common.kafka_io import admin_client
from fireman_common.model_registry import RegistryClient, RegistryError
from fireman_common.settings import InfluxSettings, KafkaSettings, MlflowSettings


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
        self.scorer_group = scorer_group
        self._consumer: KafkaConsumer | None = None
        self._last: tuple[float, int] | None = None

    def close(self) -> None:
        self.influx.close()
        if self._consumer is not None:
            self._consumer.close()

    def sample(self) -> Snapshot:
        end_offsets = self._end_offsets()
        total = sum(end_offsets.values()) if end_offsets else None
        rate = None
        now = time.monotonic()
        if total is not None:
            if self._last is not None and now > self._last[0]:
                rate = (total - self._last[1]) / (now - self._last[0])
            self._last = (now, total)
        return Snapshot(
            events_per_s=rate,
            scorer_lag=self._lag(end_offsets),
            production_version=self._production_version(),
            drift_share=self._last_value('SELECT last("share_drifted_features") FROM "drift"'),
            accuracy=self._last_value('SELECT last("accuracy") FROM "performance"'),
        )

    def _end_offsets(self) -> dict[TopicPartition, int]:
        try:
            if self._consumer is None:
                self._consumer = KafkaConsumer(bootstrap_servers=self.kafka.bootstrap_servers)
            partitions = self._consumer.partitions_for_topic(self.kafka.topic_measurements) or set()
            topic_partitions = [TopicPartition(self.kafka.topic_measurements, p) for p in partitions]
            return dict(self._consumer.end_offsets(topic_partitions))
        except KafkaError:
            return {}

    def _lag(self, end_offsets: dict[TopicPartition, int]) -> int | None:
        if not end_offsets:
            return None
        try:
            admin = admin_client(self.kafka, timeout_ms=3000)
            try:
                committed: dict[Any, Any] = admin.list_group_offsets(self.scorer_group)[self.scorer_group]
            finally:
                admin.close()
        except (KafkaError, KeyError):
            return None
        lag = 0
        for partition, end in end_offsets.items():
            offset = committed.get(partition)
            lag += end - (offset.offset if offset is not None and offset.offset >= 0 else 0)
        return lag

    def _production_version(self) -> str | None:
        try:
            with RegistryClient(self.mlflow) as client:
                return production_history.production_version(client, self.mlflow)
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
