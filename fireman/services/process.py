"""Start, watch and stop the local server processes that fireman owns.

A started process gets its own session (so a stop reaches its children too) and a pid file holding
its pid and start time; ``stop`` only signals a pid whose start time still matches, so a recycled
pid is never killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from fireman.common.errors import UserError


class ServiceError(UserError):
    """A service could not be started or is misconfigured; the message says what to do."""


@dataclass(frozen=True)
class PidRecord:
    pid: int
    create_time: float
    command: list[str]

    @classmethod
    def read(cls, path: Path) -> PidRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(pid=int(data["pid"]), create_time=float(data["create_time"]), command=data["command"])
        except (OSError, ValueError, KeyError):
            return None

    def write(self, path: Path) -> None:
        # Whole or not at all: a reader (status, stop) must never see half a record.
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(
            json.dumps({"pid": self.pid, "create_time": self.create_time, "command": self.command})
        )
        partial.replace(path)

    def forget(self, path: Path) -> None:
        """Remove ``path`` if it still records this process."""
        if PidRecord.read(path) == self:
            path.unlink(missing_ok=True)

    def process(self) -> psutil.Process | None:
        """The recorded process if it is still the one we started, else None."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None


def port_owner(port: int, host: str = "127.0.0.1") -> str | None:
    """Describe who listens on ``port`` (``"pid 123 (java)"``), ``"unknown process"``, or None if free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((host, port)) != 0:
            return None
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                try:
                    return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
                except psutil.Error:
                    return f"pid {conn.pid}"
    except psutil.Error:
        pass
    return "unknown process"


@contextlib.contextmanager
def exclusive(lock_path: Path, timeout_s: float, on_wait: Callable[[str], object]) -> Iterator[None]:
    """Hold ``lock_path``'s lock, waiting up to ``timeout_s`` for another holder to finish.

    Two starts on one state dir would otherwise both find the ports free and both spawn; the loser
    exits on a taken port, and its pid file replaces the winner's, leaving a server no stop can find.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as handle:

        def take() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        if not take():
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            on_wait(f"waiting for another fireman start or stop in {lock_path.parent} (pid {holder})")
            if not wait_until(take, timeout_s, interval_s=0.2):
                raise ServiceError(
                    f"another fireman start or stop in {lock_path.parent} (pid {holder}) still runs after "
                    f"{timeout_s:.0f}s; wait for it, or stop it"
                )
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll ``check`` until it is true or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64_000))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log yet)"
    return "\n".join(text.splitlines()[-lines:])


def spawn(
    command: Sequence[str], log_path: Path, pid_path: Path, env: Mapping[str, str], cwd: Path
) -> PidRecord:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    record = PidRecord(
        pid=proc.pid, create_time=psutil.Process(proc.pid).create_time(), command=list(command)
    )
    record.write(pid_path)
    return record


def terminate(record: PidRecord, timeout_s: float, stop_signal: signal.Signals = signal.SIGTERM) -> bool:
    """Signal the recorded process group (SIGTERM unless told), SIGKILL it after ``timeout_s``.

    True if it was running.
    """
    proc = record.process()
    if proc is None:
        return False
    group = _group_members(proc)
    _signal_group(proc.pid, stop_signal)
    _, alive = psutil.wait_procs(group, timeout=timeout_s)
    if alive:
        _signal_group(proc.pid, signal.SIGKILL)
        for member in alive:
            with contextlib.suppress(psutil.Error):
                member.kill()
        psutil.wait_procs(alive, timeout=5)
    return True


def _group_members(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(os.getpgid(pid), sig)
