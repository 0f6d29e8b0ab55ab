"""Apache Kafka 4.x in KRaft combined mode (broker and controller in one JVM), from Maven Central jars.

``infra/kafka/pom.xml`` names the broker's runtime dependencies; Maven copies them into the state
dir once, and the broker runs with ``java -cp``. The cluster id is generated once and kept beside the
data, so the storage is formatted exactly once.

With ``FIREMAN_KAFKA_BROKERS=3`` the same class runs each node of a three-node cluster (services
``kafka``, ``kafka-2``, ``kafka-3``): every node is a voter of the controller quorum, so the cluster
keeps its metadata, and its partitions their leaders, while any one node is down.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import ClassVar

from fireman.common.kafka_io import broker_count, broker_reachable, ensure_topics
from fireman.common.settings import KafkaSettings
from fireman.services.base import LocalService, require_executable
from fireman.services.process import ServiceError, wait_until

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id={node}
controller.quorum.bootstrap.servers={controllers}
listeners={listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners={listener}://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name={listener}
listener.security.protocol.map={listener}:{listener},CONTROLLER:PLAINTEXT
log.dirs={data_dir}
num.partitions={partitions}
auto.create.topics.enable=false
offsets.topic.replication.factor={replication}
default.replication.factor={replication}
min.insync.replicas={min_insync}
# One partition per internal topic: a node on one machine gains nothing from more, and group joins are faster.
offsets.topic.num.partitions=1
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_insync}
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_insync}
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=104857600
num.network.threads=2
num.io.threads=4
"""


# With FIREMAN_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT: clients and the broker itself authenticate on
# the client listener; the controller listener stays on loopback, plaintext.
SASL_PROPERTIES = """\
sasl.enabled.mechanisms={mechanism}
sasl.mechanism.inter.broker.protocol={mechanism}
listener.name.sasl_plaintext.{mechanism_lower}.sasl.jaas.config={jaas}
"""
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
_JAAS = {
    "SCRAM-SHA-256": _SCRAM_LOGIN + ' required username="{u}" password="{p}";',
    "SCRAM-SHA-512": _SCRAM_LOGIN + ' required username="{u}" password="{p}";',
    # PLAIN's users are listed in the JAAS line itself (user_<name>="<password>").
    "PLAIN": 'org.apache.kafka.common.security.plain.PlainLoginModule required username="{u}" password="{p}" '
    'user_{u}="{p}";',
}
# Characters that would need escaping in a JAAS line or a --add-scram argument.
_UNQUOTABLE = set('"\\,[]=\n')


