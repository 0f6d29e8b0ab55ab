"""Which offsets may be committed: everything before the oldest message whose outputs are not yet durable.

A message is *held* while something derived from it is only in memory (an event waiting in an open
window, a feature row waiting for its prediction, a label counted in a performance point that is not
written yet) and *released* once that is written to InfluxDB or deliberately dropped. Per partition,
the committable offset is the oldest held offset, or the next offset after everything seen.
Workers release from their own threads, hence the lock.
"""

from __future__ import annotations

import heapq
import threading

Partition = tuple[str, int]
Position = tuple[str, int, int]  # topic, partition, offset


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[Partition, int] = {}
        self._held: dict[Partition, dict[int, int]] = {}
        self._heaps: dict[Partition, list[int]] = {}
        self._committed: dict[Partition, int] = {}

    def seen(self, position: Position) -> None:
        topic, partition, offset = position
        key = (topic, partition)
        with self._lock:
            if offset + 1 > self._next.get(key, -1):
                self._next[key] = offset + 1

    def seen_up_to(self, last: dict[Partition, int]) -> None:
        """``seen`` for a polled batch: the last offset read per partition."""
        with self._lock:
            for key, offset in last.items():
                if offset + 1 > self._next.get(key, -1):
                    self._next[key] = offset + 1

    def hold(self, positions: list[Position] | tuple[Position, ...]) -> None:
        # Plain dicts, not Counters: this runs for every message read.
        with self._lock:
            for topic, partition, offset in positions:
                key = (topic, partition)
                held = self._held.get(key)
                if held is None:
                    held = self._held[key] = {}
                    self._heaps[key] = []
                count = held.get(offset, 0)
                if not count:
                    heapq.heappush(self._heaps[key], offset)
                held[offset] = count + 1

    def release(self, positions: list[Position] | tuple[Position, ...]) -> None:
        with self._lock:
            for topic, partition, offset in positions:
                held = self._held.get((topic, partition))
                if held is None:
                    continue
                count = held.get(offset, 0)
                if count > 1:
                    held[offset] = count - 1
                elif count:
                    del held[offset]

    def held_count(self) -> int:
        with self._lock:
            return sum(sum(held.values()) for held in self._held.values())

    def committable(self) -> dict[Partition, int]:
        """Offsets (next to read) that moved since the last call; mark them as committed."""
        moved: dict[Partition, int] = {}
        with self._lock:
            for key, next_offset in self._next.items():
                heap = self._heaps.get(key, [])
                held = self._held.get(key, {})
                while heap and not held.get(heap[0]):
                    heapq.heappop(heap)
                target = heap[0] if heap else next_offset
                if target > self._committed.get(key, -1):
                    moved[key] = target
                    self._committed[key] = target
        return moved

    def forget(self, partitions: list[Partition]) -> None:
        """Partitions moved to another consumer: it will replay what was held here."""
        with self._lock:
            for key in partitions:
                for table in (self._next, self._held, self._heaps, self._committed):
                    table.pop(key, None)
