"""Background InfluxDB writes from a bounded buffer, in order, retried until they succeed.

The scorer hands each batch's lines over and goes on; it commits a batch's offsets only once the
writer reports that batch (and every one before it) durable. While InfluxDB is down the buffer
grows up to a bound, then the scorer pauses consumption: memory stays bounded and nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from fireman.common.influx import InfluxClient, InfluxError, InfluxUnavailable, Point, to_line
from fireman.common.settings import InfluxSettings

log = logging.getLogger(__name__)


@dataclass
class _Job:
    seq: int
    lines: list[str]
    written: int = 0


class InfluxWriter:
    def __init__(self, settings: InfluxSettings, chunk_points: int = 10_000) -> None:
        self._client = InfluxClient(settings)
        self._chunk = chunk_points
        self._backoff = settings.backoff()
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._next_seq = 0
        # Every job up to this sequence number is written (or was dropped as unwritable).
        self.durable_seq = 0
        self.buffered_points = 0
        self._closing = False
        self.down_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="influx-writer", daemon=True)
        self._thread.start()

    def submit(self, lines: list[str]) -> int:
        """Queue lines; returns the sequence number to wait for."""
        with self._cond:
            self._next_seq += 1
            self._jobs.append(_Job(self._next_seq, lines))
            self.buffered_points += len(lines)
            self._cond.notify_all()
            return self._next_seq

    def submit_points(self, points: list[Point]) -> int:
        return self.submit([line for line in map(to_line, points) if line is not None])

    def wait_durable(self, seq: int, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.durable_seq >= seq, timeout=timeout_s)

    def close(self, timeout_s: float) -> bool:
        """Drain for up to ``timeout_s``; True if everything was written."""
        drained = self.wait_durable(self._next_seq, timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=self._backoff.max_s + 15.0)
        self._client.close()
        return drained

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._jobs or self._closing)
                if self._closing:
                    return
                job = self._jobs[0]
            try:
                for attempt in self._backoff.retrying(
                    InfluxUnavailable,
                    sleep=self._wait_unless_closing,
                    give_up=lambda: self._closing,
                    failure="InfluxDB unavailable, predictions buffered",
                    on_retry=self._went_down,
                ):
                    with attempt:
                        self._write(job)
            except InfluxUnavailable:
                return  # closing while InfluxDB is down: what is unwritten stays uncommitted
            except InfluxError as exc:
                if "database not found" in str(exc):
                    self._create_database()
                    continue
                # A permanent rejection (e.g. a field type conflict): retrying cannot help, and the
                # predictions are on Kafka anyway; stalling the scorer forever would be worse.
                log.error("InfluxDB rejected %d points, dropping them: %s", len(job.lines) - job.written, exc)
            if self.down_since is not None:
                log.info("InfluxDB is back after %.1f s", time.monotonic() - self.down_since)
                self.down_since = None
            with self._cond:
                self._jobs.popleft()
                self.buffered_points -= len(job.lines)
                self.durable_seq = job.seq
                self._cond.notify_all()

    def _went_down(self, _error: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()

    def _wait_unless_closing(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._closing, timeout=seconds)

    def _write(self, job: _Job) -> None:
        while job.written < len(job.lines):
            chunk = job.lines[job.written : job.written + self._chunk]
            self._client.write_lines(chunk)
            job.written += len(chunk)

    def _create_database(self) -> None:
        try:
            self._client.ensure_database()
        except InfluxError as exc:
            log.warning("could not create InfluxDB database %s: %s", self._client.database, exc)
            time.sleep(self._backoff.max_s)
