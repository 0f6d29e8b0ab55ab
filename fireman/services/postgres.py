"""PostgreSQL from Debian's ``postgresql`` package, for MLflow's and Airflow's metadata.

Only a service with ``FIREMAN_POSTGRES_ENABLED``. The cluster lives in ``$FIREMAN_HOME/postgres/data``
and is made by ``initdb`` on the first start. PostgreSQL refuses to run as root, which is how
``fireman services`` runs in containers and CI: there initdb and the server run as the ``postgres`` OS
user that the Debian package creates, the data directory is that user's, and every directory above it
must let that user pass (``grant_passage``).

The server listens on 127.0.0.1 and on a unix socket inside the data directory (mode 0700), which
only the server's OS user and root can reach: the superuser is trusted there, and fireman creates its
role and databases through it. Over TCP the superuser is refused; fireman's role logs in with its
password (scram-sha-256) or, with none set, is trusted from 127.0.0.1, as the SQLite files it
replaces were readable.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fireman.common.settings import LOOPBACK
from fireman.services.base import LocalService, require_executable
from fireman.services.process import ServiceError

if TYPE_CHECKING:
    from psycopg2.extensions import connection

SUPERUSER = "postgres"
OS_USER = "postgres"  # the Debian package's
INSTALL_HINT = (
    "Run 'make setup' (installs Debian's postgresql package; needs root), or apt-get install postgresql."
)
# A unix socket's path must fit sun_path (108 bytes with its NUL).
SOCKET_PATH_MAX = 107
PG_HBA = """\
# Written by `fireman services` before every start; edits are lost.
local all all trust
host all {superuser} 127.0.0.1/32 reject
host all all 127.0.0.1/32 {method}
"""


def server_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: PATH first, then Debian's newest version.

    Debian keeps the server's programs in /usr/lib/postgresql/<major>/bin, off PATH.
    """
    candidates = [
        Path(found).resolve().parent for name in ("postgres", "initdb") if (found := shutil.which(name))
    ]
    debian = [path for path in Path("/usr/lib/postgresql").glob("*/bin") if path.parent.name.isdigit()]
    candidates += sorted(debian, key=lambda path: int(path.parent.name), reverse=True)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in ("initdb", "postgres")):
            return directory
    return None


def can_pass(mode: int, owner: int, group: int, uid: int, gids: set[int]) -> bool:
    """Whether ``uid`` may search a directory: only the first class that applies (owner, group, other)."""
    if uid == owner:
        return bool(mode & stat.S_IXUSR)
    if group in gids:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


