"""`fireman bench collector`: events/s through the collector, end to end (202 = acked by Kafka).

The collector runs as its own process (``fireman collector``) on fresh topics of the configured
Kafka, once per worker count compared. The load comes from this process: a minimal HTTP/1.1
keep-alive client on asyncio + uvloop, one request in flight per connection. It costs a few tens of
microseconds per request, so on a 2-core machine the CPU goes to the collector and the broker rather
than to the load generator (httpx would need several times the collector's CPU for the same request
rate). Every response is checked to be 202, and the topic's end offsets are compared with the
acknowledged event count.
"""

from __future__ import annotations

import asyncio
import os
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from fireman.bench.http_load import cpu_seconds, free_port, loadavg, post, read_response, start_server, stop
from fireman.bench.workload import bench_topics
from fireman.common.kafka_io import admin_client, delete_topics, end_offsets, ensure_topics
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import KafkaSettings

# uvicorn re-raises SIGTERM after its graceful shutdown; turning it into SystemExit lets the profile
# be written on the way out.
PROFILED_COLLECTOR = """
import cProfile, signal, sys
from fireman.streaming.collector import serve
from fireman.streaming.settings import CollectorSettings
def leave(*_):
    raise SystemExit(0)
signal.signal(signal.SIGTERM, leave)
profile = cProfile.Profile()
profile.enable()
try:
    serve(CollectorSettings())
finally:
    profile.disable()
    profile.dump_stats(sys.argv[1])
"""
SINGLE_TARGET = 2_000
BATCH_TARGET = 30_000
console = Console()


@dataclass
class BenchOptions:
    duration_s: float = 10.0
    concurrency: int = 64
    batch_concurrency: int = 4
    batch_size: int = 1000
    workers: list[int] = field(default_factory=lambda: [1])
    profile: Path | None = None
    warmup_s: float = 2.0


@dataclass
class Result:
    workers: int
    scenario: str
    requests: int
    events: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    collector_cpu: float  # cores used by the collector processes on average

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds


def _events(count: int, seed: int) -> list[dict[str, object]]:
    """Spambase-like events (about 45 of 57 features present), without id or time: the collector adds them."""
    rng = np.random.default_rng(seed)
    values = np.round(rng.exponential(0.5, size=(count, len(FEATURE_NAMES))), 3)
    present = rng.random(values.shape) >= 0.2
    return [
        {
            "sensor_id": f"bench-{i % 50}",
            "features": {
                name: float(v) for name, v, keep in zip(FEATURE_NAMES, row, mask, strict=True) if keep
            },
        }
        for i, (row, mask) in enumerate(zip(values, present, strict=True))
    ]


