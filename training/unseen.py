"""Which hold-out rows the champion never trained on, so the gate does not flatter it.

Two rules, both applied when the gate compares a challenger with a champion:

- **window**: a champion trained on InfluxDB history (tags ``data_source=influx``, ``data_since``,
  ``data_until``) loses every hold-out row whose event time falls inside its training window;
- **fingerprints**: every run logs one fingerprint per training row (:func:`fingerprint`); a hold-out
  row *compatible* with one of the champion's rows is dropped.

A fingerprint is one 32-bit hash per feature value, 0 for a missing value (every NaN, and -0.0 is
+0.0). Rows are compared value by value rather than as whole-row hashes because the generator masks
each replay of a Spambase row afresh (20% MCAR): the same row comes back with other holes, and an
exact whole-row hash matched 2 of 4,601 replays against the file-trained champion. Two rows are
compatible when they agree on every feature both have, and share at least one non-zero value (so
two sparse rows of zeros are not the same row by default). On Spambase replays this finds 3,760 of
the 3,764 rows the file-trained champion saw and wrongly drops 49 of 837 unseen ones (an unseen row
lost costs a little evidence; a seen row kept flatters the champion). Rows drifted by the generator
carry other values on the drifted features and stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from fireman.common.schema import FEATURE_NAMES
from fireman.training.sources import EVENT_TIME

FEATURES = list(FEATURE_NAMES)
MISSING = np.uint32(0)
# Candidate rows come from the hold-out row's rarest values; a true copy is missed only if all of them
# were masked in the training copy and still occur in other training rows.
_PROBES = 4


def fingerprint(frame: pd.DataFrame) -> np.ndarray:
    """``(rows, 57)`` uint32: a hash per feature value, ``MISSING`` (0) where the value is missing."""
    values = frame[FEATURES].to_numpy(dtype="float64", copy=True)
    missing = np.isnan(values)
    values[values == 0.0] = 0.0  # -0.0 and +0.0 hash alike
    values[missing] = 0.0
    hashed = _mix(values.view(np.uint64)) >> np.uint64(32)
    out = hashed.astype(np.uint32)
    out[out == MISSING] = 1  # 0 is reserved for "missing"
    out[missing] = MISSING
    return out


def _mix(bits: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves about half the output bits."""
    with np.errstate(over="ignore"):
        z = bits + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


ZERO = fingerprint(pd.DataFrame([[0.0] * len(FEATURES)], columns=FEATURES))[0, 0]


def to_frame(prints: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(prints, columns=FEATURES)


def from_frame(frame: pd.DataFrame) -> np.ndarray:
    return frame[FEATURES].to_numpy(dtype=np.uint32)


def compact(prints: np.ndarray, limit: int, seed: int) -> tuple[np.ndarray, bool]:
    """Distinct fingerprints, sampled down to ``limit`` rows if needed; True if all were kept."""
    distinct = np.unique(prints, axis=0) if len(prints) else prints
    if len(distinct) <= limit:
        return distinct, True
    chosen = np.random.default_rng(seed).choice(len(distinct), size=limit, replace=False)
    return distinct[np.sort(chosen)], False


def seen(holdout: np.ndarray, training: np.ndarray) -> np.ndarray:
    """For each hold-out fingerprint, whether it is compatible with any training fingerprint."""
    result = np.zeros(len(holdout), dtype=bool)
    if not len(holdout) or not len(training):
        return result
    informative = (training != MISSING) & (training != ZERO)
    # Per feature, the training rows with an informative value, sorted by it: lookups by searchsorted.
    index = []
    for j in range(training.shape[1]):
        rows = np.flatnonzero(informative[:, j])
        order = rows[np.argsort(training[rows, j], kind="stable")]
        index.append((training[order, j], order))
    counts = np.zeros(holdout.shape, dtype=np.int64)
    starts = np.zeros(holdout.shape, dtype=np.int64)
    for j, (keys, _) in enumerate(index):
        left = np.searchsorted(keys, holdout[:, j], side="left")
        right = np.searchsorted(keys, holdout[:, j], side="right")
        counts[:, j], starts[:, j] = right - left, left
    counts[(holdout == MISSING) | (holdout == ZERO)] = 0
    observed = training != MISSING
    for i in np.flatnonzero(counts.any(axis=1)):
        row = holdout[i]
        usable = np.flatnonzero(counts[i])
        probes = usable[np.argsort(counts[i, usable], kind="stable")[:_PROBES]]
        candidates = np.unique(
            np.concatenate([index[j][1][starts[i, j] : starts[i, j] + counts[i, j]] for j in probes])
        )
        both = observed[candidates] & (row != MISSING)
        conflict = ((training[candidates] != row) & both).any(axis=1)
        result[i] = not conflict.all()
    return result


def in_window(times: pd.Series, since: str, until: str) -> np.ndarray:
    """Event times (ms since the epoch) inside the half-open window [since, until)."""
    start, end = _ms(since), _ms(until)
    values = times.to_numpy(dtype="int64")
    return (values >= start) & (values < end)


def _ms(text: str) -> int:
    return int(pd.Timestamp(datetime.fromisoformat(text)).value // 1_000_000)


@dataclass
class Exclusion:
    """The hold-out rows the gate compares, and what was left out and why."""

    kept: pd.DataFrame
    total: int
    by_window: int = 0
    by_fingerprint: int = 0
    notes: tuple[str, ...] = ()

    @property
    def excluded(self) -> int:
        return self.by_window + self.by_fingerprint

    def counts(self) -> dict[str, int]:
        return {
            "holdout_rows": len(self.kept),
            "holdout_total": self.total,
            "holdout_excluded": self.excluded,
            "holdout_excluded_window": self.by_window,
            "holdout_excluded_fingerprint": self.by_fingerprint,
        }

    def text(self) -> str:
        parts = [f"{len(self.kept)} of {self.total} hold-out rows compared"]
        if self.excluded:
            parts.append(
                f"{self.excluded} the champion trained on left out "
                f"({self.by_window} in its training window, {self.by_fingerprint} by fingerprint)"
            )
        parts.extend(self.notes)
        return "; ".join(parts)


def exclude(
    holdout: pd.DataFrame, champion_tags: dict[str, Any], champion_prints: np.ndarray | None
) -> Exclusion:
    """The hold-out without the rows the champion trained on (window first, then fingerprints)."""
    keep = np.ones(len(holdout), dtype=bool)
    notes: list[str] = []
    by_window = 0
    since, until = champion_tags.get("data_since"), champion_tags.get("data_until")
    if champion_tags.get("data_source") == "influx" and since and until:
        if EVENT_TIME in holdout.columns:
            inside = in_window(holdout[EVENT_TIME], str(since), str(until))
            by_window = int(inside.sum())
            keep &= ~inside
        else:
            notes.append("the hold-out has no event times, so the champion's window could not be applied")
    by_fingerprint = 0
    if champion_prints is None:
        notes.append("the champion logged no training fingerprints (trained before they existed)")
    else:
        remaining = np.flatnonzero(keep)
        hits = seen(fingerprint(holdout.iloc[remaining]), champion_prints)
        by_fingerprint = int(hits.sum())
        keep[remaining[hits]] = False
    kept = holdout[keep].reset_index(drop=True)
    return Exclusion(kept, len(holdout), by_window, by_fingerprint, tuple(notes))
