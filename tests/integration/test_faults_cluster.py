"""A three-broker Kafka cluster loses a partition leader mid-stream: SIGKILL, 30 s down, back.

`fireman services` runs the cluster the way ``FIREMAN_KAFKA_BROKERS=3`` runs it for users: three KRaft
nodes (each broker and controller), topics with replication 3 and ``min.insync.replicas`` 2, and
producers with ``acks=all``. Collector, sink, scorer and generator run as real processes and never
restart; the test then counts, per event id, the raw and prediction points in InfluxDB.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from fireman.common.kafka_io import admin_client
from fireman.common.settings import InfluxSettings, KafkaSettings, MlflowSettings, ServicesSettings
from fireman.services.kafka import node_name
from fireman.services.manager import ServiceManager
from fireman.services.process import PidRecord, port_owner
from tests.conftest import REPO_ROOT, free_port, share_kafka_jars
from tests.integration.faults_support import (
    Pipeline,
    StackNames,
    StreamSpec,
    report,
    start_fault_stack,
    wait_for,
)

# Three brokers, InfluxDB, MLflow and four pipeline processes on two cores, and a 30 s outage.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROKERS = 3
OUTAGE_S = 30.0


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive free ports: node k of the cluster takes two of them."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 30_000)
        if all(port_owner(port) is None for port in range(base, base + count)):
            return base
    raise AssertionError(f"no run of {count} free ports found")


@pytest.fixture(scope="module")
def cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceManager]:
    home = tmp_path_factory.mktemp("fireman-cluster-home")
    base = free_port_run(2 * BROKERS)
    settings = ServicesSettings(
        state={"home": home},
        # Defaults apart from the ports: replication 3 and min.insync.replicas 2 follow from brokers=3.
        kafka=KafkaSettings(port=base, controller_port=base + 1, brokers=BROKERS),
        influxdb=InfluxSettings(port=free_port(), rpc_port=free_port()),
        mlflow=MlflowSettings(port=free_port()),
    )
    manager = ServiceManager(settings, REPO_ROOT)
    share_kafka_jars(home)
    try:
        yield start_fault_stack(manager)
    finally:
        manager.stop(list(manager.services), on_progress=lambda _: None)


def partition_leaders(kafka: KafkaSettings) -> dict[int, int]:
    """Partition -> leading broker id (-1 while it has none) of the measurements topic."""
    metadata = admin_client(kafka, 5000).list_topics(kafka.topic_measurements, timeout=5)
    partitions = metadata.topics[kafka.topic_measurements].partitions
    return {number: partition.leader for number, partition in partitions.items()}


def in_sync_replicas(kafka: KafkaSettings) -> list[int]:
    """How many replicas are in sync, for every partition of the pipeline's topics."""
    metadata = admin_client(kafka, 5000).list_topics(timeout=5)
    return [
        len(partition.isrs)
        for topic in kafka.topics()
        for partition in metadata.topics[topic].partitions.values()
    ]


def test_broker_leading_partitions_sigkilled_for_30s_loses_and_duplicates_nothing(
    cluster_stack: ServiceManager, tmp_path: Path
) -> None:
    names = StackNames.fresh(cluster_stack)
    kafka = names.kafka
    assert set(in_sync_replicas(kafka)) == {BROKERS}, "the topics are not replicated on every broker"
    with Pipeline.with_synthetic_model(
        names, tmp_path, StreamSpec(events=4000, rate=80, seed=41)
    ) as pipeline:
        victim = partition_leaders(kafka)[0]
        led = sorted(p for p, leader in partition_leaders(kafka).items() if leader == victim)
        node = cluster_stack.services[node_name(victim)]
        marks: dict[str, float] = {}

        def kill_leader() -> None:
            record = PidRecord.read(node.pid_path)
            process = record.process() if record else None
            assert process is not None, f"{node.name} is not running"
            marks["counts_at_kill"] = float(sum(pipeline.counts()))
            process.kill()  # SIGKILL: no controlled shutdown, no leadership handed over first
            process.wait(30)

        def outage_observed() -> bool:
            now = time.monotonic()
            leaders = partition_leaders_or_none(kafka)
            if leaders and "reelected" not in marks and all(leaders[p] not in (victim, -1) for p in led):
                marks["reelected"] = now
            if "flowing" not in marks and sum(pipeline.counts()) > marks["counts_at_kill"] + 100:
                marks["flowing"] = now
            return "reelected" in marks and "flowing" in marks

        def back_in_sync() -> None:
            wait_for(
                lambda: set(in_sync_replicas(kafka)) == {BROKERS},
                120,
                f"{node.name} to rejoin every partition's in-sync replicas",
            )
            marks["in_sync"] = time.monotonic()

        pipeline.start()
        pipeline.wait_counts(400, 400, 120, "400 raw and 400 prediction points before the fault")
        times = pipeline.inject(
            f"Kafka broker {victim} of {BROKERS} (leader of measurements partitions {led}) SIGKILLed "
            f"for {OUTAGE_S:.0f} s, then started",
            down=kill_leader,
            up=lambda: cluster_stack.start([node.name], on_progress=lambda _: None),
            ready=node.healthy,
            watch=(True, True),
            hold_s=OUTAGE_S,
            during=outage_observed,
            during_what="new leaders for the killed broker's partitions, and the stream flowing again",
            after_up=back_in_sync,
        )
        times.notes += [
            f"new leaders elected {marks['reelected'] - times.injected_at:.1f} s after the kill",
            f"stream flowing again {marks['flowing'] - times.injected_at:.1f} s after the kill",
            f"all replicas back in sync {marks['in_sync'] - times.back_at:.1f} s after the broker was back",
        ]
        audit = pipeline.finish(times)
        report(times, audit, len(pipeline.expected))
        assert (audit.lost, audit.duplicated) == (0, 0), audit.line()
        assert audit.kafka_predictions.lost == 0
        # The cluster carried the stream: no component was restarted to get through it.
        assert all(proc.starts == 1 for proc in pipeline.procs.values() if proc.starts)


def partition_leaders_or_none(kafka: KafkaSettings) -> dict[int, int] | None:
    try:
        return partition_leaders(kafka)
    except KafkaException:  # metadata may be briefly unavailable while leaders move
        return None
