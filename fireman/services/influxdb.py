"""InfluxDB 1.x from Debian's ``influxdb`` package, with a generated config under the state dir.

With ``FIREMAN_INFLUXDB_ADMIN_PASSWORD`` set it runs the way the compose stack runs InfluxDB: auth on,
an admin that owns the database, and fireman's user (``FIREMAN_INFLUXDB_USERNAME``) with read and write
rights on that database only, so every fireman process is tested without admin rights.
"""

from __future__ import annotations

from pathlib import Path

from fireman.common.influx import InfluxClient, InfluxError, quote_identifier, quote_literal
from fireman.common.settings import InfluxSettings
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
  auth-enabled = {auth}
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
            CONFIG_TEMPLATE.format(
                dir=self.dir,
                port=settings.port,
                rpc_port=settings.rpc_port,
                auth="true" if settings.admin_password is not None else "false",
            )
        )

    def command(self) -> list[str]:
        return ["influxd", "-config", str(self.config_path)]

    def healthy(self) -> bool:
        with InfluxClient(self.settings.influxdb) as client:
            return client.ping()

    def after_start(self) -> None:
        settings = self.settings.influxdb
        if settings.admin_password is None:
            with InfluxClient(settings) as client:
                client.create_database()
            return
        set_up_auth(settings)

    def describe(self) -> str:
        return f"{self.settings.influxdb.url} (database {self.settings.influxdb.database})"


def set_up_auth(settings: InfluxSettings) -> None:
    """The admin, the database and fireman's plain user, as the operator of a deployment would make them.

    Idempotent: a restart finds them and only re-applies the password and the grant.
    """
    assert settings.admin_password is not None
    admin_password = settings.admin_password.get_secret_value()
    admin = settings.model_copy(update={"username": settings.admin_username, "password": admin_password})
    with InfluxClient(admin) as client:
        try:
            client.query("SHOW USERS")
        except InfluxError:
            # A fresh server with auth on accepts one statement without credentials: creating the admin.
            with InfluxClient(settings.model_copy(update={"username": None, "password": None})) as anonymous:
                anonymous.execute(
                    f"CREATE USER {quote_identifier(settings.admin_username)} "
                    f"WITH PASSWORD {quote_literal(admin_password)} WITH ALL PRIVILEGES"
                )
        client.create_database()
        user = settings.username
        if not user:
            return
        password = quote_literal(settings.password or "")
        if user not in {row.get("user") for row in client.query("SHOW USERS")}:
            client.execute(f"CREATE USER {quote_identifier(user)} WITH PASSWORD {password}")
        else:
            client.execute(f"SET PASSWORD FOR {quote_identifier(user)} = {password}")
        client.execute(f"GRANT ALL ON {quote_identifier(settings.database)} TO {quote_identifier(user)}")
