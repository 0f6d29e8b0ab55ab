"""A benchmark started without its servers says which are down in one line (exit 2), no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import free_port


@pytest.mark.parametrize("bench", ["scorer", "scale-out"])
def test_a_bench_without_its_servers_names_them_and_exits_2(bench: str) -> None:
    kafka, influx, mlflow = free_port(), free_port(), free_port()  # nothing listens on them
    env = {
        **os.environ,
        "FIREMAN_KAFKA_PORT": str(kafka),
        "FIREMAN_INFLUXDB_URL": f"http://127.0.0.1:{influx}",
        "FIREMAN_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow}",
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [sys.executable, "-m", "fireman.cli", "bench", bench],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1, message
    for down in (f"kafka at 127.0.0.1:{kafka}", f"influxdb at http://127.0.0.1:{influx}", f":{mlflow}"):
        assert down in message
    assert "fireman services start" in message
