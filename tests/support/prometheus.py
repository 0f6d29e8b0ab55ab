"""A real Prometheus (Debian's ``prometheus`` package) scraping fireman's /metrics endpoints in a test."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from fireman.services.process import wait_until
from tests.conftest import free_port
from tests.support.background import stop_process


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expression: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=10)
        response.raise_for_status()
        return list(response.json()["data"]["result"])

    def value(self, expression: str) -> float | None:
        """The single value of an instant query; None while it has no sample."""
        found = self.query(expression)
        return float(found[0]["value"][1]) if found else None

    def targets(self) -> dict[str, str]:
        """Scrape job -> health (``up``, ``down`` or ``unknown``)."""
        return {job: health for job, (health, _) in self.target_errors().items()}

    def target_errors(self) -> dict[str, tuple[str, str]]:
        """Scrape job -> (health, the last scrape's error)."""
        response = httpx.get(f"{self.url}/api/v1/targets", timeout=10)
        response.raise_for_status()
        active = response.json()["data"]["activeTargets"]
        return {target["labels"]["job"]: (target["health"], target["lastError"]) for target in active}


@contextmanager
def prometheus_scraping(jobs: Mapping[str, str], workdir: Path) -> Iterator[Prometheus]:
    """Prometheus scraping ``jobs`` (name -> host:port, path /metrics) every 2 s, until exit."""
    executable = shutil.which("prometheus")
    assert executable, "prometheus is not installed: run `make setup` (Debian's prometheus package)"
    config = {
        # A loaded 2-core machine can take over a second to answer; the default timeout is 10 s.
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s"},
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": [target]}]} for name, target in jobs.items()
        ],
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                executable,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(ready, timeout_s=60, interval_s=0.25), (workdir / "prometheus.log").read_text()[
            -2000:
        ]
        yield Prometheus(url)
    finally:
        stop_process(process)
