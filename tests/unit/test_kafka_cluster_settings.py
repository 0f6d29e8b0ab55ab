"""FIREMAN_KAFKA_BROKERS: one node by default, exactly as before; three make a replicated cluster whose
nodes start together, each on its own pair of ports, and whose topics survive the loss of one broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fireman.common.settings import KafkaSettings, ServicesSettings
from fireman.services.kafka import KafkaService
from fireman.services.manager import ServiceManager
from fireman.services.process import ServiceError
from tests.conftest import REPO_ROOT


def manager(monkeypatch: pytest.MonkeyPatch, home: Path, **env: str) -> ServiceManager:
    monkeypatch.setenv("FIREMAN_HOME", str(home))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return ServiceManager(ServicesSettings(), REPO_ROOT)


def properties(service: KafkaService) -> dict[str, str]:
    lines = [line for line in service.server_properties().splitlines() if "=" in line]
    return dict(line.split("=", 1) for line in lines if not line.startswith("#"))


def test_by_default_one_node_with_unreplicated_topics(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    services = manager(monkeypatch, tmp_path)
    kafka = services.settings.kafka
    assert (kafka.bootstrap_servers, kafka.topic_replication, kafka.topic_min_insync) == (
        "127.0.0.1:9092",
        1,
        1,
    )
    assert [name for name in services.services if name.startswith("kafka")] == ["kafka"]
    config = properties(services.kafka)
    assert config["node.id"] == "1"
    assert config["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert (config["default.replication.factor"], config["min.insync.replicas"]) == ("1", "1")


def test_three_brokers_are_three_nodes_replicating_each_topic_three_times(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    services = manager(monkeypatch, tmp_path, FIREMAN_KAFKA_BROKERS="3")
    kafka = services.settings.kafka
    assert kafka.bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert (kafka.topic_replication, kafka.topic_min_insync) == (3, 2)
    assert list(services.services)[:3] == ["kafka", "kafka-2", "kafka-3"]
    # "kafka" is the cluster: starting or stopping it covers every node; "kafka-2" is one node.
    assert services.with_needs(["kafka", "mlflow"]) == ["kafka", "kafka-2", "kafka-3", "mlflow"]
    assert services.with_peers(["kafka-2"]) == ["kafka-2"]
    node2 = services.services["kafka-2"]
    assert isinstance(node2, KafkaService)
    assert node2.ports() == [9094, 9095]
    config = properties(node2)
    assert config["node.id"] == "2"
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert config["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093,127.0.0.1:9095,127.0.0.1:9097"
    for key in ("default.replication.factor", "offsets.topic.replication.factor"):
        assert config[key] == "3"
    assert config["min.insync.replicas"] == config["transaction.state.log.min.isr"] == "2"
    # Every node is formatted with the same three voters, and shares node 1's jars and cluster id.
    assert node2.initial_controllers() == services.kafka.initial_controllers()
    assert node2.initial_controllers().count("@127.0.0.1:") == 3
    assert node2.libs == services.kafka.libs
    assert node2.cluster_id() == services.kafka.cluster_id()


def test_an_impossible_cluster_is_refused_with_the_settings_named() -> None:
    with pytest.raises(ValidationError, match="MIN_INSYNC_REPLICAS=3 is more than the 1 replicas"):
        KafkaSettings(min_insync_replicas=3)
    with pytest.raises(ValidationError, match="FIREMAN_KAFKA_CONTROLLER_PORT=9094 overlap"):
        KafkaSettings(brokers=3, controller_port=9094)
    assert KafkaSettings(brokers=3, replication_factor=2).topic_min_insync == 1


def test_storage_formatted_for_one_node_is_not_reused_for_a_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    single = manager(monkeypatch, tmp_path).kafka
    single.data_dir.mkdir(parents=True)
    (single.data_dir / "meta.properties").write_text("formatted\n")  # as `format --standalone` leaves it
    cluster = manager(monkeypatch, tmp_path, FIREMAN_KAFKA_BROKERS="3").kafka
    with pytest.raises(ServiceError, match="formatted for another cluster shape"):
        cluster.prepare()