async def _connection(
    port: int,
    requests: list[bytes],
    events_per_request: int,
    deadline: float,
    measure_from: float,
    sink: dict,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while True:
            start = time.perf_counter()
            if start >= deadline:
                return
            writer.write(requests[i % len(requests)])
            i += 1
            status, _ = await read_response(reader)
            end = time.perf_counter()
            if start < measure_from:
                continue
            if status == 202:
                sink["requests"] += 1
                sink["events"] += events_per_request
                sink["latencies"].append((end - start) * 1000)
            else:
                sink["errors"] += 1
    finally:
        writer.close()


async def _load(
    port: int, bodies: list[bytes], events_per_request: int, concurrency: int, options: BenchOptions
) -> dict:
    requests = [post(port, "/v1/events", body) for body in bodies]
    start = time.perf_counter()
    measure_from = start + options.warmup_s
    deadline = measure_from + options.duration_s
    sink: dict = {"requests": 0, "events": 0, "errors": 0, "latencies": []}
    await asyncio.gather(
        *(
            _connection(
                port, requests[k::concurrency] or requests, events_per_request, deadline, measure_from, sink
            )
            for k in range(concurrency)
        )
    )
    return sink


def _start_collector(
    kafka: KafkaSettings, workers: int, profile: Path | None, log: Path
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        **os.environ,
        "FIREMAN_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "FIREMAN_KAFKA_TOPIC_MEASUREMENTS": kafka.topic_measurements,
        "FIREMAN_KAFKA_TOPIC_LABELS": kafka.topic_labels,
        "FIREMAN_COLLECTOR_PORT": str(port),
        "FIREMAN_COLLECTOR_WORKERS": str(workers),
    }
    env.pop("FIREMAN_COLLECTOR_TOKEN", None)
    command = [sys.executable, "-m", "fireman.cli", "collector"]
    if profile is not None:
        command = [sys.executable, "-c", PROFILED_COLLECTOR, str(profile)]
    return start_server(command, env, log, f"http://127.0.0.1:{port}/readyz", "collector"), port


def _scenario(
    name: str,
    port: int,
    proc: subprocess.Popen,
    workers: int,
    bodies: list[bytes],
    per_request: int,
    concurrency: int,
    options: BenchOptions,
) -> Result:
    cpu_before = cpu_seconds(proc)
    wall_before = time.perf_counter()
    import uvloop

    sink = uvloop.run(_load(port, bodies, per_request, concurrency, options))
    cpu = (cpu_seconds(proc) - cpu_before) / (time.perf_counter() - wall_before)
    return Result(
        workers,
        name,
        sink["requests"],
        sink["events"],
        sink["errors"],
        options.duration_s,
        sink["latencies"],
        cpu,
    )


def run_bench(options: BenchOptions) -> list[Result]:
    tag = uuid.uuid4().hex[:8]
    kafka = bench_topics(KafkaSettings(), f"bench-{{}}-{tag}")
    topics = [kafka.topic_measurements, kafka.topic_labels]
    ensure_topics(kafka, topics)
    events = _events(4000, seed=1)
    singles = [orjson.dumps(event) for event in events]
    batches = [
        orjson.dumps(events[i : i + options.batch_size]) for i in range(0, len(events), options.batch_size)
    ]
    results: list[Result] = []
    log = Path(tempfile.gettempdir()) / f"fireman-bench-collector-{tag}.log"
    console.print(
        f"collector bench: {options.duration_s:.0f} s per scenario after {options.warmup_s:.0f} s warm-up, "
        f"Kafka {kafka.bootstrap_servers}, {os.cpu_count()} CPUs, load average {loadavg()}, log {log}"
    )
    try:
        for workers in options.workers:
            profile = options.profile if workers == 1 else None
            proc, port = _start_collector(kafka, workers, profile, log)
            scenarios = (
                ("single", singles, 1, options.concurrency),
                (f"batch {options.batch_size}", batches, options.batch_size, options.batch_concurrency),
            )
            try:
                for name, bodies, per_request, concurrency in scenarios:
                    results.append(
                        _scenario(name, port, proc, workers, bodies, per_request, concurrency, options)
                    )
                    console.print(_describe(results[-1]))
            finally:
                stop(proc)
        on_kafka = sum(end_offsets(admin_client(kafka), [kafka.topic_measurements]).values())
    finally:
        delete_topics(kafka, topics)
    _report(results, on_kafka)
    # Of the single-worker collector only: cProfile sees one process.
    if options.profile is not None and options.profile.is_file():
        console.print(
            f"\ncProfile of the collector's event-loop thread (top 25 by own time): {options.profile}"
        )
        pstats.Stats(str(options.profile)).sort_stats("tottime").print_stats(25)
    return results


def _describe(result: Result) -> str:
    return (
        f"  workers={result.workers} {result.scenario}: {result.events_per_s:,.0f} events/s "
        f"({result.requests_per_s:,.0f} req/s, {result.errors} errors)"
    )


def _report(results: list[Result], on_kafka: int) -> None:
    table = Table(
        "workers",
        "scenario",
        "req/s",
        "events/s",
        "p50 ms",
        "p99 ms",
        "collector CPU",
        "target",
        "vs target",
    )
    for result in results:
        target = SINGLE_TARGET if result.scenario == "single" else BATCH_TARGET
        latencies = np.array(result.latencies_ms or [0.0])
        table.add_row(
            str(result.workers),
            result.scenario,
            f"{result.requests_per_s:,.0f}",
            f"{result.events_per_s:,.0f}",
            f"{np.percentile(latencies, 50):.1f}",
            f"{np.percentile(latencies, 99):.1f}",
            f"{result.collector_cpu:.2f} cores",
            f"{target:,}",
            f"{result.events_per_s / target:.2f}x",
        )
    console.print(table)
    console.print(f"load average at the end: {loadavg()} (other processes share these CPUs)")
    acknowledged = sum(r.events for r in results)
    console.print(
        f"records on the Kafka topic: {on_kafka:,} (>= {acknowledged:,} acknowledged in the measured windows;"
        " the rest are warm-up)"
    )
