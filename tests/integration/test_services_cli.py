"""`fireman services start|status|stop` as a user runs it, against servers in a private state dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from fireman.common.settings import KafkaSettings, ServicesSettings
from fireman.services.manager import ServiceManager
from fireman.services.process import PidRecord, port_owner, wait_until
from tests.conftest import REPO_ROOT, free_port, share_kafka_jars

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


def test_starts_at_once_share_one_server_that_stop_stops(tmp_path: Path) -> None:
    """``fireman up`` in one terminal and a test session in another start one state dir at once.

    Threads released together by a barrier (each manager locks through its own file handle, as
    separate processes do) reach the port check together; Kafka, seconds from spawn to listening,
    leaves every one of them time to find the port free.
    """
    settings = ServicesSettings(
        state={"home": tmp_path}, kafka=KafkaSettings(port=free_port(), controller_port=free_port())
    )
    share_kafka_jars(tmp_path)
    said: list[str] = []
    together = threading.Barrier(3)

    def start() -> None:
        manager = ServiceManager(settings, REPO_ROOT)
        together.wait()
        manager.start(["kafka"], on_progress=said.append)

    try:
        with ThreadPoolExecutor(3) as pool:
            for started in [pool.submit(start) for _ in range(3)]:
                started.result(timeout=180)
        outcomes = sorted(
            line.split(" at ")[0].split(" in ")[0] for line in said if line.startswith("kafka:")
        )
        assert outcomes == ["kafka: already running"] * 2 + ["kafka: started"], said

        record = PidRecord.read(tmp_path / "kafka" / "kafka.pid")
        assert record is not None and record.process() is not None
        assert port_owner(settings.kafka.port) == f"pid {record.pid} (java)"

        stopped: list[str] = []
        ServiceManager(settings, REPO_ROOT).stop(["kafka"], on_progress=stopped.append)
        assert stopped == ["kafka: stopped"]
        assert port_owner(settings.kafka.port) is None
    finally:
        # Without the lock, the server a lost pid file hides would outlive the test.
        for proc in processes_under(tmp_path):
            proc.kill()


def test_stop_names_a_server_it_did_not_start(tmp_path: Path) -> None:
    env = private_env(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env["FIREMAN_INFLUXDB_PORT"])))
        squatter.listen()
        stopped = run(env, "stop", "--only", "influxdb")
    assert stopped.returncode == 0, stopped.stderr
    port = env["FIREMAN_INFLUXDB_PORT"]
    message = " ".join(stopped.stdout.split())
    assert f"influxdb: not started by fireman (port {port} is in use by pid {os.getpid()}" in message


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


@pytest.mark.parametrize("command", ["start", "stop", "status"])
@pytest.mark.parametrize("only", ["", ",,"])
def test_an_empty_only_is_an_error_not_every_service(tmp_path: Path, command: str, only: str) -> None:
    result = run(private_env(tmp_path), command, "--only", only)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.splitlines() == [
        "error: --only names no service; choose from kafka, influxdb, mlflow, airflow"
    ]
    assert result.stdout == ""
