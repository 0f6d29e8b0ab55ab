"""InfluxDB 1.x from Debian's ``influxdb`` package, with a generated config under the state dir."""

from __future__ import annotations

from pathlib import Path

from fireman.common.influx import InfluxClient
from fireman.services.base import LocalService, require_executable

CONFIG_TEMPLATE = """\
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{dir}/meta"

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false

[coordinator]
  write-timeout = "10s"

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = false
  log-enabled = false
  max-row-limit = 0
  max-body-size = 0

[logging]
  level = "warn"

[continuous_queries]
  enabled = false
"""


class InfluxService(LocalService):
    name = "influxdb"

    def ports(self) -> list[int]:
        return [self.settings.influxdb.port, self.settings.influxdb.rpc_port]

    @property
    def config_path(self) -> Path:
        return self.dir / "influxdb.conf"

    def check_prerequisites(self) -> None:
        require_executable("influxd", "Run 'make setup' (installs Debian's influxdb package; needs root).")

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        settings = self.settings.influxdb
        self.config_path.write_text(
            CONFIG_TEMPLATE.format(dir=self.dir, port=settings.port, rpc_port=settings.rpc_port)
        )

    def command(self) -> list[str]:
        return ["influxd", "-config", str(self.config_path)]

    def healthy(self) -> bool:
        with InfluxClient(self.settings.influxdb) as client:
            return client.ping()

    def after_start(self) -> None:
        with InfluxClient(self.settings.influxdb) as client:
            client.create_database()

    def describe(self) -> str:
        return f"{self.settings.influxdb.url} (database {self.settings.influxdb.database})"
