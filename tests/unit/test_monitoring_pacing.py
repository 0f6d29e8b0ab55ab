"""The monitor's reading thread keeps to its share of a core: pauses pay back what it spent beyond it."""

from __future__ import annotations

import pytest

from fireman.monitoring.pacing import CREDIT_S, CpuShare


class Clocks:
    """A thread's CPU time and the wall clock, moved by hand."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def work(self, seconds: float) -> None:
        self.cpu_s += seconds
        self.wall_s += seconds

    def idle(self, seconds: float) -> None:
        self.wall_s += seconds


def share_of(clocks: Clocks, share: float) -> CpuShare:
    return CpuShare(share, cpu=lambda: clocks.cpu_s, clock=lambda: clocks.wall_s)


def test_work_beyond_the_share_is_paid_back_by_a_pause_that_brings_the_average_to_the_share() -> None:
    clocks = Clocks()
    pacing = share_of(clocks, 0.25)
    clocks.work(0.1)
    pause = pacing.pause_s()
    assert pause == pytest.approx(0.3)  # 0.1 s of CPU is a quarter of 0.4 s
    clocks.idle(pause)
    assert pacing.pause_s() == 0.0
    assert clocks.cpu_s / clocks.wall_s == pytest.approx(0.25)


def test_a_busy_thread_averages_its_share_over_many_batches() -> None:
    clocks = Clocks()
    pacing = share_of(clocks, 0.25)
    for _ in range(1000):
        clocks.work(0.004)
        clocks.idle(pacing.pause_s())
    assert clocks.cpu_s / clocks.wall_s == pytest.approx(0.25, rel=0.01)


def test_a_lower_share_from_a_pause_on_keeps_the_thread_to_it_without_a_burst_of_credit() -> None:
    """Giving way to the scorer: from one pause to the next, the share drops from 0.1 to 0.02 of a core,
    then comes back. Each stretch averages the share in force, not the old one less some credit."""
    clocks = Clocks()
    pacing = share_of(clocks, 0.1)
    for share in (0.1, 0.02, 0.1):
        began_cpu, began_wall = clocks.cpu_s, clocks.wall_s
        for _ in range(1000):
            clocks.work(0.002)
            clocks.idle(pacing.pause_s(share))
        spent = (clocks.cpu_s - began_cpu) / (clocks.wall_s - began_wall)
        assert spent == pytest.approx(share, rel=0.05), (share, spent)


def test_a_whole_core_from_a_pause_on_starts_with_no_debt_when_paced_again() -> None:
    clocks = Clocks()
    pacing = share_of(clocks, 1.0)
    clocks.work(10.0)
    assert pacing.pause_s() == 0.0
    clocks.work(0.01)
    assert pacing.pause_s(0.1) == pytest.approx((0.01 - 0.1 * 0.01) / 0.1)


def test_idle_time_banks_only_a_little_credit() -> None:
    clocks = Clocks()
    pacing = share_of(clocks, 0.25)
    clocks.idle(3600.0)
    assert pacing.pause_s() == 0.0
    clocks.work(1.0)  # a burst after an hour's quiet is paced, less only the little credit banked
    assert pacing.pause_s() == pytest.approx((1.0 - 0.25 * 1.0 - CREDIT_S) / 0.25)


def test_a_whole_core_never_pauses() -> None:
    clocks = Clocks()
    pacing = share_of(clocks, 1.0)
    clocks.work(10.0)
    assert pacing.pause_s() == 0.0


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_a_share_outside_one_core_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="share of one core"):
        share_of(Clocks(), share)
