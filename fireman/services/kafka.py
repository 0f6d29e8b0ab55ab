"""Apache Kafka 4.x in KRaft combined mode (broker and controller in one JVM), from Maven Central jars.

``infra/kafka/pom.xml`` names the broker's runtime dependencies; Maven copies them into the state
dir once, and the broker runs with ``java -cp``. The cluster id is generated once and kept beside the
data, so the storage is formatted exactly once.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import uuid
from pathlib import Path

from fireman.common.kafka_io import broker_reachable, ensure_topics
from fireman.services.base import LocalService, require_executable
from fireman.services.process import ServiceError

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners={listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners={listener}://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name={listener}
listener.security.protocol.map={listener}:{listener},CONTROLLER:PLAINTEXT
log.dirs={data_dir}
num.partitions={partitions}
auto.create.topics.enable=false
offsets.topic.replication.factor=1
default.replication.factor=1
min.insync.replicas=1
# One partition per internal topic: a single node gains nothing from more, and group joins are faster.
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
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
    name = "kafka"

    def ports(self) -> list[int]:
        return [self.settings.kafka.port, self.settings.kafka.controller_port]

    @property
    def pom(self) -> Path:
        return self.root / "infra" / "kafka" / "pom.xml"

    @property
    def libs(self) -> Path:
        return self.dir / "libs"

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
        path = self.dir / "cluster.id"
        if not path.is_file():
            self.dir.mkdir(parents=True, exist_ok=True)
            # Kafka's cluster id format: the 16 bytes of a UUID, base64url without padding.
            path.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        return path.read_text().strip()

    def prepare(self) -> None:
        settings = self.settings.kafka
        self.data_dir.mkdir(parents=True, exist_ok=True)
        properties = SERVER_PROPERTIES.format(
            listener="SASL_PLAINTEXT" if settings.sasl else "PLAINTEXT",
            host=settings.host,
            port=settings.port,
            controller_port=settings.controller_port,
            data_dir=self.data_dir,
            partitions=settings.partitions,
        )
        if settings.sasl:
            properties += self._sasl_properties()
        self.properties_path.write_text(properties)
        self.properties_path.chmod(0o600)  # it holds the broker's SASL password
        users = self.dir / "scram-users"
        if not (self.data_dir / "meta.properties").is_file():
            format_command = [
                *self._java(),
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                f"--cluster-id={self.cluster_id()}",
                "--config",
                str(self.properties_path),
            ]
            if settings.sasl and settings.sasl_mechanism.startswith("SCRAM-"):
                # SCRAM users live in the cluster metadata: the first one is created with the storage.
                format_command.append(f"--add-scram={self._scram_credential()}")
            _run(format_command, "formatting Kafka storage failed")
            users.write_text(self._scram_user() + "\n")
        elif settings.sasl and settings.sasl_mechanism.startswith("SCRAM-"):
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

    def healthy(self) -> bool:
        return broker_reachable(self.settings.kafka)

    def after_start(self) -> None:
        ensure_topics(self.settings.kafka)

    def describe(self) -> str:
        return self.settings.kafka.bootstrap_servers
