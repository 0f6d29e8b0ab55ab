"""Closed windows waiting for the drift worker, merged instead of dropped when they pile up.

Evidently may only use ``drift_cpu_budget`` of a core, so windows can close faster than they are
tested (a backlog read at full speed, or a fast stream). None of them is dropped: per model version at
most ``limit`` windows wait; one more, and the two adjacent waiting windows with the fewest events
between them merge into one (:meth:`ClosedWindow.merge`), so the waiting windows stay about equal in
size and in time order, and a change late in a long backlog still lands in a window of its own rather
than being diluted in one window spanning the whole backlog. Windows of different versions never merge.

The worker takes the waiting window that starts first, whatever its version, so each version's
windows are tested (and their points written) in time order.
"""

from __future__ import annotations

import itertools

from fireman.monitoring.windows import ClosedWindow

Slot = tuple[str, str]  # model name, version


class PendingWindows:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"at least one window waits per version, not {limit}")
        self.limit = limit
        self._waiting: dict[Slot, list[ClosedWindow]] = {}
        self.merges = 0

    def add(self, window: ClosedWindow) -> None:
        slot = (window.key.model_name, window.key.version)
        waiting = self._waiting.setdefault(slot, [])
        waiting.append(window)
        while len(waiting) > self.limit:
            sizes = [a.events + b.events for a, b in itertools.pairwise(waiting)]
            i = sizes.index(min(sizes))
            waiting[i : i + 2] = [waiting[i].merge(waiting[i + 1])]
            self.merges += 1

    def take(self) -> ClosedWindow | None:
        """The waiting window that starts first, or None."""
        if not self._waiting:
            return None
        slot = min(self._waiting, key=lambda s: self._waiting[s][0].key.start_ns)
        waiting = self._waiting[slot]
        window = waiting.pop(0)
        if not waiting:
            del self._waiting[slot]
        return window

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self._waiting.values())

    @property
    def events(self) -> int:
        return sum(w.events for waiting in self._waiting.values() for w in waiting)
