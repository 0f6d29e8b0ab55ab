"""A CPU share for a monitor thread: it works as fast as it likes, then pauses to pay back.

Two threads keep to one: the reading thread (``intake_cpu_budget``) and the drift worker
(``drift_cpu_budget``), which waits after each Evidently test.

The monitor is a background consumer on the scorer's machine. Read at full speed through a burst, it
takes a core's worth of CPU, cache and broker fetches from the scorer, which lost 22-39% of its
throughput to it on 2 cores (docs/performance-notes.md, eighth round). Paced to a share of a core,
it falls behind during the burst and catches up after it: nothing is skipped, windows still close
by event time and merge when they wait, so every event is still tested, later.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Idle time banked as credit, at most: enough to take a polled batch without pausing after a quiet
# spell, too little to let a burst run unpaced.
CREDIT_S = 0.05


class CpuShare:
    """At most ``share`` of one core, on average, for the thread that calls :meth:`pause_s`."""

    def __init__(
        self,
        share: float,
        cpu: Callable[[], float] = time.thread_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"a share of one core is in (0, 1], not {share}")
        self.share = share  # may change between pauses: see pause_s
        self._cpu, self._clock = cpu, clock
        self._cpu_mark, self._wall_mark = cpu(), clock()
        self._debt = 0.0  # CPU seconds spent beyond the share; negative: credit

    def pause_s(self, share: float | None = None) -> float:
        """How long to pause now so that the CPU spent since the thread began stays within the share.

        ``share``, when given, is the share from now on, and for the stretch since the last call: a
        thread that must give way (:mod:`fireman.monitoring.priority`) pays its debt at the lower share.
        """
        if share is not None:
            self.share = share
        cpu, wall = self._cpu(), self._clock()
        allowed = self.share * (wall - self._wall_mark)
        self._debt = max(-CREDIT_S, self._debt + (cpu - self._cpu_mark) - allowed)
        self._cpu_mark, self._wall_mark = cpu, wall
        if self.share >= 1:
            return 0.0
        return self._debt / self.share if self._debt > 0 else 0.0
