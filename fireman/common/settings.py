"""Settings for every fireman service, read from ``FIREMAN_*`` environment variables.

Each service's entrypoint builds one settings object and passes it down; nothing here does I/O.
Connection settings (Kafka, InfluxDB, MLflow, PostgreSQL) are small classes of their own that the service
classes embed, so ``FIREMAN_KAFKA_PORT`` means the same thing to every process.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import AliasChoices, Field, SecretStr, computed_field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fireman.common.retry import Backoff

LOOPBACK = "127.0.0.1"
# The consumer groups' default names: each service's FIREMAN_*_GROUP_ID, also read by the dashboard.
SINK_GROUP = "fireman-sink"
SCORER_GROUP = "fireman-scorer"
MONITOR_GROUP = "fireman-monitor"
# Every TCP port setting: out of range, it fails at the settings, not at the first bind or connect.
Port = Annotated[int, Field(ge=1, le=65535)]


def group_id_of(service: str, default: str, description: str | None = None) -> Any:
    """A field for another service's consumer group, read from that service's own variable
    (``FIREMAN_SCORER_GROUP_ID``, ...): one variable names a group for every process that watches it."""
    return Field(
        default=default,
        validation_alias=AliasChoices(f"FIREMAN_{service}_GROUP_ID", f"{service.lower()}_group_id"),
        description=description,
    )


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, extra="ignore", env_file=None)


class StateSettings(BaseSettings):
    """Where local services keep data and logs (``FIREMAN_HOME``)."""

    model_config = _config("FIREMAN_")

    home: Path = Path(".fireman")

    @property
    def root(self) -> Path:
        return self.home.expanduser().resolve()


class KafkaSettings(BaseSettings):
    model_config = _config("FIREMAN_KAFKA_")

    host: str = LOOPBACK
    port: Port = 9092
    controller_port: Port = 9093
    bootstrap: str | None = Field(default=None, description="Overrides host:port, e.g. for a remote cluster.")
    topic_measurements: str = "measurements"
    topic_labels: str = "labels"
    topic_predictions: str = "predictions"
    topic_dlq: str = "measurements-dlq"
    measurement_format: Literal["binary", "json"] = Field(
        default="binary",
        description="How the collector and the benches write events to measurements: binary (positional "
        "float64, decoded almost for free) or json. Readers accept both on the same topic.",
    )
    partitions: int = 4
    brokers: int = Field(
        default=1,
        ge=1,
        le=5,
        description="KRaft nodes `fireman services` runs here. Node k listens on port + 2(k-1) and "
        "controller_port + 2(k-1); 3 nodes give topics replication 3 and min.insync.replicas 2.",
    )
    replication_factor: int | None = Field(
        default=None, ge=1, description="Replicas of each topic fireman creates; unset: min(brokers, 3)."
    )
    min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="Replicas that must have a write before acks=all is satisfied; unset: 2 with 3 or "
        "more replicas (one broker may fail), else 1.",
    )
    retention_ms: int = 7 * 24 * 3600 * 1000
    request_timeout_ms: int = 10_000
    session_timeout_ms: int = Field(
        default=10_000,
        ge=6000,
        description="How long a consumer that died keeps its partitions before its group moves them.",
    )
    heap: str = "512m"
    # Managed clusters authenticate clients; `fireman services` runs a local broker the same way when
    # these are set (SCRAM users are created when its storage is formatted).
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="SASL_SSL for a managed cluster; SASL_PLAINTEXT on a private net."
    )
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-256"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = Field(
        default=None, description="CA certificates (PEM) for SASL_SSL; unset: the system's."
    )

    @model_validator(mode="after")
    def _credentials_with_sasl(self) -> KafkaSettings:
        if self.sasl and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                f"FIREMAN_KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs FIREMAN_KAFKA_SASL_USERNAME "
                "and FIREMAN_KAFKA_SASL_PASSWORD"
            )
        return self

    @model_validator(mode="after")
    def _consistent_cluster(self) -> KafkaSettings:
        if self.topic_min_insync > self.topic_replication:
            raise ValueError(
                f"FIREMAN_KAFKA_MIN_INSYNC_REPLICAS={self.topic_min_insync} is more than the "
                f"{self.topic_replication} replicas a topic has: no write could ever succeed"
            )
        ports = [port for node in range(1, self.brokers + 1) for port in self.node_ports(node)]
        if len(set(ports)) != len(ports):
            raise ValueError(
                f"{self.brokers} Kafka nodes need distinct ports, but FIREMAN_KAFKA_PORT={self.port} and "
                f"FIREMAN_KAFKA_CONTROLLER_PORT={self.controller_port} overlap (node k adds 2(k-1) to both)"
            )
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def bootstrap_servers(self) -> str:
        # Every node of a local cluster, so a client starts even while one of them is down.
        nodes = range(1, self.brokers + 1)
        return self.bootstrap or ",".join(f"{self.host}:{self.node_ports(k)[0]}" for k in nodes)

    def node_ports(self, node: int) -> tuple[int, int]:
        """(client port, controller port) of the local cluster's node ``node`` (1-based)."""
        step = 2 * (node - 1)
        return self.port + step, self.controller_port + step

    @property
    def topic_replication(self) -> int:
        return self.replication_factor or min(self.brokers, 3)

    @property
    def topic_min_insync(self) -> int:
        return self.min_insync_replicas or (2 if self.topic_replication >= 3 else 1)

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    def client_config(self) -> dict[str, Any]:
        """What every Kafka client (producer, consumer, admin) needs to reach and join the cluster."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        if self.sasl:
            assert self.sasl_password is not None  # checked when the settings were built
            config.update(
                {
                    "security.protocol": self.security_protocol,
                    "sasl.mechanism": self.sasl_mechanism,
                    "sasl.username": self.sasl_username,
                    "sasl.password": self.sasl_password.get_secret_value(),
                }
            )
            if self.ssl_ca_location:
                config["ssl.ca.location"] = self.ssl_ca_location
        return config

    def topics(self) -> list[str]:
        return [self.topic_measurements, self.topic_labels, self.topic_predictions, self.topic_dlq]


class InfluxSettings(BaseSettings):
    model_config = _config("FIREMAN_INFLUXDB_")

    host: str = LOOPBACK
    port: Port = 8086
    rpc_port: Port = 8088
    url_override: str | None = Field(default=None, alias="FIREMAN_INFLUXDB_URL")
    database: str = "fireman"
    username: str | None = Field(
        default=None, description="fireman's InfluxDB user (with auth on); it needs no admin rights."
    )
    password: str | None = None
    # Only `fireman services` uses these, to run InfluxDB the way the compose stack does: auth on, the
    # operator (admin) owns the database, fireman is a plain user with rights on it alone.
    admin_username: str = Field(default="admin", description="The admin `fireman services` sets up.")
    admin_password: SecretStr | None = Field(
        default=None,
        description="Set it and `fireman services` runs InfluxDB with auth on, creates this admin, the "
        "database and the user FIREMAN_INFLUXDB_USERNAME (read and write on the database only).",
    )
    timeout_s: float = 10.0
    retry_initial_s: float = Field(
        default=0.2, gt=0, description="First wait before a write is retried while InfluxDB is unavailable."
    )
    retry_max_s: float = Field(
        default=5.0, gt=0, description="Longest wait between write retries (back-off doubles, with jitter)."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def url(self) -> str:
        return self.url_override or f"http://{self.host}:{self.port}"

    def backoff(self) -> Backoff:
        """The retry policy of every InfluxDB writer (sink, scorer, monitor)."""
        return Backoff(self.retry_initial_s, self.retry_max_s)


def _mlflow_own(variable: str, description: str, default: object = None) -> Any:
    """A field read from one of MLflow's own variables, not from a FIREMAN_MLFLOW_* one."""
    return Field(default=default, alias=variable, description=f"MLflow's own; {description}")


