"""Consumer lag, measured from Kafka itself: end offsets minus each group's committed offsets.

The scorer only logs its lag, and a dead or stuck consumer reports nothing at all, which is exactly
when lag matters; asking the broker (``fireman.common.kafka_io.consumer_lag``) works whatever state
the consumers are in. A sampler thread records the result in the ``consumer_lag`` measurement so the
history survives restarts and Grafana can chart it. Sample times are floored to the interval, so two
dashboards sampling the same groups overwrite each other's points instead of doubling them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from fireman.common.influx import InfluxClient, InfluxError, Point
from fireman.common.kafka_io import admin_client, consumer_lag
from fireman.common.measurements import CONSUMER_LAG
from fireman.common.settings import InfluxSettings, KafkaSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupLag:
    group: str
    lag: int
    partitions: int
    at: float  # epoch seconds

    def point(self, interval_s: float) -> Point:
        floored_ns = int(self.at // interval_s * interval_s * 1e9)
        return Point(
            CONSUMER_LAG.name,
            fields={"lag": self.lag, "partitions": self.partitions},
            time_ns=floored_ns,
            tags={"group": self.group},
        )


def measure_lag(admin: AdminClient, groups: Mapping[str, Sequence[str]]) -> list[GroupLag]:
    """Lag of each group over every partition of its topics (see ``consumer_lag``)."""
    lag = consumer_lag(admin, groups)
    now = time.time()
    return [GroupLag(group, lag.behind[group], lag.partitions[group], now) for group in groups]


class LagSampler:
    """Samples lag every ``interval_s`` on a daemon thread and writes it to InfluxDB."""

    def __init__(
        self,
        kafka: KafkaSettings,
        influxdb: InfluxSettings,
        groups: Mapping[str, Sequence[str]],
        interval_s: float,
    ) -> None:
        self.kafka = kafka
        self.influxdb = influxdb
        self.groups = {group: list(topics) for group, topics in groups.items()}
        self.interval_s = interval_s
        self.latest: list[GroupLag] = []
        self.error: str | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lag-sampler", daemon=True)
                self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        # One client for the sampler's life: librdkafka reconnects by itself after an outage.
        admin = admin_client(self.kafka, timeout_ms=5000)
        with InfluxClient(self.influxdb) as influx:
            while not self._halt.is_set():
                try:
                    self.sample(admin, influx)
                except KafkaException as exc:
                    self.error = f"Kafka at {self.kafka.bootstrap_servers}: {exc}"
                    log.warning("consumer lag not sampled: %s", self.error)
                except InfluxError as exc:
                    self.error = f"InfluxDB: {exc}"
                    log.warning("consumer lag not recorded: %s", exc)
                admin.poll(0)  # hands librdkafka's queued log lines to logging
                self._halt.wait(self.interval_s)

    def sample(self, admin: AdminClient, influx: InfluxClient) -> list[GroupLag]:
        lags = measure_lag(admin, self.groups)
        self.latest = lags
        self.error = None
        try:
            influx.write(lag.point(self.interval_s) for lag in lags)
        except InfluxError as exc:
            if "database not found" not in str(exc):
                raise
            influx.ensure_database()
            influx.write(lag.point(self.interval_s) for lag in lags)
        return lags
