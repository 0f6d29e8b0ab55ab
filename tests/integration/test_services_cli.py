"""`fireman services start|status|stop` as a user runs it, against servers in a private state dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import psutil
import pytest

from fireman.services.process import PidRecord, wait_until
from tests.conftest import free_port, share_kafka_jars

FIREMAN = str(Path(sys.executable).with_name("fireman"))


def run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FIREMAN, "services", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def private_env(home: Path, path: str | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (this process's environment by default) with state dir ``home`` and free server ports."""
    env = dict(os.environ if base is None else base)
    env.update(
        FIREMAN_HOME=str(home),
        FIREMAN_KAFKA_PORT=str(free_port()),
        FIREMAN_KAFKA_CONTROLLER_PORT=str(free_port()),
        FIREMAN_INFLUXDB_PORT=str(free_port()),
        FIREMAN_INFLUXDB_RPC_PORT=str(free_port()),
        FIREMAN_MLFLOW_PORT=str(free_port()),
        COLUMNS="200",
    )
    if path is not None:
        env["PATH"] = path
    return env


def processes_under(home: Path) -> list[psutil.Process]:
    """Every live process whose command line mentions the state dir: what fireman started there."""
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.info["environ"] or {}
        except psutil.Error:
            continue
        ours = str(home) in cmdline or environ.get("FIREMAN_HOME") == str(home)
        if ours and proc.pid != os.getpid() and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def test_start_status_kill_and_stop(tmp_path: Path) -> None:
    home = tmp_path / "home"
    share_kafka_jars(home)
    env = private_env(home)

    started = run(env, "start")
    assert started.returncode == 0, started.stdout + started.stderr
    for name in ("kafka", "influxdb", "mlflow"):
        assert f"{name}: started" in started.stdout

    assert run(env, "status").returncode == 0
    again = run(env, "start")
    assert again.returncode == 0
    assert again.stdout.count("already running") == 3

    influx = PidRecord.read(home / "influxdb" / "influxdb.pid")
    assert influx is not None
    os.kill(influx.pid, signal.SIGKILL)
    assert wait_until(lambda: influx.process() is None, timeout_s=10)
    status = run(env, "status")
    assert status.returncode == 1
    assert "not healthy: influxdb" in status.stderr

    stopped = run(env, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "kafka: stopped" in stopped.stdout
    assert "mlflow: stopped" in stopped.stdout
    assert wait_until(lambda: not processes_under(home), timeout_s=15), processes_under(home)
    assert run(env, "status").returncode == 1


def test_unknown_service_name_exits_2(tmp_path: Path) -> None:
    result = run(private_env(tmp_path), "start", "--only", "kafka,zookeeper")
    assert result.returncode == 2
    assert "unknown service 'zookeeper'" in result.stderr
    assert "Traceback" not in result.stderr


def test_taken_port_names_the_port_and_its_owner(tmp_path: Path) -> None:
    env = private_env(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env["FIREMAN_INFLUXDB_PORT"] = str(port)
        result = run(env, "start", "--only", "influxdb")
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert f"port {port} is already in use by pid {os.getpid()}" in message
    assert "FIREMAN_INFLUXDB_" in message


@pytest.mark.parametrize("missing", ["java", "mvn"])
def test_missing_java_or_maven_exits_2(tmp_path: Path, missing: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("java", "mvn"):
        located = shutil.which(tool)
        if tool != missing and located:
            (bin_dir / tool).symlink_to(located)
    # A fresh state dir has no jars, so starting Kafka needs both Java and Maven.
    env = private_env(tmp_path / "home", path=f"{bin_dir}:{Path(sys.executable).parent}")
    result = run(env, "start", "--only", "kafka")
    assert result.returncode == 2
    assert f"'{missing}' was not found on PATH" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
