"""A bounded uniform random sample of a window's feature rows (reservoir sampling), and how two merge.

A window's drift is tested on at most ``capacity`` of its rows, so Evidently's cost per test and the
memory of a window do not grow with the window. The reservoir (Vitter's algorithm R) decides as each
row is offered whether it is kept, before the row is parsed, so rows that are not kept are never
parsed. Each row kept is stored with the model's probability for it (the prediction drift test).

Two samples merge into a uniform sample of the union of what both saw: the number of rows taken from
each side is hypergeometric in the sizes of the two populations (rows seen, not rows kept), then that
many are taken at random from each side's sample. Merging windows this way keeps every event of every
window equally likely to be in the test, however unequal the windows.
"""

from __future__ import annotations

import random

import numpy as np

from fireman.common.schema import FEATURE_NAMES


class Reservoir:
    def __init__(self, capacity: int, seed: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"a sample holds at least one row, not {capacity}")
        self.capacity = capacity
        self.seen = 0  # rows offered (and not withdrawn): the population the sample is drawn from
        self.rows: list[np.ndarray] = []
        self.scores: list[float] = []
        self._random = random.Random(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def offer(self) -> int | None:
        """Count one more row; the slot to :meth:`put` it in, or None when the sample does not keep it."""
        self.seen += 1
        if self.seen <= self.capacity:
            return self.seen - 1
        slot = self._random.randrange(self.seen)
        return slot if slot < self.capacity else None

    def put(self, slot: int, row: np.ndarray, probability: float) -> None:
        if slot == len(self.rows):
            self.rows.append(row)
            self.scores.append(probability)
        else:
            self.rows[slot] = row
            self.scores[slot] = probability

    def withdraw(self) -> None:
        """Uncount the row just offered (it could not be read): as if it had never been offered."""
        self.seen -= 1

    def matrix(self) -> np.ndarray:
        if not self.rows:
            return np.empty((0, len(FEATURE_NAMES)))
        return np.vstack(self.rows)

    def probabilities(self) -> np.ndarray:
        return np.asarray(self.scores, dtype=np.float64)

    def merged(self, other: Reservoir) -> Reservoir:
        """A uniform sample (at most the larger capacity) of everything both samples were drawn from."""
        capacity = max(self.capacity, other.capacity)
        result = Reservoir(capacity, seed=self._random.getrandbits(64))
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
            for index in generator.choice(len(source), size=count, replace=False):
                result.rows.append(source.rows[index])
                result.scores.append(source.scores[index])
        return result
