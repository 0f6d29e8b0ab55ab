"""The stream scorer: ``measurements`` in, one model call per batch, predictions to Kafka and InfluxDB.

Per batch: poll up to ``max_batch`` events (or ``max_wait_ms``), decode them into one float64 matrix
in the model's feature order, call ``predict_proba`` once, produce the predictions and wait for
Kafka's acks, hand the InfluxDB lines to the background writer, and commit the offsets of every
batch the writer has made durable. Poison messages go to the DLQ and the batch goes on.

Two batches overlap: while one batch is in ``predict_proba`` (native code that releases the GIL), the
loop produces the previous batch's predictions and polls and decodes the next. Batches still finish
strictly in order, each with the model it was scored by.

Kafka refusing predictions (e.g. a broker outage longer than the delivery timeout) is not fatal: the
batch is not committed, its partitions are rewound to its first offsets and it is scored again.

Shadow scoring: when the registry's challenger alias names another servable version than production,
that version scores the same decoded batch, on the same model thread, right after production. Its
predictions become InfluxDB lines with ``role=shadow`` in the same writer submission as production's,
so one commit covers both; they never reach Kafka. A challenger failing on a batch loses its shadow
lines for that batch and nothing else. See docs/decisions.md, "Shadow scoring in the scorer's batch".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from fireman.common.dead_letter import dead_letter_headers
from fireman.common.influx import InfluxClient, InfluxError, Point
from fireman.common.kafka_io import AckProducer, BatchConsumer, KafkaDeliveryError, Offsets, Record
from fireman.common.metrics import Family, Snapshot, StatsCollector
from fireman.common.model import Registry, ServingModel
from fireman.common.runtime import freeze_heap
from fireman.common.schema import now_ms
from fireman.serving.codec import (
    ColumnMap,
    DecodedBatch,
    column_map,
    decode_batch,
    drop_rows,
    encode_predictions,
    shadow_lines,
)
from fireman.serving.influx_writer import InfluxWriter
from fireman.serving.reload import ModelWatcher, model_event, switch_message
from fireman.serving.settings import ScorerSettings

log = logging.getLogger(__name__)

# Refused batches in a row after which the producer is replaced (see AckProducer.replace): each one
# waited a full delivery timeout, so a broker that is really down is retried by a fresh producer too.
PRODUCER_REPLACE_AFTER = 3


@dataclass
class ScorerStats:
    polled: int = 0
    scored: int = 0
    poison: int = 0
    committed: int = 0
    batches: int = 0
    switches: int = 0
    rewinds: int = 0
    model_version: str | None = None
    model_backend: str | None = None  # what scores production: sklearn or onnxruntime
    shadow_version: str | None = None  # the challenger being scored in shadow, if any
    shadow_scored: int = 0
    shadow_failures: int = 0  # batches whose shadow score raised (production unaffected)
    latencies_ms: deque[int] = field(default_factory=lambda: deque(maxlen=200_000))


@dataclass
class _Pending:
    seq: int
    offsets: Offsets
    events: int


@dataclass
class _Flight:
    """A polled batch on its way through the model: offsets, decoded events, and the prediction."""

    first_offsets: Offsets
    next_offsets: Offsets
    records: list[Record]
    batch: DecodedBatch
    model: ServingModel
    prediction: Future[tuple[list[int], list[float]]] | None
    shadow: ServingModel | None = None
    shadow_prediction: Future[tuple[list[int], list[float]]] | None = None


@dataclass
class _Shadow:
    """The challenger as the scorer uses it: the model, and its columns in production's matrix."""

    model: ServingModel
    columns: ColumnMap

    def score(self, features: np.ndarray) -> tuple[list[int], list[float]]:
        # On the model thread: picking the columns out copies the matrix, off the scorer's loop.
        return self.model.score(self.columns.apply(features))


