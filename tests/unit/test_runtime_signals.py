"""SIGTERM handling of fireman commands that start other processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.scoring import wait_for

# A command that starts a child and stops it in `finally`, as the benches do.
SCRIPT = textwrap.dedent(
    """
    import signal, subprocess, sys
    from pathlib import Path
    from fireman.common.runtime import unwind_on_sigterm

    if sys.argv[1] == "unwind":
        unwind_on_sigterm()
    child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    Path(sys.argv[2]).write_text(str(child.pid))
    try:
        signal.pause()  # busy with something long, until a signal
    finally:
        child.terminate()
        child.wait()
    """
)


def child_after_sigterm(mode: str, tmp_path: Path) -> bool:
    """Whether the command's child is still running after the command got SIGTERM."""
    pid_file = tmp_path / f"{mode}.pid"
    command = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, mode, str(pid_file)], cwd=Path(__file__).parents[2]
    )
    try:
        assert wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", 30)
        child = int(pid_file.read_text())
        command.send_signal(signal.SIGTERM)
        command.wait(timeout=30)
        alive = not wait_for(lambda: not _running(child), 5)
        if alive:
            os.kill(child, signal.SIGKILL)
        return alive
    finally:
        command.kill()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child that exited but was not reaped yet is a zombie, not running.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][:1] != "Z"


def test_sigterm_runs_finally_blocks_so_children_are_stopped(tmp_path: Path) -> None:
    assert child_after_sigterm("unwind", tmp_path) is False


def test_without_it_sigterm_leaves_the_child_running(tmp_path: Path) -> None:
    # The control: Python's default SIGTERM skips `finally`, which is what the handler is for.
    assert child_after_sigterm("default", tmp_path) is True
