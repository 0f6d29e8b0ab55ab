"""Every command answers a bad setting with one line naming the variable, and exit code 2.

Each case runs ``fireman`` as a user does, in a new process with one bad variable in its
environment; the command must stop at its settings, before it reaches any server.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CASES = [
    (("sink",), "FIREMAN_SINK_BATCH_SIZE", "lots"),
    (("sink",), "FIREMAN_KAFKA_PORT", "abc"),
    (("scorer",), "FIREMAN_KAFKA_PORT", "abc"),
    (("serve",), "FIREMAN_SERVE_PORT", "abc"),
    (("serve",), "FIREMAN_SERVE_PORT", "0"),
    (("collector",), "FIREMAN_COLLECTOR_PORT", "65536"),
    (("sink",), "FIREMAN_INFLUXDB_PORT", "-1"),
    (("serve",), "FIREMAN_MLFLOW_PORT", "abc"),
    (("monitor",), "FIREMAN_INFLUXDB_PORT", "abc"),
    (("collector",), "FIREMAN_KAFKA_PORT", "abc"),
    (("dashboard",), "FIREMAN_KAFKA_PORT", "abc"),
    (("train",), "FIREMAN_MLFLOW_PORT", "abc"),
    (("models",), "FIREMAN_MLFLOW_PORT", "abc"),
    (("promote", "1"), "FIREMAN_MLFLOW_PORT", "abc"),
    (("rollback",), "FIREMAN_MLFLOW_PORT", "abc"),
    (("services", "status"), "FIREMAN_INFLUXDB_PORT", "abc"),
    (("up",), "FIREMAN_KAFKA_PORT", "abc"),
]


@pytest.mark.parametrize(("command", "variable", "value"), CASES, ids=lambda v: str(v))
def test_a_bad_setting_is_one_line_naming_the_variable(
    command: tuple[str, ...], variable: str, value: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fireman.cli", *command],
        env={**os.environ, variable: value, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, (done.stdout[-1000:], done.stderr[-2000:])
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: invalid setting {variable}={value!r}: "), lines[0]


def test_sasl_without_credentials_names_the_missing_variables() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fireman.cli", "scorer"],
        env={**os.environ, "FIREMAN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, (done.stdout[-1000:], done.stderr[-2000:])
    assert done.stderr.splitlines() == [
        "error: invalid setting FIREMAN_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs FIREMAN_KAFKA_SASL_USERNAME "
        "and FIREMAN_KAFKA_SASL_PASSWORD"
    ]


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_option_out_of_range_is_one_line(port: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fireman.cli", "serve", "--port", port],
        env={**os.environ, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, (done.stdout[-1000:], done.stderr[-2000:])
    assert done.stderr.splitlines() == [
        f"error: invalid setting port (command line)={port}: "
        + (
            "Input should be less than or equal to 65535"
            if port == "99999"
            else "Input should be greater than or equal to 1"
        )
    ]