def _run(command: list[str], failure: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError(f"{failure}:\n{(result.stdout + result.stderr)[-3000:]}")


class KafkaService(LocalService):
    """One KRaft node: the only one by default, node 1 of a cluster with FIREMAN_KAFKA_BROKERS > 1."""

    name = "kafka"
    node: ClassVar[int] = 1

    def ports(self) -> list[int]:
        return list(self.settings.kafka.node_ports(self.node))

    def peers(self) -> list[str]:
        # "kafka" names the whole cluster (start and stop it all); "kafka-2" names just that node.
        if self.node != 1:
            return [self.name]
        return [node_name(k) for k in range(1, self.settings.kafka.brokers + 1)]

    @property
    def cluster_dir(self) -> Path:
        """Node 1's directory: the cluster's jars and ids, which every node shares."""
        return self.settings.state.root / KafkaService.name

    @property
    def pom(self) -> Path:
        return self.root / "infra" / "kafka" / "pom.xml"

    @property
    def libs(self) -> Path:
        return self.cluster_dir / "libs"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def properties_path(self) -> Path:
        return self.dir / "server.properties"

    def check_prerequisites(self) -> None:
        require_executable(
            "java", "Kafka 4 needs Java 17 or newer (Debian: apt-get install openjdk-17-jre-headless)."
        )
        self.fetch_jars()

    def fetch_jars(self) -> bool:
        """Copy the broker's jars from Maven Central into the state dir; a no-op when the pom is unchanged."""
        stamp = self.libs / ".pom.sha256"
        digest = hashlib.sha256(self.pom.read_bytes()).hexdigest()
        if stamp.is_file() and stamp.read_text() == digest:
            return False
        mvn = require_executable(
            "mvn", "Kafka's jars are fetched with Maven (Debian: apt-get install maven)."
        )
        if self.libs.exists():
            shutil.rmtree(self.libs)
        self.libs.mkdir(parents=True)
        _run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(self.pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.libs}",
                "-DincludeScope=runtime",
            ],
            "Maven could not fetch the Kafka jars",
        )
        stamp.write_text(digest)
        return True

    def cluster_id(self) -> str:
        return _kept_uuid(self.cluster_dir / "cluster.id")

    def initial_controllers(self) -> str:
        """The quorum every node is formatted with: ``id@host:port:directory-id`` of each node (KIP-853)."""
        voters = []
        for k in range(1, self.settings.kafka.brokers + 1):
            directory_id = _kept_uuid(self.cluster_dir / f"node-{k}.directory.id")
            voters.append(f"{k}@127.0.0.1:{self.settings.kafka.node_ports(k)[1]}:{directory_id}")
        return ",".join(voters)

    def server_properties(self) -> str:
        settings = self.settings.kafka
        port, controller_port = settings.node_ports(self.node)
        nodes = range(1, settings.brokers + 1)
        properties = SERVER_PROPERTIES.format(
            node=self.node,
            controllers=",".join(f"127.0.0.1:{settings.node_ports(k)[1]}" for k in nodes),
            listener="SASL_PLAINTEXT" if settings.sasl else "PLAINTEXT",
            host=settings.host,
            port=port,
            controller_port=controller_port,
            data_dir=self.data_dir,
            partitions=settings.partitions,
            replication=settings.topic_replication,
            min_insync=settings.topic_min_insync,
        )
        if settings.sasl:
            properties += self._sasl_properties()
        return properties

    def prepare(self) -> None:
        settings = self.settings.kafka
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.properties_path.write_text(self.server_properties())
        self.properties_path.chmod(0o600)  # it holds the broker's SASL password
        users = self.dir / "scram-users"
        quorum = self.dir / "quorum"
        # A single node bootstraps the quorum alone; a cluster's nodes all start from the same voters.
        quorum_flag = (
            "--standalone" if settings.brokers == 1 else f"--initial-controllers={self.initial_controllers()}"
        )
        if not (self.data_dir / "meta.properties").is_file():
            format_command = [
                *self._java(),
                "kafka.tools.StorageTool",
                "format",
                quorum_flag,
                f"--cluster-id={self.cluster_id()}",
                "--config",
                str(self.properties_path),
            ]
            if settings.sasl and settings.sasl_mechanism.startswith("SCRAM-"):
                # SCRAM users live in the cluster metadata: the first one is created with the storage.
                format_command.append(f"--add-scram={self._scram_credential()}")
            _run(format_command, "formatting Kafka storage failed")
            users.write_text(self._scram_user() + "\n")
            quorum.write_text(quorum_flag)
            return
        formatted_as = quorum.read_text() if quorum.is_file() else "--standalone"
        if formatted_as != quorum_flag:
            raise ServiceError(
                f"Kafka's storage in {self.data_dir} was formatted for another cluster shape "
                f"({formatted_as}), not FIREMAN_KAFKA_BROKERS={settings.brokers} on these ports. Set the "
                f"settings it was made with, or remove {self.settings.state.root}/kafka* to start afresh."
            )
        if settings.sasl and settings.sasl_mechanism.startswith("SCRAM-"):
            known = users.read_text().split() if users.is_file() else []
            if self._scram_user() not in known:
                raise ServiceError(
                    f"Kafka's storage in {self.data_dir} was formatted without the SCRAM user "
                    f"{settings.sasl_username!r} ({settings.sasl_mechanism}). Add it with Kafka's "
                    "kafka-configs.sh --alter --entity-type users, or remove that directory to start afresh."
                )

    def _checked_credentials(self) -> tuple[str, str]:
        settings = self.settings.kafka
        if settings.security_protocol != "SASL_PLAINTEXT":
            raise ServiceError(
                f"fireman services runs its local broker with SASL_PLAINTEXT, not "
                f"{settings.security_protocol}: SASL_SSL is for clusters with certificates of their own."
            )
        assert settings.sasl_username and settings.sasl_password  # the settings check this
        username, password = settings.sasl_username, settings.sasl_password.get_secret_value()
        if _UNQUOTABLE & set(username + password):
            raise ServiceError(
                "the local broker's SASL username and password may not contain \" \\ , [ ] = or a newline"
            )
        return username, password

    def _sasl_properties(self) -> str:
        mechanism = self.settings.kafka.sasl_mechanism
        username, password = self._checked_credentials()
        return SASL_PROPERTIES.format(
            mechanism=mechanism,
            mechanism_lower=mechanism.lower(),
            jaas=_JAAS[mechanism].format(u=username, p=password),
        )

    def _scram_user(self) -> str:
        return f"{self.settings.kafka.sasl_mechanism}:{self.settings.kafka.sasl_username}"

    def _scram_credential(self) -> str:
        username, password = self._checked_credentials()
        return f"{self.settings.kafka.sasl_mechanism}=[name={username},password={password}]"

    def _java(self) -> list[str]:
        log4j = self.root / "infra" / "kafka" / "log4j2.yaml"
        return [
            "java",
            f"-Xmx{self.settings.kafka.heap}",
            f"-Xms{self.settings.kafka.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{self.libs}/*",
        ]

    def command(self) -> list[str]:
        return [*self._java(), "kafka.Kafka", str(self.properties_path)]

    def node_settings(self) -> KafkaSettings:
        """Client settings that reach this node alone (as its bootstrap server)."""
        settings = self.settings.kafka
        if settings.brokers == 1:
            return settings
        port = settings.node_ports(self.node)[0]
        return settings.model_copy(update={"bootstrap": f"{settings.host}:{port}"})

    def healthy(self) -> bool:
        return broker_reachable(self.node_settings())

    def after_start(self) -> None:
        settings = self.settings.kafka
        # Topics with replication 3 can be created only once every broker has registered.
        if not wait_until(
            lambda: broker_count(settings) >= settings.brokers, self.start_timeout_s(), interval_s=0.25
        ):
            raise ServiceError(
                f"only {broker_count(settings)} of {settings.brokers} Kafka brokers joined the cluster "
                f"within {self.start_timeout_s():.0f}s; see the kafka*/kafka*.log files in "
                f"{self.settings.state.root}"
            )
        ensure_topics(settings)

    def describe(self) -> str:
        settings = self.settings.kafka
        if settings.brokers == 1:
            return settings.bootstrap_servers
        return f"{settings.host}:{self.ports()[0]} (node {self.node} of {settings.brokers})"


def node_name(node: int) -> str:
    return KafkaService.name if node == 1 else f"{KafkaService.name}-{node}"


def kafka_nodes(brokers: int) -> list[type[KafkaService]]:
    """The service class of each node: ``KafkaService`` itself, then one subclass per further node."""
    extra = [
        type(f"KafkaNode{k}", (KafkaService,), {"name": node_name(k), "node": k})
        for k in range(2, brokers + 1)
    ]
    return [KafkaService, *extra]


def _kept_uuid(path: Path) -> str:
    """A random id in Kafka's format (a UUID's 16 bytes, base64url, unpadded), kept in ``path``."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
    return path.read_text().strip()
