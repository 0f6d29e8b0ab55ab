"""A fleet of simulated sensors: Spambase (or synthetic) rows replayed as events, labels sent later.

The row stream is a library (:func:`iter_rows`, :func:`generate`), deterministic for a seed, so the
scorer and monitoring tests build the same traffic without HTTP. :class:`Generator` adds pacing,
posting to the collector, retries and the delayed labels.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd

from fireman.common.dataset import load_spambase, mask_completely_at_random
from fireman.common.errors import UserError
from fireman.common.schema import FEATURE_NAMES, LABEL_COLUMN
from fireman.streaming.clock import SensorClock
from fireman.streaming.drift import apply_drift, check_drift
from fireman.streaming.settings import GeneratorSettings

log = logging.getLogger(__name__)

SPAMBASE_ROWS = 4601
LABEL_BATCH = 1000


def synthetic_frame(seed: int = 0, rows: int = SPAMBASE_ROWS) -> pd.DataFrame:
    """Spambase's shape (57 features, ~39% positives) from ``make_classification``; no download."""
    from sklearn.datasets import make_classification

    features, labels = make_classification(
        n_samples=rows,
        n_features=len(FEATURE_NAMES),
        n_informative=20,
        n_redundant=10,
        weights=[0.61],
        random_state=seed,
    )
    frame = pd.DataFrame(features, columns=list(FEATURE_NAMES))
    frame[LABEL_COLUMN] = labels.astype("int64")
    return frame


def load_frame(settings: GeneratorSettings) -> pd.DataFrame:
    if settings.dataset == "synthetic":
        return synthetic_frame(settings.seed)
    return load_spambase(settings.data)


@dataclass(frozen=True)
class SensorRow:
    index: int
    sensor_id: str
    event_id: str
    features: dict[str, float]
    label: int
    labelled: bool

    def event(self, timestamp_ms: int) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "sensor_id": self.sensor_id,
            "timestamp": timestamp_ms,
            "features": self.features,
        }

    def label_payload(self, timestamp_ms: int) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "label": self.label,
            "sensor_id": self.sensor_id,
            "timestamp": timestamp_ms,
        }


def iter_rows(frame: pd.DataFrame, settings: GeneratorSettings) -> Iterator[SensorRow]:
    """Rows in a seeded shuffled order, MCAR-masked, drifted from ``drift_after`` on, up to ``limit``.

    Drift (``fireman.streaming.drift``) changes the features, or for ``labels`` only the labels.

    Each pass over the data (``loop``) has its own shuffle and mask, so a long run does not repeat
    the same events.
    """
    if settings.drift_after is not None:
        check_drift(settings.drift_kind, settings.drift_features, settings.drift_magnitude)
    if frame.empty:
        raise UserError("the dataset has no rows")
    reference_std = {str(k): float(v) for k, v in frame[list(FEATURE_NAMES)].std(skipna=True).items()}
    reference_mean = {str(k): float(v) for k, v in frame[list(FEATURE_NAMES)].mean(skipna=True).items()}
    rng = np.random.default_rng(settings.seed)
    index = 0
    passes = 0
    while settings.limit is None or index < settings.limit:
        order = rng.permutation(len(frame))
        masked = mask_completely_at_random(
            frame.iloc[order].reset_index(drop=True),
            settings.missing_rate,
            seed=settings.seed * 1000 + passes,
        )
        values = masked[list(FEATURE_NAMES)].to_numpy(dtype="float64")
        labels = masked[LABEL_COLUMN].to_numpy()
        drifted, drifted_labels = values, labels
        if settings.drift_after is not None and settings.drift_after < index + len(frame):
            shifted = apply_drift(
                masked,
                settings.drift_kind,
                settings.drift_features,
                settings.drift_magnitude,
                reference_std,
                reference_mean,
            )
            drifted = shifted[list(FEATURE_NAMES)].to_numpy(dtype="float64")
            drifted_labels = shifted[LABEL_COLUMN].to_numpy()
        for position in range(len(frame)):
            if settings.limit is not None and index >= settings.limit:
                return
            use_drift = settings.drift_after is not None and index >= settings.drift_after
            row = drifted[position] if use_drift else values[position]
            yield SensorRow(
                index=index,
                sensor_id=f"sensor-{index % settings.sensors + 1}",
                event_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
                features={name: float(v) for name, v in zip(FEATURE_NAMES, row, strict=True) if v == v},
                label=int(drifted_labels[position] if use_drift else labels[position]),
                labelled=bool(rng.random() < settings.label_fraction),
            )
            index += 1
        passes += 1
        if not settings.loop:
            return


