"""Container healthchecks for the project image (docker-compose.yml), exit 0 when healthy.

    python infra/docker/healthcheck.py http URL     the URL answers 2xx or 3xx within 5 s
    python infra/docker/healthcheck.py group GROUP  consumer group GROUP has a live member

The slim Python image has no curl, hence the HTTP mode. A consumer (sink, scorer, monitor) is
healthy when its group has members in a stable or rebalancing state: the process is polling Kafka.
The broker address comes from the same FIREMAN_KAFKA_* settings the consumers use.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

LIVE_STATES = {"STABLE", "PREPARING_REBALANCING", "COMPLETING_REBALANCING"}


def check_http(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} unreachable: {exc}"
    return None if 200 <= status < 400 else f"{url} answered {status}"


def check_group(group: str) -> str | None:
    from confluent_kafka import KafkaException

    from fireman.common.kafka_io import admin_client
    from fireman.common.settings import KafkaSettings

    settings = KafkaSettings()
    try:
        admin = admin_client(settings, timeout_ms=5000)
        described = admin.describe_consumer_groups([group])[group].result()
    except KafkaException as exc:
        return f"Kafka at {settings.bootstrap_servers}: {exc}"
    state = described.state.name if described.state is not None else "UNKNOWN"
    members = described.members or []
    if state in LIVE_STATES and members:
        return None
    return f"group {group} is {state} with {len(members)} member(s)"


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("http", "group"):
        print(__doc__, file=sys.stderr)
        return 2
    problem = check_http(argv[2]) if argv[1] == "http" else check_group(argv[2])
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
