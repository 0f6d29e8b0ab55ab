"""The capacity model's arithmetic: cores, replicas and partitions for a rate, and the check rows."""

from __future__ import annotations

import dataclasses

import pytest

from fireman.bench.capacity import HEADROOM, Costs, render

COSTS = Costs(
    scorer_us=20.0,
    sink_us=30.0,
    monitor_us=10.0,
    kafka_us=5.0,
    influxdb_us=35.0,
    scorer_rate=40_000.0,
    sink_rate=20_000.0,
    monitor_rate=60_000.0,
    partitions=4,
    scorer_path_us=60.0,
)


def test_cores_are_the_summed_cost_at_the_headroom() -> None:
    assert COSTS.total_us == 100.0
    # 10,000 events/s x 100 µs = 1 core busy, planned at 70%.
    assert COSTS.cores(10_000) == pytest.approx(1 / HEADROOM)


@pytest.mark.parametrize(
    ("rate", "scorers", "sinks", "partitions"),
    [(2_000, 1, 1, 4), (28_000, 1, 2, 4), (100_000, 4, 8, 8), (400_000, 15, 29, 29)],
)
def test_replicas_keep_each_under_its_measured_rate_and_partitions_cover_them(
    rate: int, scorers: int, sinks: int, partitions: int
) -> None:
    planned = (COSTS.scorers(rate), COSTS.sinks(rate), COSTS.partitions_for(rate))
    assert planned == (scorers, sinks, partitions)


def test_the_check_compares_measured_runs_with_the_machine_cap() -> None:
    lines = render(COSTS, cpus=2, measured={1: 30_000.0, 2: 33_000.0})
    # The scorer path, 60 µs (not the sink's InfluxDB share too): 2 cores cap it at 33,333 events/s.
    assert any("cap it at 33,333 events/s" in line for line in lines)
    assert "| 1 | 33,333 | 30,000 | 90% |" in lines
    assert "| 2 | 33,333 | 33,000 | 99% |" in lines
    assert "| **all** | 100.0 | 10,000 |" in lines


def test_a_monitor_cost_without_its_unpaced_intake_says_it_is_a_lower_bound() -> None:
    measured_intake = render(COSTS, cpus=2, measured=None)
    paced_only = render(dataclasses.replace(COSTS, monitor_rate=None), cpus=2, measured=None)
    assert any("one core over its unpaced intake rate" in line for line in measured_intake)
    assert not any("lower bound" in line for line in measured_intake)
    assert any(
        "| monitor (its CPU during the run, paced: a lower bound) | 10.0 |" in line for line in paced_only
    )
