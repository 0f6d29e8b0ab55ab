"""The monitor's in-memory state: joining the three topics, tumbling windows, late labels. No I/O here.

- ``measurements`` (features) and ``predictions`` (model version, prediction) are joined on
  ``event_id``; whichever comes first waits, at most ``join_timeout_s`` and ``max_unjoined`` events.
- Scored events go into one open window per model version, so a window is always compared with the
  reference of the version that scored it. A window closes at ``window_size`` events, or when an
  event is ``window_seconds`` (event time) after its first one, or ``window_seconds`` (wall time)
  after it opened, whichever comes first.
- Every window is tested for drift, on a bounded uniform sample of its events
  (:class:`~fireman.monitoring.sample.Reservoir`, ``sample_rows``): Evidently's cost per test stays
  bounded whatever the window's size, and so does memory. A JSON measurement's feature row costs
  more to parse than anything else the monitor does, so a measurement is kept raw (only its
  ``event_id`` is read, ``peek_event_id``: at a fixed offset in a binary one); the reservoir decides
  as the event arrives whether to keep it, and the drift worker parses what is left in the sample
  when it tests the window (:meth:`ClosedWindow.parse`): rows parsed per test, not per event.
- Each window keeps confusion counts for its predictions. A label finds its prediction through
  ``awaiting`` (then leaves it: a label counts once, in its prediction's window). A label that
  arrives before its prediction waits in ``early_labels`` as features and predictions wait for each
  other (``join_timeout_s``, ``max_unjoined``); one for an unknown event is then dropped and counted
  (``labels_unknown``), as is one whose window has expired (``labels_expired``): none is kept for
  longer, whatever the labels topic carries.

Every item records the Kafka positions it came from, so the caller can hold and release offsets.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from fireman.common.confusion import Confusion
from fireman.common.events import BadMessage, decode_label, decode_prediction, feature_row
from fireman.common.pointtime import point_time_ns
from fireman.common.schema import FEATURE_NAMES
from fireman.monitoring.offsets import Position
from fireman.monitoring.sample import Reservoir


@dataclass(frozen=True)
class WindowKey:
    model_name: str
    version: str
    start_ns: int  # the first event's point time: a replay of the same window overwrites its points


@dataclass(slots=True)
class Features:
    event_id: str
    row: np.ndarray | None  # None until parsed from ``raw``
    position: Position
    arrived: float
    raw: bytes | None = None

    def parsed_row(self) -> np.ndarray:
        if self.row is None:
            self.row = parse_measurement(self.raw, self.event_id)
        return self.row


@dataclass(slots=True)
class Prediction:
    event_id: str
    timestamp: int
    model_name: str
    version: str
    prediction: int
    probability: float
    position: Position
    arrived: float


@dataclass
class Window:
    key: WindowKey
    first_ms: int
    opened: float
    sample: Reservoir[Features] | None = None  # handed to the drift test when the window closes
    positions: list[Position] = field(default_factory=list)
    confusion: Confusion = field(default_factory=Confusion)
    predictions: int = 0
    closed: float | None = None
    label_positions: list[Position] = field(default_factory=list)  # labels counted, not yet written


@dataclass(frozen=True)
class ParsedSample:
    matrix: np.ndarray  # rows x FEATURE_NAMES, NaN for missing
    probabilities: np.ndarray
    bad: list[tuple[Position, str]]  # rows that could not be read: left out of the test


@dataclass
class ClosedWindow:
    """What the drift worker needs; the window itself stays for its late labels.

    While the drift worker is busy, closed windows of one version merge (:meth:`merge`): the result
    starts where the earliest one started and covers all their events.
    """

    key: WindowKey
    sample: Reservoir[Features]
    # Held until the window's drift points are written: one list per window merged into this one, so
    # a merge joins two short lists instead of copying every position. While the drift worker paces
    # itself, every window that closes merges into waiting ones that can hold ~10^5 events each.
    position_lists: list[list[Position]]
    reason: str
    events: int = 0  # scored events, with or without a feature row
    windows: int = 1  # closed windows merged into this one

    @property
    def positions(self) -> list[Position]:
        return [position for positions in self.position_lists for position in positions]

    @cached_property
    def parse(self) -> ParsedSample:
        """The sampled feature rows, parsed (once: the drift worker does it, off the reading thread)."""
        rows: list[np.ndarray] = []
        probabilities: list[float] = []
        bad: list[tuple[Position, str]] = []
        for features, probability in zip(self.sample.items, self.sample.scores, strict=True):
            try:
                rows.append(features.parsed_row())
            except BadMessage as exc:
                bad.append((features.position, str(exc)))
                continue
            probabilities.append(probability)
        matrix = np.vstack(rows) if rows else np.empty((0, len(FEATURE_NAMES)))
        return ParsedSample(matrix, np.asarray(probabilities, dtype=np.float64), bad)

    def discard(self) -> None:
        """Let go of the sampled rows and positions once the window is done (its result may be kept)."""
        self.sample = Reservoir(1)
        self.position_lists = []
        self.__dict__.pop("parse", None)

    @property
    def matrix(self) -> np.ndarray:
        return self.parse.matrix

    @property
    def probabilities(self) -> np.ndarray:
        return self.parse.probabilities

    def merge(self, later: ClosedWindow) -> ClosedWindow:
        """One window covering this one and ``later`` (same model version), its sample uniform over both."""
        if (self.key.model_name, self.key.version) != (later.key.model_name, later.key.version):
            raise ValueError(
                f"windows of {self.key.model_name} v{self.key.version} and "
                f"{later.key.model_name} v{later.key.version} cannot merge: each version has its reference"
            )
        return ClosedWindow(
            key=min(self.key, later.key, key=lambda key: key.start_ns),
            sample=self.sample.merged(later.sample),
            position_lists=self.position_lists + later.position_lists,
            reason=later.reason,
            events=self.events + later.events,
            windows=self.windows + later.windows,
        )


def parse_measurement(value: bytes | None, event_id: str) -> np.ndarray:
    """The feature row of a raw measurement whose id was read by :func:`peek_event_id`."""
    event_id_parsed, row = feature_row(value)
    if event_id_parsed != event_id:
        raise BadMessage(f"event_id: two values in one message ({event_id!r:.80}, {event_id_parsed!r:.80})")
    return row


def parse_prediction(value: bytes | None, position: Position, now: float) -> Prediction:
    event_id, _, timestamp, prediction, probability, model_name, version = decode_prediction(value)
    return Prediction(event_id, timestamp, model_name, version, prediction, probability, position, now)


def parse_label(value: bytes | None) -> tuple[str, int]:
    label = decode_label(value)
    return label.event_id, label.label


@dataclass
class BookStats:
    joined: int = 0
    labels_applied: int = 0
    labels_early: int = 0
    labels_expired: int = 0  # their prediction's window had expired: dropped
    labels_unknown: int = 0  # no prediction came for them within the join timeout: dropped
    features_expired: int = 0
    predictions_expired: int = 0
    awaiting_evicted: int = 0
    windows_closed: int = 0


class WindowBook:
    def __init__(
        self,
        window_size: int,
        window_seconds: float,
        join_timeout_s: float,
        max_unjoined: int,
        label_wait_s: float,
        max_awaiting: int,
        release: Callable[[list[Position]], None],
        sample_rows: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_size = window_size
        self.window_ms = int(window_seconds * 1000)
        self.window_seconds = window_seconds
        self.join_timeout_s = join_timeout_s
        self.max_unjoined = max_unjoined
        self.label_wait_s = label_wait_s
        self.max_awaiting = max_awaiting
        self.release = release
        self.sample_rows = sample_rows
        self.clock = clock
        self.stats = BookStats()
        self.features: OrderedDict[str, Features] = OrderedDict()
        self.predictions: OrderedDict[str, Prediction] = OrderedDict()
        self.open: dict[tuple[str, str], Window] = {}
        self.windows: OrderedDict[WindowKey, Window] = OrderedDict()  # open and closed, oldest first
        self.awaiting: OrderedDict[str, tuple[WindowKey, int]] = OrderedDict()
        self.early_labels: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.dirty: set[WindowKey] = set()

    # --- joining ------------------------------------------------------------------------------

    def add_features(self, features: Features) -> Prediction | None:
        """Store features, or return the prediction they complete (the caller then calls ``add_scored``)."""
        prediction = self.predictions.pop(features.event_id, None)
        if prediction is not None:
            return prediction
        previous = self.features.pop(features.event_id, None)
        if previous is not None:  # a replayed measurement: keep one copy
            self.release([previous.position])
        self.features[features.event_id] = features
        self._bound(self.features, "features_expired")
        return None

    def add_prediction(self, prediction: Prediction) -> Features | None:
        features = self.features.pop(prediction.event_id, None)
        if features is not None:
            return features
        previous = self.predictions.pop(prediction.event_id, None)
        if previous is not None:
            self.release([previous.position])
        self.predictions[prediction.event_id] = prediction
        self._bound(self.predictions, "predictions_expired")
        return None

    def add_scored(self, prediction: Prediction, features: Features) -> list[ClosedWindow]:
        """Put a joined event in its version's window; returns the windows this closed."""
        self.stats.joined += 1
        closed: list[ClosedWindow] = []
        slot = (prediction.model_name, prediction.version)
        window = self.open.get(slot)
        if window is not None and prediction.timestamp - window.first_ms >= self.window_ms:
            closed.append(self._close(window, "time"))
            window = None
        if window is None:
            key = WindowKey(
                prediction.model_name,
                prediction.version,
                point_time_ns(prediction.timestamp, prediction.event_id),
            )
            window = Window(
                key=key,
                first_ms=prediction.timestamp,
                opened=self.clock(),
                # Seeded by the window: a replay of the same events draws the same sample.
                sample=Reservoir(self.sample_rows, seed=key.start_ns),
            )
            self.open[slot] = window
            self.windows[key] = window
        self._sample(window, prediction, features)
        window.positions.append(prediction.position)
        window.predictions += 1
        self.awaiting[prediction.event_id] = (window.key, prediction.prediction)
        if len(self.awaiting) > self.max_awaiting:
            self.awaiting.popitem(last=False)
            self.stats.awaiting_evicted += 1
        early = self.early_labels.pop(prediction.event_id, None)
        if early is not None:
            self.apply_label(prediction.event_id, early[0], None)
        if window.predictions >= self.window_size:
            closed.append(self._close(window, "size"))
        return closed

    def _sample(self, window: Window, prediction: Prediction, features: Features) -> None:
        """Offer the event to the window's sample (kept raw: parsed only if it is tested)."""
        assert window.sample is not None
        slot = window.sample.offer()
        if slot is not None:
            window.sample.put(slot, features, prediction.probability)
        # Held with the window even when its row is not sampled: the event is part of what the
        # window's drift point covers, so it is replayed if the point is never written.
        window.positions.append(features.position)

    # --- labels -------------------------------------------------------------------------------

    def apply_label(self, event_id: str, label: int, position: Position | None) -> bool:
        """Count a label in its prediction's window. False when the prediction is not known (yet)."""
        found = self.awaiting.pop(event_id, None)
        if found is None:
            self.early_labels[event_id] = (label, self.clock())
            self.early_labels.move_to_end(event_id)
            self.stats.labels_early += 1
            while len(self.early_labels) > self.max_unjoined:
                self.early_labels.popitem(last=False)
                self.stats.labels_unknown += 1
            return False
        key, prediction = found
        window = self.windows.get(key)
        if window is None:  # its window has expired: too late to count
            self.stats.labels_expired += 1
            return False
        window.confusion.add(prediction, label)
        if position is not None:
            window.label_positions.append(position)
        self.dirty.add(key)
        self.stats.labels_applied += 1
        return True

    def take_dirty(self) -> list[Window]:
        """Windows whose performance changed since the last call (their label positions go with them)."""
        windows = [self.windows[key] for key in self.dirty if key in self.windows]
        self.dirty.clear()
        return windows

    # --- time ---------------------------------------------------------------------------------

    def expire(self) -> list[ClosedWindow]:
        """Close windows open too long (wall time); drop what waited too long. Returns closed windows."""
        now = self.clock()
        closed = [
            self._close(window, "idle")
            for window in list(self.open.values())
            if now - window.opened >= self.window_seconds
        ]
        waiting: tuple[tuple[OrderedDict[str, Any], str], ...] = (
            (self.features, "features_expired"),
            (self.predictions, "predictions_expired"),
        )
        for table, counter in waiting:
            while table:
                oldest = next(iter(table.values()))
                if now - oldest.arrived < self.join_timeout_s:
                    break
                table.popitem(last=False)
                self.release([oldest.position])
                setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        while self.early_labels:
            _, (_, arrived) = next(iter(self.early_labels.items()))
            if now - arrived < self.join_timeout_s:
                break
            self.early_labels.popitem(last=False)
            self.stats.labels_unknown += 1
        while self.windows:
            window = next(iter(self.windows.values()))
            if window.closed is None or now - window.closed < self.label_wait_s or window.key in self.dirty:
                break
            self.windows.popitem(last=False)
        return closed

    def _close(self, window: Window, reason: str) -> ClosedWindow:
        del self.open[(window.key.model_name, window.key.version)]
        window.closed = self.clock()
        self.stats.windows_closed += 1
        assert window.sample is not None
        closed = ClosedWindow(
            key=window.key,
            sample=window.sample,
            position_lists=[window.positions],
            reason=reason,
            events=window.predictions,
        )
        window.sample, window.positions = None, []
        return closed

    def _bound(self, table: OrderedDict[str, Any], counter: str) -> None:
        while len(table) > self.max_unjoined:
            _, oldest = table.popitem(last=False)
            self.release([oldest.position])
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