class MlflowSettings(BaseSettings):
    model_config = _config("FIREMAN_MLFLOW_")

    host: str = LOOPBACK
    port: Port = 5000
    workers: int = 2
    tracking_uri_override: str | None = Field(
        default=None,
        alias="FIREMAN_MLFLOW_TRACKING_URI",
        description="Tracking and registry server (else host:port). MLflow's own MLFLOW_TRACKING_URI "
        "and MLFLOW_REGISTRY_URI are ignored.",
    )
    request_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one registry request.")
    # MLflow's own credential and TLS variables, so fireman's registry calls and MLflow's client
    # (log_model, load_model) authenticate alike.
    tracking_username: str | None = _mlflow_own("MLFLOW_TRACKING_USERNAME", "basic auth for both.")
    tracking_password: str | None = _mlflow_own("MLFLOW_TRACKING_PASSWORD", "basic auth for both.")
    tracking_token: str | None = _mlflow_own("MLFLOW_TRACKING_TOKEN", "a bearer token, wins over basic.")
    tracking_insecure_tls: bool = _mlflow_own("MLFLOW_TRACKING_INSECURE_TLS", "skip TLS checks.", False)
    tracking_server_cert_path: str | None = _mlflow_own("MLFLOW_TRACKING_SERVER_CERT_PATH", "CA bundle.")
    tracking_client_cert_path: str | None = _mlflow_own(
        "MLFLOW_TRACKING_CLIENT_CERT_PATH", "client certificate."
    )
    experiment: str = "spam-classifier"
    model_name: str = "spam-classifier"
    production_alias: str = "production"
    previous_alias: str = "previous"
    challenger_alias: str = Field(
        default="challenger", description="The version scored in shadow beside production."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tracking_uri(self) -> str:
        return self.tracking_uri_override or f"http://{self.host}:{self.port}"


class PostgresSettings(BaseSettings):
    """PostgreSQL for MLflow's and Airflow's metadata, instead of their SQLite files."""

    model_config = _config("FIREMAN_POSTGRES_")

    enabled: bool = Field(
        default=False,
        description="MLflow and Airflow keep their metadata in PostgreSQL (databases mlflow and airflow), "
        "which `fireman services` runs and starts before them; false: SQLite files in $FIREMAN_HOME.",
    )
    host: str = Field(default=LOOPBACK, description="Where MLflow and Airflow reach PostgreSQL.")
    port: Port = 5432
    user: str = Field(default="fireman", description="The role that owns the mlflow and airflow databases.")
    password: SecretStr | None = Field(
        default=None,
        description="Its password; unset: the local server trusts connections from 127.0.0.1.",
    )
    mlflow_database: str = "mlflow"
    airflow_database: str = "airflow"

    def url(self, database: str) -> str:
        """A SQLAlchemy URL for ``database`` as this role.

        The driver is named: SQLAlchemy 2.1 takes a bare ``postgresql://`` for psycopg 3, which fireman
        does not install.
        """
        credentials = quote(self.user, safe="")
        if self.password is not None:
            credentials += ":" + quote(self.password.get_secret_value(), safe="")
        return f"postgresql+psycopg2://{credentials}@{self.host}:{self.port}/{quote(database, safe='')}"


class LiveEvidenceSettings(BaseSettings):
    """Which shadow predictions a live comparison reads (``fireman.common.live_evaluation``): one window
    for the promotion gate and the monitor's ``live_comparison``, so the dashboard shows what the gate
    decides on."""

    model_config = _config("FIREMAN_LIVE_")

    max_events: int = Field(
        default=20_000, ge=1, description="Most recent shadow predictions a live comparison reads."
    )
    lookback_hours: float = Field(
        default=24.0, gt=0, description="Hours back a live comparison reads shadow predictions from."
    )


class AirflowSettings(BaseSettings):
    model_config = _config("FIREMAN_AIRFLOW_")

    host: str = LOOPBACK
    port: Port = 8080
    # Log servers of the scheduler's task runner and of the triggerer: a second Airflow on the same
    # machine (a test's private one) must move these too.
    worker_log_port: Port = 8793
    trigger_log_port: Port = 8794
    retrain_schedule: str = Field(default="@daily", description="Cron or preset; 'none' = manual only.")
    drift_check_schedule: str = Field(
        default="@hourly",
        description="How often monitor_drift reads the alerts besides on each alert's asset event "
        "(cron or preset; 'none' = on alert events and manual runs only).",
    )
    task_retries: int = Field(
        default=2, ge=0, description="Retries of a failed DAG task (transient errors: a service down)."
    )
    task_retry_delay_s: float = Field(
        default=30.0, gt=0, description="First delay before a DAG task retry; it doubles per retry."
    )
    task_max_retry_delay_s: float = Field(default=600.0, gt=0, description="Longest delay between retries.")
    # The REST API, through which `fireman monitor` tells monitor_drift about an alert at once
    # (fireman.common.airflow_api). With no password set, the local standalone's generated file is read.
    alert_events: bool = Field(
        default=True,
        description="`fireman monitor` posts an asset event per alert, so monitor_drift runs within "
        "seconds instead of at its next cron run.",
    )
    api_username: str = Field(default="admin", description="Airflow REST API user.")
    api_password: SecretStr | None = Field(
        default=None, description="Its password; unset: read from FIREMAN_AIRFLOW_API_PASSWORD_FILE."
    )
    api_password_file: Path | None = Field(
        default=None,
        description="JSON {user: password} (the simple auth manager's file); unset: the local "
        "standalone's, in $FIREMAN_HOME/airflow.",
    )
    api_timeout_s: float = Field(default=5.0, gt=0, description="Timeout of one REST API request.")
    api_retry_for_s: float = Field(
        default=60.0,
        ge=0,
        description="How long an alert's asset event is retried while Airflow is unreachable.",
    )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @staticmethod
    def cron(schedule: str) -> str | None:
        """A schedule setting as the DAG's cron or preset; None (manual runs only) for 'none' or empty."""
        schedule = schedule.strip()
        return None if schedule.lower() in ("", "none", "null") else schedule

    def dag_arguments(self) -> dict[str, Any]:
        """What every fireman DAG shares: one run at a time, no backfill, and one retry policy for all
        their tasks (``default_args``)."""
        return {
            "start_date": datetime(2026, 1, 1, tzinfo=UTC),
            "catchup": False,
            "max_active_runs": 1,
            "default_args": {
                "owner": "fireman",
                "retries": self.task_retries,
                "retry_delay": timedelta(seconds=self.task_retry_delay_s),
                "retry_exponential_backoff": 2.0,
                "max_retry_delay": timedelta(seconds=self.task_max_retry_delay_s),
            },
        }


class DatasetSettings(BaseSettings):
    """Where the Spambase example data comes from."""

    model_config = _config("FIREMAN_")

    spambase_path: Path | None = None

    @field_validator("spambase_path", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        # `make` exports FIREMAN_SPAMBASE_PATH empty when ../shared has no copy: that means "packaged".
        return None if isinstance(value, str) and not value.strip() else value

    spambase_url: str | None = Field(
        default=None,
        description="Download the data from here (UCI's zip layout) instead of the packaged Spambase.",
    )
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "fireman")


class ServicesSettings(BaseSettings):
    """Settings of ``fireman services``: the local Kafka, InfluxDB, MLflow and Airflow servers, and the
    PostgreSQL beneath MLflow and Airflow when it is enabled."""

    model_config = _config("FIREMAN_SERVICES_")

    start_timeout_s: float = 120.0
    stop_timeout_s: float = 30.0
    state: StateSettings = Field(default_factory=StateSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    influxdb: InfluxSettings = Field(default_factory=InfluxSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    airflow: AirflowSettings = Field(default_factory=AirflowSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