class _Throttle:
    """At most one log line per interval; counts the occurrences it held back."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._after = 0.0
        self._held = 0

    def due(self) -> int | None:
        """None while quiet; else how many occurrences went unlogged since the last line."""
        now = time.monotonic()
        if now < self._after:
            self._held += 1
            return None
        held, self._held, self._after = self._held, 0, now + self.interval_s
        return held


SCORER_FAMILIES = [
    Family("polled", "Events read from Kafka."),
    Family("scored", "Events scored by the production model."),
    Family("poison", "Unreadable events sent to the dead-letter topic."),
    Family("committed", "Events whose offsets were committed."),
    Family("batches", "Batches scored; scored / batches is the mean batch size."),
    Family("switches", "Production model versions switched to."),
    Family("rewinds", "Batches scored again after Kafka refused their predictions."),
    Family("shadow_scored", "Events scored by the challenger, in shadow."),
    Family("shadow_failures", "Batches whose shadow score failed (production unaffected)."),
    Family("lag", "Events behind the end of this scorer's partitions."),
    Family("influx_buffered_points", "Points waiting for InfluxDB."),
    Family("latency_ms", "Event time to prediction, over the last 200,000 events, by quantile."),
    Family("model", "The versions being scored: 1 per version and role (production, shadow)."),
    Family("model_backend", "What scores production: 1 for its version and backend (sklearn, onnxruntime)."),
]


def scorer_metrics(scorer: Scorer) -> StatsCollector:
    """The scorer's Prometheus families, read from its stats when scraped."""

    def read() -> Snapshot:
        stats = scorer.stats
        counters = {
            name: float(getattr(stats, name))
            for name in (
                "polled",
                "scored",
                "poison",
                "committed",
                "batches",
                "switches",
                "rewinds",
                "shadow_scored",
                "shadow_failures",
            )
        }
        consumer, writer = scorer._consumer, scorer._writer
        gauges = {
            "lag": consumer.last_lag if consumer is not None else None,
            "influx_buffered_points": writer.buffered_points if writer is not None else None,
        }
        roles = ((stats.model_version, "production"), (stats.shadow_version, "shadow"))
        versions: dict[tuple[str, ...], float] = {(version, role): 1.0 for version, role in roles if version}
        labelled: dict[str, tuple[tuple[str, ...], Mapping[tuple[str, ...], float]]] = {
            "model": (("version", "role"), versions)
        }
        if stats.model_version and stats.model_backend:
            labelled["model_backend"] = (
                ("version", "backend"),
                {(stats.model_version, stats.model_backend): 1.0},
            )
        try:
            recent = np.fromiter(stats.latencies_ms, dtype=np.float64)
        except RuntimeError:  # appended to while copied: skip this scrape's quantiles
            recent = np.empty(0)
        if len(recent):
            quantiles = zip(("0.5", "0.99"), np.percentile(recent, [50, 99]), strict=True)
            labelled["latency_ms"] = (("quantile",), {(q,): float(v) for q, v in quantiles})
        return Snapshot(counters=counters, gauges=gauges, labelled_gauges=labelled)

    return StatsCollector("scorer", SCORER_FAMILIES, read)


