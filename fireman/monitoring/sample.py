"""A bounded uniform random sample of a window's events (reservoir sampling), and how two samples merge.

A window's drift is tested on at most ``capacity`` of its events, so Evidently's cost per test and the
memory of a window do not grow with the window. The reservoir (Vitter's algorithm R) decides as each
event is offered whether it is kept; what it keeps is opaque here (the monitor keeps the raw
measurement, parsed only if it is still in the sample when the window is tested). Each item kept is
stored with the model's probability for it (the prediction drift test).

Two samples merge into a uniform sample of the union of what both saw: the number of items taken from
each side is hypergeometric in the sizes of the two populations (items seen, not items kept), then that
many are taken at random from each side's sample. Merging windows this way keeps every event of every
window equally likely to be in the test, however unequal the windows.
"""

from __future__ import annotations

import random
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


class Reservoir(Generic[T]):
    def __init__(self, capacity: int, seed: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"a sample holds at least one item, not {capacity}")
        self.capacity = capacity
        self.seen = 0  # items offered: the population the sample is drawn from
        self.items: list[T] = []
        self.scores: list[float] = []
        self._random = random.Random(seed)

    def __len__(self) -> int:
        return len(self.items)

    def offer(self) -> int | None:
        """Count one more item; the slot to :meth:`put` it in, or None when the sample does not keep it."""
        self.seen += 1
        if self.seen <= self.capacity:
            return self.seen - 1
        slot = self._random.randrange(self.seen)
        return slot if slot < self.capacity else None

    def put(self, slot: int, item: T, probability: float) -> None:
        if slot == len(self.items):
            self.items.append(item)
            self.scores.append(probability)
        else:
            self.items[slot] = item
            self.scores[slot] = probability

    def merged(self, other: Reservoir[T]) -> Reservoir[T]:
        """A uniform sample (at most the larger capacity) of everything both samples were drawn from."""
        capacity = max(self.capacity, other.capacity)
        result: Reservoir[T] = Reservoir(capacity, seed=self._random.getrandbits(64))
        result.seen = self.seen + other.seen
        size = min(capacity, len(self) + len(other), result.seen)
        if size == 0:
            return result
        generator = np.random.default_rng(result._random.getrandbits(64))
        # Rows from this side in a uniform draw of ``size`` from both populations; never more than
        # either side's sample holds, since each holds min(its capacity, what it saw).
        mine = int(generator.hypergeometric(self.seen, other.seen, size)) if other.seen else size
        mine = min(max(mine, size - len(other)), len(self))
        for source, count in ((self, mine), (other, size - mine)):
            picked = generator.choice(len(source), size=count, replace=False).tolist()
            result.items.extend([source.items[index] for index in picked])
            result.scores.extend([source.scores[index] for index in picked])
        return result
