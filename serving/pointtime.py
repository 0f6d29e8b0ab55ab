"""The InfluxDB point time of an event: its millisecond plus a sub-millisecond offset from its id.

A point is identified by measurement, tag set and time. Two events of one sensor in the same
millisecond would overwrite each other at a bare millisecond time; the offset (0..999,999 ns, from
a BLAKE2b hash of the event id) keeps them apart, while a replay of the same event lands on the same
point. This is the ingest sink's rule (``streaming.payloads.event_time_ns``), so the raw and the
prediction points of an event share a timestamp.
"""

from __future__ import annotations

import hashlib

NS_PER_MS = 1_000_000


def point_time_ns(timestamp_ms: int, event_id: str) -> int:
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return timestamp_ms * NS_PER_MS + int.from_bytes(digest, "big") % NS_PER_MS