class Scorer:
    def __init__(self, settings: ScorerSettings, registry: Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.stats = ScorerStats()
        self.ready = threading.Event()  # set once a model is loaded and the consumer subscribed
        self.model: ServingModel | None = None
        self.challenger: ServingModel | None = None  # loaded; scored only if it maps onto production
        self._shadow: _Shadow | None = None
        self._pending: deque[_Pending] = deque()
        self._in_flight: _Flight | None = None
        # A flood of poison, or a challenger failing on every batch, must not flood the log.
        self._poison_log = _Throttle(settings.log_interval_s)
        self._shadow_log = _Throttle(settings.log_interval_s)
        self._predictor: ThreadPoolExecutor | None = None
        self._writer: InfluxWriter | None = None
        self._consumer: BatchConsumer | None = None
        self._producer: AckProducer | None = None
        self._refused_in_a_row = 0

    def new_registry(self) -> Registry:
        """The registry this scorer loads versions through when it was given none."""
        return Registry(self.settings.mlflow, onnx=self.settings.onnx)

    def assignment(self) -> list[tuple[str, int]]:
        """The partitions this scorer owns now; safe to call from any thread."""
        return self._consumer.assignment() if self._consumer is not None else []

    @property
    def paused(self) -> bool:
        return self._consumer is not None and self._consumer.paused

    def run(self, stop: threading.Event) -> None:
        """Score until ``stop`` is set; then finish the batch in flight, drain, commit and return."""
        settings = self.settings
        registry = self.registry or self.new_registry()
        self._prepare_database()
        writer = self._writer = InfluxWriter(settings.influxdb, settings.influx_chunk_points)
        watcher = ModelWatcher(registry, settings.reload_interval_s, self._emit)
        challengers = self._challenger_watcher(registry)
        try:
            model = watcher.wait_for_first(stop)
            if model is None:
                return
            self._switch(model)
            watcher.start(model.version)
            if challengers is not None:
                # One look before consuming, so a challenger already named scores from the first batch.
                self._set_challenger(challengers.check())
                challengers.start(self.challenger.version if self.challenger else None)
            self._producer = AckProducer(settings.kafka, settings.delivery_timeout_ms)
            self._predictor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
            self._consumer = BatchConsumer(
                settings.kafka,
                settings.group_id,
                [settings.kafka.topic_measurements],
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            freeze_heap()
            self.ready.set()
            self._loop(stop, watcher, challengers)
        finally:
            watcher.stop()
            if challengers is not None:
                challengers.stop()
            if self.registry is None:
                registry.close()
            self._shutdown(writer)

    def _challenger_watcher(self, registry: Registry) -> ModelWatcher | None:
        mlflow = self.settings.mlflow
        if mlflow.challenger_alias == mlflow.production_alias:
            log.warning(
                "the challenger alias is the production alias (%r): no shadow scoring",
                mlflow.production_alias,
            )
            return None
        return ModelWatcher(
            registry, self.settings.reload_interval_s, self._emit, alias=mlflow.challenger_alias
        )

    def _loop(self, stop: threading.Event, watcher: ModelWatcher, challengers: ModelWatcher | None) -> None:
        assert self._consumer is not None
        settings = self.settings
        timeout_s = settings.max_wait_ms / 1000
        logged_at, logged_scored, logged_batches = time.monotonic(), 0, 0
        while not stop.is_set():
            fresh = watcher.take_pending()
            if fresh is not None:
                self._switch(fresh)
            if challengers is not None:
                if challengers.take_retired():
                    self._set_challenger(None)
                challenger = challengers.take_pending()
                if challenger is not None:
                    self._set_challenger(challenger)
            self._commit_durable()
            self._backpressure()
            # With a batch in the model, take only what is already fetched: waiting to fill a batch
            # would hold the finished one back.
            records = self._consumer.poll(settings.max_batch, 0 if self._in_flight else timeout_s)
            flight = self._start(records) if records else None
            previous, self._in_flight = self._in_flight, flight
            if previous is not None:
                self._finish(previous)
            now = time.monotonic()
            if now >= logged_at + settings.log_interval_s:
                stats = self.stats
                batches = max(1, stats.batches - logged_batches)
                log.info(
                    "%.0f events/s, %.0f events/batch, lag %s, model %s version %s, influx buffer %d, "
                    "%d poison so far, shadow %s (%d scored so far)%s",
                    (stats.scored - logged_scored) / (now - logged_at),
                    (stats.scored - logged_scored) / batches,
                    self._consumer.lag(),
                    self.model.lineage.model_name if self.model else "-",
                    stats.model_version,
                    self._writer.buffered_points if self._writer else 0,
                    stats.poison,
                    f"version {stats.shadow_version}" if stats.shadow_version else "off",
                    stats.shadow_scored,
                    " (paused: InfluxDB behind)" if self._consumer.paused else "",
                )
                logged_at, logged_scored, logged_batches = now, stats.scored, stats.batches

    def _start(self, records: list[Record]) -> _Flight:
        """Decode a polled batch, dead-letter its poison, and hand its matrix to the model thread."""
        assert self._predictor is not None and self.model is not None
        model = self.model
        first: Offsets = {}
        following: Offsets = {}
        for record in records:
            key = (record.topic(), record.partition())
            first.setdefault(key, record.offset())  # type: ignore[arg-type]
            following[key] = record.offset() + 1  # type: ignore[index, operator]
        batch = decode_batch([r.value() for r in records], model.feature_order)  # type: ignore[misc]
        for index, reason in batch.poison:
            self._dead_letter(records[index], reason)
        flight = _Flight(first, following, records, batch, model, None)
        if len(batch):
            flight.prediction = self._predictor.submit(model.score, batch.matrix)
            shadow = self._shadow
            if shadow is not None:
                # After production's score on the same thread: its predictions go to Kafka while the
                # challenger scores.
                flight.shadow = shadow.model
                flight.shadow_prediction = self._predictor.submit(shadow.score, batch.matrix)
        return flight

    def _finish(self, flight: _Flight) -> bool:
        """Publish a flight's predictions and queue its InfluxDB lines; False if Kafka refused them."""
        assert self._producer is not None and self._writer is not None
        batch = flight.batch
        lines: list[str] = []
        latencies: list[int] = []
        try:
            if flight.prediction is not None:
                try:
                    predictions, probabilities = flight.prediction.result()
                except ValueError as exc:
                    predictions, probabilities = self._score_one_by_one(flight, exc)
                messages, lines, latencies = encode_predictions(
                    batch, predictions, probabilities, flight.model.lineage, now_ms()
                )
                keys = [sensor_id.encode() for sensor_id in batch.sensor_ids]
                self._producer.produce_many(self.settings.kafka.topic_predictions, messages, keys)
            self._producer.flush()
        except KafkaDeliveryError as exc:
            log.warning("Kafka did not acknowledge a batch (%s): it will be scored again", exc)
            self._rewind(flight)
            self._refused_in_a_row += 1
            if self._refused_in_a_row % PRODUCER_REPLACE_AFTER == 0:
                log.warning(
                    "%d batches in a row refused: starting a fresh Kafka producer", self._refused_in_a_row
                )
                self._producer.replace()
            return False
        self._refused_in_a_row = 0
        self.stats.latencies_ms.extend(latencies)
        # In the same submission as production's lines: the batch's one commit covers both.
        lines.extend(self._shadow_lines(flight))
        seq = self._writer.submit(lines)
        self._pending.append(_Pending(seq, flight.next_offsets, len(flight.records)))
        stats = self.stats
        stats.polled += len(flight.records)
        stats.scored += len(batch)
        stats.poison += len(batch.poison)
        stats.batches += 1
        return True

    def _score_one_by_one(self, flight: _Flight, error: ValueError) -> tuple[list[int], list[float]]:
        """After the model refused a batch for its data: each event alone, those it refuses to the DLQ.

        Raising would end the scorer, and every restart would meet the same event again. Their
        dead letters are flushed with the predictions, before the batch's offsets are committed. A
        model that refuses every event of the batch is what is wrong, not the events: that raises,
        and the events wait in Kafka for a model that works instead of all going to the DLQ.
        """
        batch = flight.batch
        log.warning("the model refused a batch of %d events (%s): scoring them one by one", len(batch), error)
        # Shadow scores of the whole batch would no longer line up with its events.
        flight.shadow_prediction = None
        refused: dict[int, str] = {}
        predictions: list[int] = []
        probabilities: list[float] = []
        for row in range(len(batch)):
            try:
                prediction, probability = flight.model.score(batch.matrix[row : row + 1])
            except ValueError as exc:
                refused[row] = f"model version {flight.model.version} refused the event: {exc}"
                continue
            predictions += prediction
            probabilities += probability
        if not predictions:
            raise error
        for row, reason in refused.items():
            self._dead_letter(flight.records[batch.indices[row]], reason)
        drop_rows(batch, refused)
        return predictions, probabilities

    def _shadow_lines(self, flight: _Flight) -> list[str]:
        """The challenger's lines of a published flight; none if it failed (logged, production unaffected)."""
        if flight.shadow_prediction is None or flight.shadow is None:
            return []
        try:
            predictions, probabilities = flight.shadow_prediction.result()
        except Exception as exc:
            self.stats.shadow_failures += 1
            held = self._shadow_log.due()
            if held is not None:
                log.warning(
                    "challenger version %s failed on a batch of %d events, no shadow points for it: %r%s",
                    flight.shadow.version,
                    len(flight.batch),
                    exc,
                    f" ({held} more failed batches since the last report)" if held else "",
                )
            return []
        self.stats.shadow_scored += len(flight.batch)
        return shadow_lines(flight.batch, predictions, probabilities, flight.shadow.version, now_ms())

    def _rewind(self, failed: _Flight) -> None:
        """Seek back to the first offset of the failed batch and of the one behind it, and drop both."""
        assert self._consumer is not None
        later, self._in_flight = self._in_flight, None
        positions = dict(failed.first_offsets)
        if later is not None:
            for key, offset in later.first_offsets.items():
                positions[key] = min(offset, positions.get(key, offset))
        self._consumer.seek(positions)
        self.stats.rewinds += 1

    def _drain_in_flight(self) -> None:
        flight, self._in_flight = self._in_flight, None
        if flight is not None:
            self._finish(flight)

    def _dead_letter(self, record: Record, reason: str) -> None:
        assert self._producer is not None
        held = self._poison_log.due()
        if held is not None:
            log.warning(
                "poison message %s[%s]@%s to the DLQ: %s%s",
                record.topic(),
                record.partition(),
                record.offset(),
                reason,
                f" ({held} more since the last report)" if held else "",
            )
        value, key = record.value(), record.key()
        self._producer.produce(
            self.settings.kafka.topic_dlq,
            value.encode() if isinstance(value, str) else (value or b""),
            key.encode() if isinstance(key, str) else key,
            headers=dead_letter_headers(
                reason, "scorer", str(record.topic()), record.partition() or 0, record.offset() or 0
            ),
        )

    def _commit_durable(self, asynchronous: bool = True) -> None:
        if self._writer is None or self._consumer is None:
            return
        durable = self._writer.durable_seq
        offsets: Offsets = {}
        events = 0
        while self._pending and self._pending[0].seq <= durable:
            done = self._pending.popleft()
            offsets.update(done.offsets)
            events += done.events
        if offsets:
            self._consumer.commit(offsets, asynchronous=asynchronous)
            self.stats.committed += events

    def _backpressure(self) -> None:
        assert self._consumer is not None and self._writer is not None
        buffered = self._writer.buffered_points
        bound = self.settings.influx_buffer_points
        if buffered >= bound and not self._consumer.paused:
            log.warning("InfluxDB is %d points behind (bound %d): pausing consumption", buffered, bound)
            self._consumer.pause()
        elif self._consumer.paused and buffered <= bound // 2:
            log.info("InfluxDB caught up: resuming consumption")
            self._consumer.resume()

    def _on_revoke(self, partitions: list[tuple[str, int]]) -> None:
        """Before partitions move: finish and commit what is in hand, so the new owner starts after it."""
        self._drain_in_flight()
        if self._writer is not None and self._pending:
            self._writer.wait_durable(self._pending[-1].seq, self.settings.drain_timeout_s)
        self._commit_durable(asynchronous=False)
        self._forget(partitions)

    def _on_lost(self, partitions: list[tuple[str, int]]) -> None:
        """The group moved on without us (e.g. a session timeout): nothing of these can be committed.

        The new owner replays from the last commit, so the batch in the model is dropped rather than
        published, and pending offsets of the lost partitions are forgotten. No broker call here: the
        coordinator is usually what went away.
        """
        log.warning("lost %d partitions; their uncommitted events will be replayed", len(partitions))
        self._in_flight = None
        self._forget(partitions)

    def _forget(self, partitions: list[tuple[str, int]]) -> None:
        gone = set(partitions)
        for pending in self._pending:
            for key in gone & pending.offsets.keys():
                del pending.offsets[key]

    def _switch(self, model: ServingModel) -> None:
        previous = self.model
        self.model = model
        self.stats.model_version = model.version
        self.stats.model_backend = model.backend
        if previous is not None:
            self.stats.switches += 1
        log.info("%s", switch_message(model, previous))
        self._emit(
            model_event(
                "switch" if previous else "start",
                model.lineage.model_name,
                {
                    "from_version": previous.version if previous else "",
                    "to_version": model.version,
                    "run_id": model.lineage.run_id,
                    "load_seconds": model.load_seconds,
                },
            )
        )
        self._plan_shadow()

    def _set_challenger(self, model: ServingModel | None) -> None:
        previous, self.challenger = self.challenger, model
        if model is not None:
            log.info(
                "challenger %s version %s (run %s) loaded and checked in %.2f s%s",
                model.lineage.model_name,
                model.version,
                model.lineage.run_id,
                model.load_seconds,
                ", as production: no shadow points" if model.version == self.stats.model_version else "",
            )
        elif previous is not None:
            log.info("challenger version %s no longer holds the alias", previous.version)
        self._plan_shadow()

    def _plan_shadow(self) -> None:
        """Between batches: whether, and how, the challenger scores beside the production model."""
        challenger, model = self.challenger, self.model
        shadow = None
        if challenger is not None and model is not None and challenger.version != model.version:
            columns = column_map(model.feature_order, challenger.feature_order)
            if columns is None:
                missing = sorted(set(challenger.feature_order) - set(model.feature_order))
                log.warning(
                    "challenger version %s reads %d feature(s) that production version %s does not "
                    "decode (%s): no shadow scoring of it",
                    challenger.version,
                    len(missing),
                    model.version,
                    ", ".join(missing[:5]),
                )
            else:
                shadow = _Shadow(challenger, columns)
        before = self._shadow.model if self._shadow else None
        if shadow is not None and shadow.model is not before:
            log.info(
                "scoring version %s in shadow beside version %s",
                shadow.model.version,
                self.stats.model_version,
            )
        elif shadow is None and before is not None:
            log.info("shadow scoring of version %s stops", before.version)
        self._shadow = shadow
        self.stats.shadow_version = shadow.model.version if shadow else None

    def _emit(self, point: Point) -> None:
        if self._writer is not None:
            self._writer.submit_points([point])

    def _prepare_database(self) -> None:
        try:
            with InfluxClient(self.settings.influxdb) as client:
                client.ensure_database()
        except InfluxError as exc:
            log.warning("InfluxDB not ready (%s); writes will be retried", exc)

    def _shutdown(self, writer: InfluxWriter) -> None:
        drain = self.settings.drain_timeout_s
        try:
            self._drain_in_flight()
            if self._predictor is not None:
                self._predictor.shutdown(wait=True)
            if self._producer is not None:
                self._producer.close()
            if self._pending and not writer.wait_durable(self._pending[-1].seq, drain):
                log.warning(
                    "InfluxDB writes still pending after %.0f s; those events will be replayed", drain
                )
            self._commit_durable(asynchronous=False)
        finally:
            writer.close(timeout_s=1.0)
            if self._consumer is not None:
                consumer, self._consumer = self._consumer, None
                consumer.close()
            log.info(
                "scorer stopped: %d events scored, %d poison, %d committed",
                self.stats.scored,
                self.stats.poison,
                self.stats.committed,
            )
