"""Parts of the product running beside a test: on a thread of this process, or as a child process."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from fireman.bench.workload import in_thread


@contextmanager
def on_thread(target: Callable[[threading.Event], object], name: str, join_s: float = 60) -> Iterator[None]:
    """``target(stop)`` (a scorer's, sink's or monitor's run loop) on a daemon thread.

    On exit ``stop`` is set and the thread joined; then, unless the body raised, it is checked to have
    stopped within ``join_s`` and not to have raised.
    """
    errors: list[BaseException] = []

    def body(stop: threading.Event) -> None:
        try:
            target(stop)
        except BaseException as exc:
            errors.append(exc)
            raise

    with in_thread(body, join_s, name) as thread:
        yield
    assert not thread.is_alive(), f"the {name} did not stop"
    assert not errors, f"the {name} crashed: {errors[0]!r}"


def stop_process(
    proc: subprocess.Popen[Any], sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30
) -> int | None:
    """Send ``sig`` and wait for the exit code; if there is none within ``timeout_s``, SIGKILL (None)."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        return None


def answers(url: str) -> bool:
    """A readiness probe: whether GET ``url`` answers 200 (False while nothing listens, or on errors)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