def generate(
    frame: pd.DataFrame,
    n: int,
    settings: GeneratorSettings | None = None,
    start_ms: int = 1_767_225_600_000,
    step_ms: int = 1000,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n`` events and the labels of the labelled ones, ready to post; event ``i`` is at
    ``start_ms + i * step_ms`` (default: from 2026-01-01 UTC, one per second)."""
    base = settings or GeneratorSettings()
    spec = base.model_copy(update={"limit": n, "loop": True})
    events, labels = [], []
    for row in iter_rows(frame, spec):
        stamp = start_ms + row.index * step_ms
        events.append(row.event(stamp))
        if row.labelled:
            labels.append(row.label_payload(stamp))
    return events, labels


@dataclass
class GeneratorStats:
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    labels_sent: int = 0
    labels_accepted: int = 0
    labels_pending: int = 0
    started: float = field(default_factory=time.monotonic)
    last_error: str | None = None

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.accepted / elapsed if elapsed > 0 else 0.0

    def summary(self) -> str:
        return (
            f"sent {self.sent}, accepted {self.accepted}, rejected {self.rejected}, failed {self.failed}, "
            f"labels {self.labels_accepted}/{self.labels_sent} accepted ({self.labels_pending} pending), "
            f"{self.rate:.1f} events/s"
        )


class Generator:
    """Posts rows to the collector at ``rate`` and their labels ``label_delay_s`` later."""

    def __init__(
        self,
        settings: GeneratorSettings,
        client: httpx.Client,
        frame: pd.DataFrame,
        on_progress: Callable[[GeneratorStats], None] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.frame = frame
        self.on_progress = on_progress
        self.stats = GeneratorStats()
        self._clock = SensorClock()
        self._labels: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()

    def run(self, stop: threading.Event) -> GeneratorStats:
        settings = self.settings
        interval = settings.batch / settings.rate if settings.rate > 0 else 0.0
        rows = iter_rows(self.frame, settings)
        next_send = time.monotonic()
        exhausted = False
        while not stop.is_set():
            self._send_due_labels(stop)
            now = time.monotonic()
            if exhausted:
                if not self._labels:
                    break
                stop.wait(max(0.0, self._labels[0][0] - now))
                continue
            if now < next_send:
                wake = min(next_send, self._labels[0][0]) if self._labels else next_send
                stop.wait(max(0.0, wake - now))
                continue
            batch = [row for _, row in zip(range(settings.batch), rows, strict=False)]
            if not batch:
                exhausted = True
                continue
            self._send_events(batch, stop)
            # Catch up after a slow POST, but never by bursting more than a second's worth.
            next_send = max(next_send + interval, time.monotonic() - 1.0)
        self.stats.labels_pending = len(self._labels)
        return self.stats

    def _send_events(self, rows: list[SensorRow], stop: threading.Event) -> None:
        now_ms = int(time.time() * 1000)
        stamps = [self._clock.next(row.sensor_id, now_ms) for row in rows]
        payload = [row.event(stamp) for row, stamp in zip(rows, stamps, strict=True)]
        self.stats.sent += len(rows)
        status = self._post("/v1/events", payload, stop)
        if status == 202:
            self.stats.accepted += len(rows)
            due = time.monotonic() + self.settings.label_delay_s
            for row, stamp in zip(rows, stamps, strict=True):
                if row.labelled:
                    self._labels.append((due, row.label_payload(stamp)))
        elif status is not None and 400 <= status < 500:
            self.stats.rejected += len(rows)
        else:
            self.stats.failed += len(rows)
        self._progress()

    def _send_due_labels(self, stop: threading.Event) -> None:
        now = time.monotonic()
        due: list[dict[str, Any]] = []
        while self._labels and self._labels[0][0] <= now and len(due) < LABEL_BATCH:
            due.append(self._labels.popleft()[1])
        if not due:
            return
        self.stats.labels_sent += len(due)
        if self._post("/v1/labels", due, stop) == 202:
            self.stats.labels_accepted += len(due)
        self._progress()

    def _post(self, path: str, payload: list[dict[str, Any]], stop: threading.Event) -> int | None:
        """POST with retries on 503 and connection errors; the final status, or None if never answered."""
        body = orjson.dumps(payload)
        headers = {"content-type": "application/json"}
        if self.settings.token is not None:
            headers["authorization"] = f"Bearer {self.settings.token.get_secret_value()}"
        delay = 0.5
        status: int | None = None
        for attempt in range(self.settings.max_retries + 1):
            try:
                response = self.client.post(path, content=body, headers=headers)
                status = response.status_code
                if status >= 400:
                    self.stats.last_error = f"{status}: {response.text[:200]}"
                if status != 503:
                    return status
            except httpx.TransportError as exc:
                status = None
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
            if attempt < self.settings.max_retries and stop.wait(delay):
                break
            delay = min(delay * 2, 10.0)
        return status

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.stats)
