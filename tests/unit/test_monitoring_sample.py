"""Every event in a drift test: window samples (reservoirs), how waiting windows merge, coverage.

Uniformity is checked by counting, over many seeded draws, how often each row ends up in the sample:
seeded, so the counts are the same on every run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from fireman.common.schema import FEATURE_NAMES
from fireman.monitoring.coverage import Coverage
from fireman.monitoring.pending import PendingWindows
from fireman.monitoring.sample import Reservoir
from fireman.monitoring.windows import ClosedWindow, Features, WindowKey

TRIALS = 2000


def filled(capacity: int, items: range, seed: int) -> Reservoir[int]:
    """A reservoir offered ``items`` (numbers), each with the probability ``item / 1000``."""
    sample: Reservoir[int] = Reservoir(capacity, seed=seed)
    for i in items:
        slot = sample.offer()
        if slot is not None:
            sample.put(slot, i, i / 1000)
    return sample


def inclusion(draw: Callable[[int], Reservoir[int]], population: int) -> np.ndarray:
    """How often each of ``population`` items is in the sample ``draw(seed)`` returns, over TRIALS seeds."""
    counts = np.zeros(population)
    for seed in range(TRIALS):
        for item in draw(seed).items:
            counts[item] += 1
    return counts / TRIALS


def paired(sample: Reservoir[int]) -> bool:
    return [i / 1000 for i in sample.items] == sample.scores


def assert_uniform(frequencies: np.ndarray, expected: float) -> None:
    # Four standard deviations of a binomial share over TRIALS draws: no seeded run comes near it
    # unless the sample is biased (the first rows kept too often, one side of a merge favoured).
    tolerance = 4 * np.sqrt(expected * (1 - expected) / TRIALS)
    assert np.abs(frequencies - expected).max() < tolerance, (frequencies.min(), frequencies.max())


def test_a_reservoir_is_bounded_and_every_row_is_equally_likely() -> None:
    sample = filled(10, range(100), seed=0)
    assert len(sample) == 10 and sample.seen == 100 and len(set(sample.items)) == 10
    assert paired(sample)  # each item keeps its own probability
    assert_uniform(inclusion(lambda seed: filled(10, range(100), seed), 100), 0.1)


def test_a_reservoir_keeps_everything_below_its_capacity() -> None:
    assert filled(10, range(4), seed=0).items == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="at least one item"):
        Reservoir(0)


@pytest.mark.parametrize(("first", "second"), [(30, 70), (5, 195), (100, 100)])
def test_merged_samples_are_uniform_over_both_windows_events(first: int, second: int) -> None:
    total = first + second

    def merged(seed: int) -> Reservoir[int]:
        a = filled(10, range(first), seed)
        b = filled(10, range(first, total), seed + 10_000)
        return a.merged(b)

    sample = merged(0)
    assert len(sample) == 10 and sample.seen == total and len(set(sample.items)) == 10
    assert paired(sample)
    assert_uniform(inclusion(merged, total), 10 / total)


def test_small_samples_merge_whole() -> None:
    merged = filled(10, range(3), 0).merged(filled(10, range(3, 7), 1))
    assert sorted(merged.items) == [0, 1, 2, 3, 4, 5, 6] and merged.seen == 7 and paired(merged)
    empty: Reservoir[int] = Reservoir(10)
    assert len(empty.merged(Reservoir(10))) == 0


def features(i: int) -> Features:
    return Features(f"e{i}", np.full(len(FEATURE_NAMES), float(i)), ("measurements", 0, i), 0.0)


def closed(start: int, events: int, version: str = "1") -> ClosedWindow:
    """A closed window of ``events`` events numbered from ``start``, each with one Kafka position."""
    sample: Reservoir[Features] = Reservoir(1000, seed=start)
    for i in range(start, start + events):
        slot = sample.offer()
        if slot is not None:
            sample.put(slot, features(i), i / 10_000)
    return ClosedWindow(
        key=WindowKey("m", version, start * 1_000_000),
        sample=sample,
        position_lists=[[("predictions", 0, i) for i in range(start, start + events)]],
        reason="size",
        events=events,
    )


def test_windows_of_one_version_merge_into_one_covering_both() -> None:
    merged = closed(0, 600).merge(closed(600, 900))
    assert merged.key == WindowKey("m", "1", 0)  # at the earlier window's start
    assert merged.events == 1500 and merged.windows == 2
    assert merged.positions == [("predictions", 0, i) for i in range(1500)]
    assert len(merged.sample) == 1000 and merged.sample.seen == 1500
    # Rows and their probabilities stay paired through the merge.
    assert merged.matrix.shape == (1000, len(FEATURE_NAMES))
    assert np.allclose(merged.matrix[:, 0] / 10_000, merged.probabilities)
    with pytest.raises(ValueError, match="cannot merge"):
        closed(0, 10).merge(closed(10, 10, version="2"))


def test_waiting_windows_merge_adjacent_within_a_version_and_never_across() -> None:
    pending = PendingWindows(limit=3)
    for i in range(10):
        pending.add(closed(i * 100, 100))
    pending.add(closed(50, 40, version="2"))
    assert len(pending) == 4 and pending.events == 1040
    assert pending.merges == 7
    taken = [pending.take() for _ in range(4)]
    assert pending.take() is None and len(pending) == 0
    versions = [w.key.version for w in taken if w is not None]
    starts = [w.key.start_ns // 1_000_000 for w in taken if w is not None]
    # The waiting window that starts first goes first, whatever its version.
    assert starts == sorted(starts) and versions.count("2") == 1
    ones = [w for w in taken if w is not None and w.key.version == "1"]
    # Version 1's ten windows became three of similar size, in time order, with nothing lost.
    assert sum(w.windows for w in ones) == 10 and max(w.events for w in ones) <= 400
    positions = [p for w in ones for p in w.positions]
    assert positions == [("predictions", 0, i) for i in range(1000)]
    with pytest.raises(ValueError, match="at least one"):
        PendingWindows(0)


def test_coverage_counts_only_windows_through_the_drift_worker() -> None:
    coverage = Coverage(scored=5000, tested=3000, untested=1000)
    assert coverage.share == 0.75 and coverage.waiting == 1000
    assert coverage.describe() == "drift coverage 75.0% (3,000 of 4,000 events tested, 1,000 waiting)"
    assert Coverage(scored=10, tested=0, untested=0).share is None
    assert Coverage(scored=60_000, tested=60_000, untested=0).share == 1.0
