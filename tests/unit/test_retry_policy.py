"""The one retry policy of the InfluxDB writers: back-off that doubles, with jitter, up to a cap."""

from __future__ import annotations

import pytest

from fireman.common.influx import InfluxUnavailable
from fireman.common.retry import Backoff


def run(policy: Backoff, failures: int, give_up_after: int | None = None) -> tuple[list[float], int]:
    waits: list[float] = []
    calls = [0]

    def write() -> None:
        calls[0] += 1
        if calls[0] <= failures:
            raise InfluxUnavailable("connection refused")

    give_up = (lambda: len(waits) >= give_up_after) if give_up_after is not None else (lambda: False)
    for attempt in policy.retrying(InfluxUnavailable, sleep=waits.append, give_up=give_up):
        with attempt:
            write()
    return waits, calls[0]


def test_waits_double_with_jitter_up_to_the_cap_then_the_write_succeeds() -> None:
    waits, calls = run(Backoff(initial_s=0.2, max_s=5.0), failures=8)
    assert calls == 9 and len(waits) == 8
    for n, wait in enumerate(waits):
        base = min(0.2 * 2**n, 5.0)
        assert base <= wait <= min(base + 0.2, 5.0), (n, waits)
    assert waits[-1] == pytest.approx(5.0, abs=0.2)


def test_jitter_spreads_writers_that_failed_together() -> None:
    firsts = {run(Backoff(initial_s=0.2, max_s=5.0), failures=1)[0][0] for _ in range(20)}
    assert len(firsts) > 1


def test_giving_up_raises_the_last_error_and_other_errors_are_not_retried() -> None:
    with pytest.raises(InfluxUnavailable, match="connection refused"):
        run(Backoff(), failures=100, give_up_after=3)
    policy = Backoff().retrying(InfluxUnavailable, sleep=lambda _s: pytest.fail("must not wait"))
    with pytest.raises(ValueError):
        for attempt in policy:
            with attempt:
                raise ValueError("a rejected point")


def test_a_partition_whose_leader_settles_is_retried_though_librdkafka_calls_it_final() -> None:
    from confluent_kafka import KafkaError

    from fireman.common.kafka_io import _settling

    assert not KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION).retriable()
    assert _settling(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
    assert _settling(KafkaError(KafkaError.LEADER_NOT_AVAILABLE))
    assert not _settling(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
