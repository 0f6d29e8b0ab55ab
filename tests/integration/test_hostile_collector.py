"""The collector (a real ``fireman collector`` process, loopback only) against hostile clients.

Schemathesis fuzzes every operation of its own ``/openapi.json`` (schema-valid and schema-breaking
requests, bounded): no 5xx, and nothing malformed is accepted. Oversize bodies, slow clients that
never finish a request, and a flood of connections leave it serving other clients with bounded memory.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from pydantic import BaseModel

from fireman.common.kafka_io import ensure_topics
from fireman.common.schema import FEATURE_NAMES, EventIn, LabelIn
from fireman.common.settings import KafkaSettings
from tests.conftest import free_port
from tests.integration.faults_support import wait_for
from tests.support.background import answers, stop_process

pytestmark = pytest.mark.integration

FIREMAN = Path(sys.executable).parent / "fireman"
MAX_BODY = 1024 * 1024
MAX_BATCH = 100
# Memory an attack may add to the collector's RSS; its baseline is ~100 MB.
RSS_BUDGET = 64 * 1024 * 1024
SLOW_CLIENTS = 60
FLOOD = 300


@dataclass
class Collector:
    url: str
    port: int
    process: psutil.Process

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def fds(self) -> int:
        return int(self.process.num_fds())


@pytest.fixture(scope="module")
def collector(kafka_service: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    tag = uuid.uuid4().hex[:10]
    kafka = kafka_service.model_copy(
        update={"topic_measurements": f"hostile-m-{tag}", "topic_labels": f"hostile-l-{tag}"}
    )
    ensure_topics(kafka, [kafka.topic_measurements, kafka.topic_labels])
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FIREMAN_")}
    env.update(
        {
            "FIREMAN_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
            "FIREMAN_KAFKA_TOPIC_MEASUREMENTS": kafka.topic_measurements,
            "FIREMAN_KAFKA_TOPIC_LABELS": kafka.topic_labels,
            "FIREMAN_COLLECTOR_HOST": "127.0.0.1",
            "FIREMAN_COLLECTOR_PORT": str(port),
            "FIREMAN_COLLECTOR_MAX_BODY_BYTES": str(MAX_BODY),
            "FIREMAN_COLLECTOR_MAX_BATCH": str(MAX_BATCH),
        }
    )
    log = tmp_path_factory.mktemp("collector") / "collector.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen([str(FIREMAN), "collector"], env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: answers(f"{url}/readyz"), 60, f"the collector to be ready: {log.read_text()[-2000:]}"
        )
        yield Collector(url, port, psutil.Process(proc.pid))
    finally:
        stop_process(proc)


def event(i: int = 0) -> dict[str, Any]:
    return {"sensor_id": f"hostile-{i % 3}", "features": {"Cont_1": float(i), "Cont_2": None}}


def served(collector: Collector) -> None:
    """A well-behaved client still gets its events accepted."""
    response = httpx.post(f"{collector.url}/v1/events", json=[event(1), event(2)], timeout=30)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 2


def warm(collector: Collector) -> int:
    for _ in range(5):
        served(collector)
    return collector.rss()


def conforms(model: type[BaseModel]) -> Callable[[Any], bool]:
    """Whether an item is valid under ``model``, the collector's own contract for the body."""

    def valid(item: Any) -> bool:
        try:
            model.model_validate(item)
        except (ValueError, TypeError):
            return False
        return True

    return valid


def is_legacy_body(item: Any) -> bool:
    return isinstance(item, dict) and all(
        key in FEATURE_NAMES and (value is None or (type(value) in (int, float) and math.isfinite(value)))
        for key, value in item.items()
    )


CONTRACT = {"/v1/events": conforms(EventIn), "/v1/labels": conforms(LabelIn)}


