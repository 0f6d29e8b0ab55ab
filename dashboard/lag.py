"""Consumer lag, measured from Kafka itself: end offsets minus each group's committed offsets.

The scorer only logs its lag, and a dead or stuck consumer reports nothing at all, which is exactly
when lag matters; asking the broker works whatever state the consumers are in. A sampler thread
records the result in the ``consumer_lag`` measurement so the history survives restarts and Grafana
can chart it. Sample times are floored to the interval, so two dashboards sampling the same groups
overwrite each other's points instead of doubling them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import OffsetSpec
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from fireman_common.influx import InfluxClient, InfluxError, Point
from fireman_common.kafka_io import admin_client
from fireman_common.measurements import CONSUMER_LAG
from fireman_common.settings import InfluxSettings, KafkaSettings

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


def measure_lag(admin: KafkaAdminClient, groups: Mapping[str, Sequence[str]]) -> list[GroupLag]:
    """Lag of each group over every partition of its topics.

    A partition the group never committed counts from its earliest offset: the consumers start
    there (``auto_offset_reset=earliest``), so everything retained is still to be read.
    """
    topics = sorted({topic for wanted in groups.values() for topic in wanted})
    partitions: dict[str, list[TopicPartition]] = {topic: [] for topic in topics}
    for described in admin.describe_topics(topics):
        if described.get("error_code", 0) == 0:
            partitions[described["name"]] = [
                TopicPartition(described["name"], p["partition_index"]) for p in described["partitions"]
            ]
    every = [tp for tps in partitions.values() for tp in tps]
    ends: dict[TopicPartition, int] = {}
    starts: dict[TopicPartition, int] = {}
    if every:
        ends = {
            tp: o.offset
            for tp, o in admin.list_partition_offsets(dict.fromkeys(every, OffsetSpec.LATEST)).items()
        }
        starts = {
            tp: o.offset
            for tp, o in admin.list_partition_offsets(dict.fromkeys(every, OffsetSpec.EARLIEST)).items()
        }
    now = time.time()
    result = []
    for group, wanted in groups.items():
        # One request per group: fetching several at once needs OffsetFetch v8 (Kafka 3.0+).
        committed = admin.list_group_offsets({group: None}).get(group, {})
        lag = 0
        count = 0
        for topic in wanted:
            for tp in partitions.get(topic, []):
                done = committed.get(tp)
                position = done.offset if done is not None and done.offset >= 0 else starts.get(tp, 0)
                lag += max(0, ends.get(tp, 0) - position)
                count += 1
        result.append(GroupLag(group, lag, count, now))
    return result


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
        admin: KafkaAdminClient | None = None
        with InfluxClient(self.influxdb) as influx:
            while not self._halt.is_set():
                try:
                    if admin is None:
                        admin = admin_client(self.kafka, timeout_ms=5000)
                    self.sample(admin, influx)
                except KafkaError as exc:
                    self.error = f"Kafka at {self.kafka.bootstrap_servers}: {exc}"
                    log.warning("consumer lag not sampled: %s", self.error)
                    if admin is not None:
                        admin.close()
                    admin = None
                except InfluxError as exc:
                    self.error = f"InfluxDB: {exc}"
                    log.warning("consumer lag not recorded: %s", exc)
                self._halt.wait(self.interval_s)
        if admin is not None:
            admin.close()

    def sample(self, admin: KafkaAdminClient, influx: InfluxClient) -> list[GroupLag]:
        lags = measure_lag(admin, self.groups)
        self.latest = lags
        self.error = None
        try:
            influx.write(lag.point(self.interval_s) for lag in lags)
        except InfluxError as exc:
            if "database not found" not in str(exc):
                raise
            influx.create_database()
            influx.write(lag.point(self.interval_s) for lag in lags)
        return lags