class PostgresService(LocalService):
    name = "postgres"
    # Fast shutdown. SIGTERM is PostgreSQL's smart shutdown, which waits for every session to end, and
    # MLflow's and Airflow's pools keep theirs open; the server's children are in sessions of their own,
    # so the group signal reaches the postmaster alone, and it ends them.
    stop_signal = signal.SIGINT

    def ports(self) -> list[int]:
        return [self.settings.postgres.port]

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def binaries(self) -> Path:
        found = server_binaries()
        if found is None:
            raise ServiceError(f"PostgreSQL's initdb and postgres were not found. {INSTALL_HINT}")
        return found

    def check_prerequisites(self) -> None:
        if self.settings.postgres.user == SUPERUSER:
            raise ServiceError(
                f"FIREMAN_POSTGRES_USER may not be {SUPERUSER!r}: the superuser logs in through the local "
                "socket only. Name the role MLflow and Airflow use (default: fireman)."
            )
        self.binaries()
        try:
            import psycopg2  # noqa: F401
        except ImportError as error:
            raise ServiceError(
                "psycopg2 is missing: reinstall fireman (it depends on psycopg2-binary), or 'make setup'."
            ) from error
        if self.as_root:
            try:
                pwd.getpwnam(OS_USER)
            except KeyError as error:
                raise ServiceError(
                    f"PostgreSQL refuses to run as root, and there is no {OS_USER!r} user to run it as. "
                    f"{INSTALL_HINT}"
                ) from error
            require_executable(
                "setpriv", "It runs PostgreSQL as the postgres user (apt-get install util-linux)."
            )

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        socket = self.data_dir / f".s.PGSQL.{self.settings.postgres.port}"
        if len(str(socket).encode()) > SOCKET_PATH_MAX:
            raise ServiceError(
                f"PostgreSQL's socket {socket} would be longer than a unix socket path may be "
                f"({SOCKET_PATH_MAX} bytes): set FIREMAN_HOME to a shorter path."
            )
        if self.as_root:
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            self.grant_passage(self.data_dir)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb()
        hba = self.data_dir / "pg_hba.conf"
        method = "trust" if self.settings.postgres.password is None else "scram-sha-256"
        hba.write_text(PG_HBA.format(superuser=SUPERUSER, method=method))
        self._give_to_server_user(hba)

    def _initdb(self) -> None:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._give_to_server_user(self.data_dir)
        command = [
            str(self.binaries() / "initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={SUPERUSER}",
            "--encoding=UTF8",
            "--no-locale",
            "--auth-local=trust",
            "--auth-host=reject",
            "--no-instructions",
        ]
        # initdb removes what it made when it fails, so the next start simply tries again.
        result = subprocess.run(
            self._as_server_user(command), capture_output=True, text=True, check=False, cwd=self.data_dir
        )
        if result.returncode != 0:
            raise ServiceError(
                f"initdb failed for {self.data_dir}:\n{(result.stdout + result.stderr)[-3000:]}"
            )

    def grant_passage(self, target: Path) -> None:
        """Let the server's OS user reach ``target``.

        The state directory may sit below directories only root can enter (pytest's temporary
        directories are 0700). fireman opens its own (FIREMAN_HOME and below) for searching (o+x, not
        listing), and names any directory above FIREMAN_HOME instead of changing it.
        """
        user = pwd.getpwnam(OS_USER)
        gids = {user.pw_gid} | {group.gr_gid for group in grp.getgrall() if OS_USER in group.gr_mem}
        home = self.settings.state.root
        for directory in reversed(target.parents):
            info = directory.stat()
            if can_pass(info.st_mode, info.st_uid, info.st_gid, user.pw_uid, gids):
                continue
            if directory != home and home not in directory.parents:
                raise ServiceError(
                    f"PostgreSQL runs as the {OS_USER!r} user, who cannot enter {directory} "
                    f"(mode {stat.S_IMODE(info.st_mode):o}). Let it pass (chmod o+x {directory}) or set "
                    "FIREMAN_HOME to a directory it can reach."
                )
            directory.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)

    def _give_to_server_user(self, path: Path) -> None:
        if self.as_root:
            user = pwd.getpwnam(OS_USER)
            os.chown(path, user.pw_uid, user.pw_gid)

    def _as_server_user(self, command: list[str]) -> list[str]:
        if not self.as_root:
            return command
        # setpriv execs the program itself, so the pid fireman records is the server's.
        return ["setpriv", f"--reuid={OS_USER}", f"--regid={OS_USER}", "--init-groups", "--", *command]

    def command(self) -> list[str]:
        settings = self.settings.postgres
        server = [
            str(self.binaries() / "postgres"),
            "-D",
            str(self.data_dir),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            f"port={settings.port}",
            "-c",
            f"unix_socket_directories={self.data_dir}",
        ]
        return self._as_server_user(server)

    @contextlib.contextmanager
    def superuser(self, database: str = "postgres") -> Iterator[connection]:
        """A connection as the superuser through the socket in the data directory (autocommit)."""
        import psycopg2

        conn = psycopg2.connect(
            host=str(self.data_dir),
            port=self.settings.postgres.port,
            user=SUPERUSER,
            dbname=database,
            connect_timeout=3,
        )
        try:
            conn.autocommit = True
            yield conn
        finally:
            conn.close()

    def healthy(self) -> bool:
        try:
            import psycopg2
        except ImportError:
            return False  # check_prerequisites says what to install
        try:
            with self.superuser() as conn, conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchone() == (1,)
        except psycopg2.Error:
            return False

    def after_start(self) -> None:
        """fireman's role, with the current password (or none), and its databases; idempotent."""
        from psycopg2 import sql

        settings = self.settings.postgres
        role = sql.Identifier(settings.user)
        password: Any = settings.password.get_secret_value() if settings.password else None
        with self.superuser() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (settings.user,))
            verb = "ALTER" if cursor.fetchone() else "CREATE"
            # PASSWORD NULL removes an earlier one; the server stores a scram-sha-256 hash.
            cursor.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(role), (password,))
            for database in (settings.mlflow_database, settings.airflow_database):
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), role)
                    )

    def describe(self) -> str:
        settings = self.settings.postgres
        return (
            f"postgresql://{settings.user}@{settings.host}:{settings.port} "
            f"(databases {settings.mlflow_database}, {settings.airflow_database})"
        )