def fuzz_operation(collector: Collector, operation: Any, mode: Any, tried: dict[str, int]) -> None:
    from hypothesis import HealthCheck, given, settings

    label = f"{operation.label} {mode.value}"
    valid = CONTRACT.get(operation.path, is_legacy_body)

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        response = case.call(base_url=collector.url, timeout=30)
        tried[label] = tried.get(label, 0) + 1
        assert response.status_code < 500, (label, case.body, response.status_code, response.text)
        if response.status_code != 202:
            return
        body = case.body
        items = body if isinstance(body, list) and valid is not is_legacy_body else [body]
        assert items and all(valid(item) for item in items), ("accepted malformed", label, body)
        assert response.json()["accepted"] == len(items)

    fuzz()


def test_schemathesis_finds_no_5xx_and_no_accepted_malformed_request(collector: Collector) -> None:
    import schemathesis
    from schemathesis.generation import GenerationMode

    document = httpx.get(f"{collector.url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    tried: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # raises on an invalid schema
        # GET /healthz etc. take no input, so there is nothing to break in them.
        modes = [GenerationMode.POSITIVE]
        if operation.method.upper() == "POST":
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            fuzz_operation(collector, operation, mode, tried)
    print(f"\n[schemathesis] cases per operation: {tried}")
    assert {"POST /v1/events negative", "POST /v1/labels negative"} <= tried.keys()
    served(collector)


def test_oversize_bodies_are_refused_without_being_buffered(collector: Collector) -> None:
    baseline = warm(collector)
    huge = b"[" + b",".join([b'{"sensor_id":"s","features":{"Cont_1":1.0}}'] * 200_000) + b"]"
    assert len(huge) > 8 * MAX_BODY
    with httpx.Client(base_url=collector.url, timeout=60) as client:
        declared = client.post("/v1/events", content=huge, headers={"content-type": "application/json"})
        assert declared.status_code == 413, declared.text

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(huge), 64 * 1024):
                yield huge[start : start + 64 * 1024]

        streamed = client.post("/v1/events", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413, streamed.text
        too_many = client.post("/v1/events", json=[event(i) for i in range(MAX_BATCH + 1)])
        assert too_many.status_code == 413 and str(MAX_BATCH) in too_many.json()["detail"]
    # A Content-Length of a terabyte is refused from the header, before any body is read.
    with raw_connection(collector) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1000000000000\r\n\r\n[]"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    served(collector)
    assert collector.rss() - baseline < RSS_BUDGET, (baseline, collector.rss())


def raw_connection(collector: Collector) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", collector.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return sock


@contextmanager
def attack(collector: Collector, whose: str) -> Iterator[list[socket.socket]]:
    """The sockets of an attack, closed afterwards; then the collector must have released ``whose``
    sockets, still serve a well-behaved client, and have grown by less than ``RSS_BUDGET``."""
    baseline = warm(collector)
    fds_before = collector.fds()
    sockets: list[socket.socket] = []
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
    wait_for(lambda: collector.fds() <= fds_before + 5, 30, f"{whose} sockets to be released")
    served(collector)
    assert collector.rss() - baseline < RSS_BUDGET, (baseline, collector.rss())


def test_slow_clients_that_never_finish_do_not_block_others(collector: Collector) -> None:
    with attack(collector, "the slow clients'") as sockets:
        for i in range(SLOW_CLIENTS):
            sock = raw_connection(collector)
            if i % 2:  # headers only, half sent
                sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Ty")
            else:  # complete headers, a body that stops a few bytes in
                sock.sendall(
                    b"POST /v1/events HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                    b'content-length: 100000\r\n\r\n[{"sensor_id": "slow", "feat'
                )
            sockets.append(sock)
        for _ in range(3):
            served(collector)
        assert httpx.get(f"{collector.url}/healthz", timeout=10).status_code == 200


def test_a_flood_of_connections_is_served_and_released(collector: Collector) -> None:
    with attack(collector, "the flood's") as sockets:
        sockets.extend(raw_connection(collector) for _ in range(FLOOD))
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        for sock in sockets:
            sock.sendall(request)
        served(collector)  # while FLOOD requests are in the collector's queue
        answered = 0
        for sock in sockets:
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
            answered += reply.startswith(b"HTTP/1.1 200")
        assert answered == FLOOD
