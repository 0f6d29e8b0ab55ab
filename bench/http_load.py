"""What the HTTP benchmarks share: the server under test as its own process, and a minimal HTTP client.

The load comes from the benchmark's process on asyncio + uvloop, writing prepared HTTP/1.1 requests
on keep-alive connections and reading the answers with a few lines of parsing. That costs a few tens
of microseconds per request, so on a 2-core machine the CPU goes to the server under test rather than
to the load generator (httpx would need several times the server's CPU for the same request rate).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import psutil

from fireman.bench.workload import cpu_s
from fireman.common.errors import UserError
from fireman.services.process import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    command: list[str], env: dict[str, str], log: Path, ready_url: str, what: str
) -> subprocess.Popen:
    """Start ``command`` in a session of its own and wait until ``ready_url`` answers 200."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def ready() -> bool:
        if proc.poll() is not None:
            raise UserError(f"the {what} exited ({proc.returncode}); see {log}")
        try:
            return httpx.get(ready_url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    if not wait_until(ready, timeout_s=120):
        stop(proc)
        raise UserError(f"the {what} did not become ready at {ready_url}; see {log}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's session, SIGKILL after 30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def cpu_seconds(proc: subprocess.Popen) -> float:
    """CPU time of the process and its children so far."""
    try:
        root = psutil.Process(proc.pid)
        return cpu_s([root, *root.children(recursive=True)])
    except psutil.Error:
        return 0.0


def loadavg() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def post(port: int, path: str, body: bytes) -> bytes:
    """A prepared HTTP/1.1 POST of a JSON body."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one response (the servers under test always send Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return int(head[9:12]), await reader.readexactly(length)
