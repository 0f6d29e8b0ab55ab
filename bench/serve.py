"""`fireman bench serve`: latency of `fireman serve` at a fixed request rate, 1 row and 100 rows a request.

The server is a real `fireman serve` process answering with a real production model (the training
defaults, trained and promoted under a registered model of the benchmark's own). The load is
open-loop: request i is sent at start + i / rate whether or not earlier ones were answered, on as
many keep-alive connections as are needed, and its latency runs from that scheduled time to the last
byte of the answer. A server that falls behind therefore shows its queueing in the latency instead
of quietly slowing the load down (the coordinated-omission mistake of a closed loop).
"""

from __future__ import annotations

import asyncio
import os
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
from fireman.bench.workload import spambase_rows, train_production
from fireman.common.model_registry import RegistryClient
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import DatasetSettings, MlflowSettings

BENCH_MODEL = "fireman-bench-serve"
MAX_CONNECTIONS = 256


@dataclass
class BenchOptions:
    rate: float = 200.0
    duration_s: float = 20.0
    warmup_s: float = 3.0
    rows: list[int] = field(default_factory=lambda: [1, 100])


@dataclass
class Result:
    rows: int
    rate: float
    sent: int
    errors: int
    latencies_ms: list[float]
    server_cpu: float  # cores the server used on average

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def p50_ms(self) -> float:
        return self.percentile(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile(99)


def infer_body(matrix: np.ndarray, request_id: str | None = None) -> bytes:
    """A V2 inference request: the rows as one FP64 [n, 57] tensor, flat, missing values as null."""
    request: dict[str, object] = {
        "inputs": [
            {"name": "features", "datatype": "FP64", "shape": list(matrix.shape), "data": matrix.ravel()}
        ]
    }
    if request_id is not None:
        request["id"] = request_id
    # orjson writes NaN as null, which is how JSON says "missing".
    return orjson.dumps(request, option=orjson.OPT_SERIALIZE_NUMPY)


async def _open_loop(port: int, requests: list[bytes], options: BenchOptions) -> tuple[int, int, list[float]]:
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened = 0
    latencies: list[float] = []
    errors = 0
    interval = 1.0 / options.rate
    total = int((options.warmup_s + options.duration_s) * options.rate)
    measured_from = int(options.warmup_s * options.rate)
    gate = asyncio.Semaphore(MAX_CONNECTIONS)

    async def one(index: int, scheduled: float) -> None:
        nonlocal opened, errors
        async with gate:
            if idle:
                reader, writer = idle.pop()
            else:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                opened += 1
            writer.write(requests[index % len(requests)])
            status, _ = await read_response(reader)
            done = time.perf_counter()
            idle.append((reader, writer))
        if index < measured_from:
            return
        if status == 200:
            latencies.append((done - scheduled) * 1000)
        else:
            errors += 1

    start = time.perf_counter() + 0.1
    tasks = []
    for index in range(total):
        scheduled = start + index * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    return total - measured_from, errors, latencies


def _run_scenario(
    port: int, path: str, matrix: np.ndarray, rows: int, options: BenchOptions, proc: subprocess.Popen
) -> Result:
    import uvloop

    # Up to 64 different requests, cycled: distinct rows without building thousands of bodies.
    bodies = [infer_body(matrix[i * rows : (i + 1) * rows]) for i in range(min(64, len(matrix) // rows))]
    requests = [post(port, path, body) for body in bodies]
    cpu_before, wall_before = cpu_seconds(proc), time.perf_counter()
    sent, errors, latencies = uvloop.run(_open_loop(port, requests, options))
    cpu = (cpu_seconds(proc) - cpu_before) / (time.perf_counter() - wall_before)
    return Result(rows, options.rate, sent, errors, latencies, cpu)


def run_bench(options: BenchOptions, console: Console | None = None) -> list[Result]:
    console = console or Console()
    mlflow = MlflowSettings().model_copy(update={"model_name": BENCH_MODEL, "experiment": BENCH_MODEL})
    console.print(f"training the production-settings model as {BENCH_MODEL}...")
    version = train_production(mlflow)
    largest = max(options.rows)
    distinct = max(1, min(64, 100_000 // largest))
    frame = spambase_rows(DatasetSettings(), largest * distinct, missing_rate=0.2)
    matrix = frame[list(FEATURE_NAMES)].to_numpy(np.float64)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FIREMAN_SERVE_")}
    env |= {"FIREMAN_SERVE_PORT": str(port), "FIREMAN_MLFLOW_MODEL_NAME": BENCH_MODEL}
    log = Path(tempfile.gettempdir()) / f"fireman-bench-serve-{uuid.uuid4().hex[:8]}.log"
    console.print(
        f"serve bench: model {BENCH_MODEL} version {version}, {options.rate:g} requests/s open-loop, "
        f"{options.duration_s:g} s per scenario after {options.warmup_s:g} s warm-up, {os.cpu_count()} CPUs, "
        f"load average {loadavg()}, log {log}"
    )
    command = [sys.executable, "-m", "fireman.cli", "serve", "--log-level", "WARNING"]
    proc = start_server(command, env, log, f"http://127.0.0.1:{port}/v2/health/ready", "inference server")
    path = f"/v2/models/{BENCH_MODEL}/infer"
    results = []
    try:
        for rows in options.rows:
            results.append(_run_scenario(port, path, matrix, rows, options, proc))
            result = results[-1]
            console.print(
                f"  {rows} row(s)/request: p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                f"{result.errors} errors"
            )
    finally:
        stop(proc)
        # The benchmark's model is of no use afterwards; left behind, it crowds a shared registry.
        with RegistryClient(mlflow) as client:
            client.delete_model(BENCH_MODEL)
    console.print(_table(results))
    console.print(f"load average at the end: {loadavg()} (other processes share these CPUs)")
    return results


def _table(results: list[Result]) -> Table:
    table = Table(
        "rows/request",
        "rate",
        "requests",
        "errors",
        "p50 ms",
        "p99 ms",
        "max ms",
        "server CPU",
        title="fireman serve, open-loop latency",
    )
    for r in results:
        table.add_row(
            str(r.rows),
            f"{r.rate:g}/s",
            f"{r.sent:,}",
            str(r.errors),
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{max(r.latencies_ms, default=float('nan')):.1f}",
            f"{r.server_cpu:.2f} cores",
        )
    return table
