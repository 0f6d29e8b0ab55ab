"""The monitor gives way to the scorer while the scorer's group is behind, and only then."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from fireman.common.kafka_io import ConsumerLag
from fireman.monitoring.priority import CHECK_INTERVAL_S, GiveWay

GROUP = "fireman-scorer"


class Broker:
    """What the broker answers about the scorer's group: its lag and the partitions it committed on."""

    def __init__(self) -> None:
        self.lag = 0
        self.committed = 4
        self.down = False
        self.asked = 0

    def measure(self) -> ConsumerLag:
        self.asked += 1
        if self.down:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return ConsumerLag({GROUP: self.lag}, {GROUP: 4}, {}, {GROUP: self.committed})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def watching(broker: Broker, clock: Clock, yield_lag: int = 10_000, share: float = 0.02) -> GiveWay:
    give_way = GiveWay(GROUP, yield_lag, share, clock=clock)
    give_way.watch(broker.measure)
    return give_way


def test_gives_way_beyond_the_lag_and_reads_at_its_own_budget_once_the_scorer_caught_up() -> None:
    broker, clock = Broker(), Clock()
    give_way = watching(broker, clock)
    assert not give_way.check() and give_way.share(0.1) == 0.1

    broker.lag = 10_001
    clock.now += CHECK_INTERVAL_S
    assert give_way.check()
    assert give_way.share(0.1) == 0.02
    assert give_way.share(0.01) == 0.01  # a budget already below the yielding share stays as it is

    clock.now += 3 * CHECK_INTERVAL_S
    broker.lag = 10_000
    assert not give_way.check() and give_way.share(0.1) == 0.1
    assert give_way.yielded_s == pytest.approx(3 * CHECK_INTERVAL_S)


def test_the_lag_is_asked_of_the_broker_at_most_every_check_interval() -> None:
    broker, clock = Broker(), Clock()
    give_way = watching(broker, clock)
    give_way.check()
    broker.lag = 50_000
    clock.now += CHECK_INTERVAL_S / 2
    assert not give_way.check() and broker.asked == 1
    clock.now += CHECK_INTERVAL_S / 2
    assert give_way.check() and broker.asked == 2


def test_a_group_that_never_committed_is_not_waited_for() -> None:
    """No scorer runs under that name (or not yet): its lag counts the whole topic, and nobody reads it."""
    broker, clock = Broker(), Clock()
    broker.lag, broker.committed = 60_000, 0
    assert not watching(broker, clock).check()


def test_an_unreadable_lag_keeps_the_monitor_at_its_own_budgets_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, clock = Broker(), Clock()
    broker.lag = 50_000
    give_way = watching(broker, clock)
    assert give_way.check()
    broker.down = True
    for _ in range(3):
        clock.now += CHECK_INTERVAL_S
        assert not give_way.check()
    assert sum("scorer lag not readable" in r.message for r in caplog.records) == 1
    broker.down = False
    clock.now += CHECK_INTERVAL_S
    assert give_way.check()


def test_never_gives_way_with_yield_lag_zero_or_before_it_can_measure() -> None:
    broker, clock = Broker(), Clock()
    broker.lag = 1_000_000
    assert not watching(broker, clock, yield_lag=0).check()
    assert not GiveWay(GROUP, 10_000, 0.02, clock=clock).check()
    assert broker.asked == 0


def test_the_monitor_gives_way_to_the_group_the_scorer_runs_under(monkeypatch: pytest.MonkeyPatch) -> None:
    from fireman.monitoring.settings import MonitorSettings
    from fireman.serving.settings import ScorerSettings

    monkeypatch.delenv("FIREMAN_SCORER_GROUP_ID", raising=False)
    assert MonitorSettings().scorer_group_id == ScorerSettings().group_id
    monkeypatch.setenv("FIREMAN_SCORER_GROUP_ID", "scorer-b")  # the scorer's own variable
    assert MonitorSettings().scorer_group_id == ScorerSettings().group_id == "scorer-b"
