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
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
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
        self.properties_path.write_text(
            SERVER_PROPERTIES.format(
                host=settings.host,
                port=settings.port,
                controller_port=settings.controller_port,
                data_dir=self.data_dir,
                partitions=settings.partitions,
            )
        )
        if not (self.data_dir / "meta.properties").is_file():
            _run(
                [
                    *self._java(),
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    f"--cluster-id={self.cluster_id()}",
                    "--config",
                    str(self.properties_path),
                ],
                "formatting Kafka storage failed",
            )

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
