"""The InfluxDB point time of an event: its millisecond plus a sub-millisecond offset from its id.

A point is identified by measurement, tag set and time. Two events of one sensor in the same
millisecond would overwrite each other at a bare millisecond time; the offset (0..999,999 ns, from a
BLAKE2b hash of the event id) keeps them apart, while a replay of the same event lands on the same
point. The sink (raw events and labels), the scorer (predictions) and the monitor all use this one
rule, so every point of an event shares its timestamp, and queries with ``epoch=ms`` still return the
event's own millisecond.
"""

from __future__ import annotations

import hashlib

NS_PER_MS = 1_000_000


def point_time_ns(timestamp_ms: int, event_id: str) -> int:
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return timestamp_ms * NS_PER_MS + int.from_bytes(digest, "big") % NS_PER_MS
