"""The scorer bench's loaders write the default measurement format, and re-stamp either format."""

from __future__ import annotations

import pytest

from fireman.bench.scorer import _stamp, spambase_payloads
from fireman.common.events import decode_event, is_binary


def test_payloads_are_in_the_configured_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIREMAN_KAFKA_MEASUREMENT_FORMAT", raising=False)
    assert all(is_binary(value) for _, value in spambase_payloads(3))
    monkeypatch.setenv("FIREMAN_KAFKA_MEASUREMENT_FORMAT", "json")
    assert not any(is_binary(value) for _, value in spambase_payloads(3))


@pytest.mark.parametrize("fmt", ["binary", "json"])
def test_stamping_changes_the_timestamp_only_and_keeps_the_format(fmt: str) -> None:
    [(_, value)] = spambase_payloads(1)
    value = decode_event(value).encode(fmt)  # type: ignore[arg-type]
    stamped = _stamp(value, 1_700_000_000_123)
    assert is_binary(stamped) == (fmt == "binary")
    before, after = decode_event(value), decode_event(stamped)
    assert after.timestamp == 1_700_000_000_123
    assert (after.event_id, after.sensor_id, after.features) == (
        before.event_id,
        before.sensor_id,
        before.features,
    )
