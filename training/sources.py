"""Training data: the Spambase file or labelled history in InfluxDB, as one DataFrame shape.

Both sources return ``Cont_1``..``Cont_57`` as float64 (NaN for a missing value) and ``label`` as
int64; InfluxDB history comes sorted by event time, so a time-based hold-out is the frame's tail, and
keeps each row's event time (``event_time``, ms since the epoch, as InfluxDB answers) so the gate can
tell which hold-out rows fall inside a champion's training window.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fireman.common.errors import UserError
from fireman.common.influx import InfluxClient, InfluxError, quote_identifier
from fireman.common.measurements import LABELS, MEASUREMENTS
from fireman.common.schema import FEATURE_NAMES, LABEL_COLUMN
from fireman.training.settings import TrainingSettings

FEATURES = list(FEATURE_NAMES)
COLUMNS = [*FEATURES, LABEL_COLUMN]
EVENT_TIME = "event_time"
SOURCES = ("file", "influx")
_META_KEY = b"fireman"


@dataclass
class DataInfo:
    """Where a training frame came from; logged with the run and tagged on the model version."""

    source: str
    since: str | None = None
    until: str | None = None
    unlabelled_excluded: int = 0
    missing_rate_injected: float | None = None
    database: str | None = None
    time_ordered: bool = False


@dataclass
class Dataset:
    frame: pd.DataFrame
    info: DataInfo

    @property
    def rows(self) -> int:
        return len(self.frame)


def resolve_window(
    since: datetime | None, until: datetime | None, last_hours: float | None, default_hours: float
) -> tuple[datetime, datetime]:
    """The half-open window [since, until) in UTC; naive datetimes are taken as UTC."""
    if last_hours is not None and since is not None:
        raise UserError("give either --since or --last-hours, not both")
    end = _utc(until) if until is not None else datetime.now(UTC)
    if since is not None:
        start = _utc(since)
    else:
        hours = last_hours if last_hours is not None else default_hours
        if hours <= 0:
            raise UserError(f"--last-hours must be positive, got {hours}")
        start = end - timedelta(hours=hours)
    if start >= end:
        raise UserError(
            f"empty training window: since {start.isoformat()} is not before until {end.isoformat()}"
        )
    return start, end


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


def load_file(settings: TrainingSettings) -> Dataset:
    from fireman.common.dataset import load_spambase, mask_completely_at_random

    rate = settings.missing_rate
    frame = load_spambase(settings.dataset)
    if rate > 0:
        frame = mask_completely_at_random(frame, rate, seed=settings.random_state)
    return Dataset(frame.reset_index(drop=True), DataInfo(source="file", missing_rate_injected=rate))


def load_influx(
    settings: TrainingSettings,
    since: datetime | None = None,
    until: datetime | None = None,
    last_hours: float | None = None,
) -> Dataset:
    """Join ``measurements`` with ``labels`` on ``event_id`` over a window; unlabelled events are counted."""
    start, end = resolve_window(since, until, last_hours, settings.history_hours)
    where = f"WHERE time >= {_ns(start)} AND time < {_ns(end)}"
    database = settings.influxdb.database
    try:
        with InfluxClient(settings.influxdb) as client:
            label_query = f'SELECT "event_id", "label" FROM {quote_identifier(LABELS.name)} {where}'
            labels = _query_labels(client, label_query)
            events = _query_measurements(
                client, f"SELECT * FROM {quote_identifier(MEASUREMENTS.name)} {where}"
            )
    except InfluxError as exc:
        raise UserError(
            f"could not read training history from InfluxDB database {database!r}: {exc}"
        ) from exc
    info = DataInfo(
        source="influx", since=start.isoformat(), until=end.isoformat(), database=database, time_ordered=True
    )
    if events.empty or labels.empty:
        what = "measurements" if events.empty else "labels"
        raise TooLittleHistory(
            f"empty training window: no {what} in InfluxDB database {database!r} "
            f"between {info.since} and {info.until}; {_need(0, settings.min_rows)}"
        )
    joined = events.merge(labels, on="event_id", how="inner", validate="one_to_one")
    info.unlabelled_excluded = len(events) - len(joined)
    joined = joined.sort_values("time", kind="stable").reset_index(drop=True)
    frame = joined[COLUMNS].copy()
    frame[LABEL_COLUMN] = frame[LABEL_COLUMN].astype("int64")
    frame[EVENT_TIME] = joined["time"].astype("int64")
    return Dataset(frame, info)


def count_labelled(settings: TrainingSettings, since: datetime, until: datetime) -> int:
    """How many rows ``load_influx`` would return for [since, until): labelled events, by ``event_id``.

    Reads only the event ids, so waiting for history to accumulate does not pull the features each time.
    """
    start, end = resolve_window(since, until, None, settings.history_hours)
    where = f"WHERE time >= {_ns(start)} AND time < {_ns(end)}"
    try:
        with InfluxClient(settings.influxdb) as client:
            labelled = _event_ids(client, LABELS.name, where)
            events = _event_ids(client, MEASUREMENTS.name, where) if labelled else set()
    except InfluxError as exc:
        raise UserError(
            f"could not count labelled history in InfluxDB database {settings.influxdb.database!r}: {exc}"
        ) from exc
    return len(labelled & events)


def _event_ids(client: InfluxClient, measurement: str, where: str) -> set[str]:
    query = f'SELECT "event_id" FROM {quote_identifier(measurement)} {where}'
    return {row["event_id"] for row in client.iter_query(query) if row.get("event_id") is not None}


def _query_measurements(client: InfluxClient, query: str) -> pd.DataFrame:
    # Column-wise from the streamed rows: one list per column, one float64 array per feature at the end.
    columns: dict[str, list[Any]] = {name: [] for name in ("time", "event_id", *FEATURES)}
    appenders = [(name, values.append) for name, values in columns.items()]
    for row in client.iter_query(query):
        get = row.get
        for name, append in appenders:
            append(get(name))
    data: dict[str, Any] = {
        "time": np.asarray(columns["time"], dtype="int64"),
        "event_id": columns["event_id"],
    }
    for name in FEATURES:
        data[name] = np.asarray(columns[name], dtype="float64")  # None becomes NaN
    frame = pd.DataFrame(data)
    frame = frame[frame["event_id"].notna()]
    # A replayed event overwrites its point, but keep the newest copy if two ever differ in time.
    return frame.drop_duplicates("event_id", keep="last")


def _query_labels(client: InfluxClient, query: str) -> pd.DataFrame:
    event_ids: list[Any] = []
    labels: list[Any] = []
    for row in client.iter_query(query):
        event_ids.append(row.get("event_id"))
        labels.append(row.get("label"))
    frame = pd.DataFrame({"event_id": event_ids, LABEL_COLUMN: labels}).dropna()
    # The last label written for an event wins (a corrected label replaces the first one).
    return frame.drop_duplicates("event_id", keep="last")


def load(
    settings: TrainingSettings,
    source: str = "file",
    since: datetime | None = None,
    until: datetime | None = None,
    last_hours: float | None = None,
) -> Dataset:
    if source == "file":
        if since is not None or until is not None or last_hours is not None:
            raise UserError("--since/--until/--last-hours apply to --source influx only")
        return load_file(settings)
    if source == "influx":
        return load_influx(settings, since, until, last_hours)
    raise UserError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")


class TooLittleHistory(UserError):
    """The window holds too few labelled rows: more data or a wider window helps, a retry does not."""


def _need(rows: int, min_rows: int) -> str:
    return (
        f"{rows} labelled rows found, at least {min_rows} needed (FIREMAN_TRAIN_MIN_ROWS): "
        "widen the window or wait until more labelled events have arrived"
    )


def require_rows(rows: int, min_rows: int, window: str) -> None:
    """``window`` reads like " between A and B"."""
    if rows < min_rows:
        raise TooLittleHistory(f"too few labelled rows to train{window}: {_need(rows, min_rows)}")


def validate(dataset: Dataset, min_rows: int) -> None:
    """Raise UserError unless the frame has the expected columns, enough rows and both classes."""
    frame = dataset.frame
    missing = [name for name in COLUMNS if name not in frame.columns]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserError(f"training data lacks columns: {shown}")
    window = f" between {dataset.info.since} and {dataset.info.until}" if dataset.info.since else ""
    if frame.empty:
        raise TooLittleHistory(f"empty training window: no labelled events{window}; {_need(0, min_rows)}")
    require_rows(len(frame), min_rows, window)
    bad = frame[FEATURES].dtypes[frame[FEATURES].dtypes != "float64"]
    if len(bad):
        raise UserError(f"feature columns must be float64: {', '.join(bad.index[:5])}")
    labels = set(pd.unique(frame[LABEL_COLUMN]))
    if not labels <= {0, 1}:
        raise UserError(
            f"labels must be 0 or 1, found {', '.join(str(label) for label in sorted(labels - {0, 1})[:5])}"
        )
    if len(labels) < 2:
        only = next(iter(labels))
        absent = 1 - int(only)
        raise UserError(f"missing label class: every row{window} has label {only}, none has label {absent}")


def write_parquet(dataset: Dataset, path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(dataset.frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[_META_KEY] = json.dumps(asdict(dataset.info)).encode()
    partial = path.with_suffix(".part")
    pq.write_table(table.replace_schema_metadata(metadata), partial)
    partial.replace(path)
    return path


def read_parquet(path: Path) -> Dataset:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise UserError(f"training data file {path} does not exist")
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(_META_KEY)
    info = DataInfo(**json.loads(raw)) if raw else DataInfo(source="parquet")
    return Dataset(table.to_pandas(), info)
