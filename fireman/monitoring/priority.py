"""The monitor gives way to the scorer while the scorer is behind.

Both run on the same machine, and only the scorer is on the path from a sensor to a prediction. Its
CPU budgets already keep the monitor to a share of a core, but through a burst even 0.1 of a core for
the reading thread cost the scorer 5-10% of its throughput on 2 cores (docs/decisions.md). So while
the scorer's consumer group is more than ``yield_lag`` events behind, each monitor thread keeps to
``yield_cpu_budget`` instead of its own budget. It still reads and tests, at the lower share: under a
sustained overload drift is still reported, later, and windows that wait merge as they always do.
Once the scorer has caught up, the monitor reads its own backlog at its usual budgets.

The lag comes from the broker (:func:`fireman.common.kafka_io.consumer_lag`, as the dashboard reads
it). A group that has committed nothing is not behind: it is not running, or not yet, and there is
nothing to give way to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaException

from fireman.common.kafka_io import ConsumerLag

log = logging.getLogger(__name__)

# Often enough to give way within a batch or two of the scorer falling behind; each check is four small
# requests to the broker.
CHECK_INTERVAL_S = 2.0


class GiveWay:
    """Whether the scorer is behind, checked at most every :data:`CHECK_INTERVAL_S` by :meth:`check`.

    Until :meth:`watch` gives it a way to measure the scorer group's lag, it never gives way.
    :meth:`share` is the share of a core a thread keeps to now: its own budget, or ``yield_share``
    while the scorer is behind.
    """

    def __init__(
        self,
        group: str,
        yield_lag: int,
        yield_share: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.group = group
        self.yield_lag = yield_lag
        self.yield_share = yield_share
        # (seconds given way in spells that ended, start of the current spell or None), replaced as one
        # tuple: the metrics thread reads it while the reading thread changes it, and a counter read
        # halfway through a change could go backwards.
        self._spells: tuple[float, float | None] = (0.0, None)
        self._measure: Callable[[], ConsumerLag] | None = None
        self._clock = clock
        self._next_check = clock()
        self._failing = False

    def watch(self, measure: Callable[[], ConsumerLag]) -> None:
        if self.yield_lag > 0:
            self._measure = measure

    def check(self) -> bool:
        """Re-read the scorer's lag when due; returns whether the monitor gives way now."""
        now = self._clock()
        if self._measure is None or now < self._next_check:
            return self.behind
        self._next_check = now + CHECK_INTERVAL_S
        try:
            lag = self._measure()
        except KafkaException as exc:
            if not self._failing:
                log.warning("scorer lag not readable (%s): the monitor keeps to its own budgets", exc)
            self._failing = True
            self._set(False, now, 0)
            return False
        self._failing = False
        behind = lag.committed.get(self.group, 0) > 0 and lag.behind.get(self.group, 0) > self.yield_lag
        self._set(behind, now, lag.behind.get(self.group, 0))
        return behind

    @property
    def behind(self) -> bool:
        """Whether the monitor gives way now (the scorer was behind at the last check)."""
        return self._spells[1] is not None

    @property
    def yielded_s(self) -> float:
        """Time spent giving way so far, for the progress log and ``gave_way_seconds``."""
        ended, since = self._spells
        return ended + (self._clock() - since if since is not None else 0.0)

    def share(self, budget: float) -> float:
        """The share of a core a thread whose own budget is ``budget`` keeps to now."""
        return min(budget, self.yield_share) if self.behind else budget

    def _set(self, behind: bool, now: float, lag: int) -> None:
        ended, since = self._spells
        if behind == (since is not None):
            return
        if since is None:
            self._spells = (ended, now)
            log.info(
                "scorer group %s is %d events behind: the monitor gives way, at %.0f%% of a core per "
                "thread, until it catches up",
                self.group,
                lag,
                100 * self.yield_share,
            )
        else:
            self._spells = (ended + now - since, None)
            log.info(
                "scorer group %s caught up after %.0f s: the monitor reads at its own budgets",
                self.group,
                now - since,
            )
