"""The collector's generated event ids are well-formed, distinct random UUID4s."""

from __future__ import annotations

import uuid

from fireman.streaming.collector import _uuid4_factory


def test_generated_ids_are_canonical_random_uuid4() -> None:
    new_id = _uuid4_factory()
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:2000]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # canonical: lower-case hex, dashes at 8-4-4-4-12


def test_two_collectors_do_not_share_a_sequence() -> None:
    first, second = _uuid4_factory(), _uuid4_factory()
    assert {first() for _ in range(100)}.isdisjoint({second() for _ in range(100)})
