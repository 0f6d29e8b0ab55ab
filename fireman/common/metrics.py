"""Prometheus metrics of the long-running processes, read from the statistics they already keep.

A consumer's hot loop already counts what it does (``SinkStats``, ``ScorerStats``, ``MonitorStats``);
here those counts are turned into metric families when Prometheus scrapes, so exposing them costs the
loop nothing. Each process serves its own registry on its own port (``FIREMAN_<SERVICE>_METRICS_PORT``,
0 to switch it off); a port already taken turns metrics off with one error line instead of stopping the
consumer, whose work matters more than its metrics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest, multiprocess, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

PREFIX = "fireman"
Labelled = Mapping[tuple[str, ...], float]  # label values -> value


@dataclass
class Snapshot:
    """What a process reports at one scrape: plain numbers, and labelled ones (per partition, version)."""

    counters: Mapping[str, float] = field(default_factory=dict)
    gauges: Mapping[str, float | None] = field(default_factory=dict)
    labelled_gauges: Mapping[str, tuple[tuple[str, ...], Labelled]] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    name: str
    help: str


class StatsCollector(Collector):
    """Metric families of one process (``fireman_<service>_<name>``), built from ``read()`` at each scrape."""

    def __init__(self, service: str, families: list[Family], read: Callable[[], Snapshot]) -> None:
        self.service = service
        self.help = {family.name: family.help for family in families}
        self.read = read

    def collect(self) -> Iterator[Metric]:
        snapshot = self.read()
        for name, value in snapshot.counters.items():
            yield CounterMetricFamily(self._name(name), self._help(name), value=value)
        for name, gauge in snapshot.gauges.items():
            if gauge is not None:
                yield GaugeMetricFamily(self._name(name), self._help(name), value=gauge)
        for name, (labels, values) in snapshot.labelled_gauges.items():
            family = GaugeMetricFamily(self._name(name), self._help(name), labels=list(labels))
            for label_values, value in values.items():
                family.add_metric(list(label_values), value)
            yield family

    def _name(self, name: str) -> str:
        return f"{PREFIX}_{self.service}_{name}"

    def _help(self, name: str) -> str:
        return self.help.get(name, name.replace("_", " "))


class MetricsServer:
    """The ``/metrics`` endpoint of one process, on a thread of its own."""

    def __init__(self, collector: Collector, host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.host = host
        self.port = port
        self._shutdown: Callable[[], None] | None = None

    def start(self) -> bool:
        """Serve; False (logged) when switched off (port 0) or the port is taken."""
        if self.port == 0:
            return False
        try:
            server, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            log.error("metrics off: cannot listen on %s:%d (%s)", self.host, self.port, exc)
            return False
        self._shutdown = server.shutdown
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return True

    def stop(self) -> None:
        if self._shutdown is not None:
            self._shutdown()
            self._shutdown = None

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def exposition(registry: CollectorRegistry) -> bytes:
    """The text format of ``registry``; summed over every worker process when they share a directory
    (``PROMETHEUS_MULTIPROC_DIR``, set before a multi-worker server starts its workers)."""
    if os.environ.get(MULTIPROCESS_DIR):
        merged = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)
    return generate_latest(registry)
