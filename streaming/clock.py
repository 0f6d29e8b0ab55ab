"""Event times for events that arrive without one."""

from __future__ import annotations

MAX_TRACKED_SENSORS = 100_000


class SensorClock:
    """Strictly increasing epoch milliseconds per sensor.

    Two events of one sensor never get the same millisecond, so they never collide in InfluxDB
    (where a point is identified by its tags and time). A sensor sending faster than 1,000 untimed
    events per second runs ahead of the wall clock by the excess; real sensors send far slower.
    Not thread-safe: the collector calls it from its event loop, the generator from one thread.
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def next(self, sensor_id: str, now_ms: int) -> int:
        last = self._last.get(sensor_id)
        stamp = now_ms if last is None or now_ms > last else last + 1
        if len(self._last) >= MAX_TRACKED_SENSORS and sensor_id not in self._last:
            self._last.clear()
        self._last[sensor_id] = stamp
        return stamp
