"""Drift injected by the generator, as a pure function so monitoring tests can reuse it.

Every covariate kind changes the chosen features' distribution clearly enough that a two-sample test (KS,
Wasserstein) on a few hundred rows flags it, while missing values stay missing:

- ``shift``: add ``magnitude`` reference standard deviations (zeros become non-zero too);
- ``scale``: spread the values ``1 + magnitude`` times wider around the reference mean (the mean
  stays, so this is not just another shift; zeros of sparse features move too, some below 0);
- ``swap``: the first half of the chosen features trade values with the second half (feature ``i``
  takes feature ``i + n/2``'s values), as if sensors were wired to the wrong channels. The default
  list pairs dense capital-run and punctuation features with sparse word frequencies.

One kind is a concept shift instead:

- ``labels``: the features stay exactly as they are and every label is inverted (the world changed
  its mind about what is spam), so online accuracy collapses while covariate drift tests stay calm.
  The chosen features and the magnitude do not apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fireman.common.errors import UserError
from fireman.common.schema import FEATURE_NAMES, LABEL_COLUMN

DRIFT_KINDS = ("shift", "scale", "swap", "labels")


def apply_drift(
    frame: pd.DataFrame,
    kind: str,
    features: Sequence[str],
    magnitude: float = 2.0,
    reference_std: Mapping[str, float] | None = None,
    reference_mean: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """A drifted copy of ``frame``; columns not in ``features`` are untouched (``labels``: only the
    label column changes, 0 <-> 1, and a frame without one is returned unchanged).

    ``reference_std`` and ``reference_mean`` describe each feature in the undrifted data (for
    ``shift`` and ``scale``); without them ``frame``'s own are used, which is only right when
    ``frame`` is the undrifted data.
    """
    check_drift(kind, features, magnitude)
    drifted = frame.copy()
    columns = list(features)
    if kind == "labels":
        if LABEL_COLUMN in frame.columns:
            drifted[LABEL_COLUMN] = 1 - frame[LABEL_COLUMN]
    elif kind == "shift":
        std = reference_std if reference_std is not None else frame[columns].std(skipna=True).to_dict()
        for column in columns:
            spread = float(std.get(column, 0.0) or 0.0)
            drifted[column] = frame[column] + magnitude * (spread if spread > 0 else 1.0)
    elif kind == "scale":
        mean = reference_mean if reference_mean is not None else frame[columns].mean(skipna=True).to_dict()
        for column in columns:
            centre = float(mean.get(column, 0.0))
            drifted[column] = centre + (1.0 + magnitude) * (frame[column] - centre)
    else:
        half = max(1, len(columns) // 2)
        rotated = columns[half:] + columns[:half]
        drifted[columns] = frame[rotated].to_numpy(dtype="float64", copy=True)
    return drifted


def check_drift(kind: str, features: Sequence[str], magnitude: float) -> None:
    if kind not in DRIFT_KINDS:
        raise UserError(f"unknown drift kind {kind!r}; choose one of {', '.join(DRIFT_KINDS)}")
    unknown = [name for name in features if name not in FEATURE_NAMES]
    if unknown:
        raise UserError(f"unknown drift feature(s) {', '.join(unknown)}; expected Cont_1..Cont_57")
    if not features:
        raise UserError("--drift-features needs at least one feature")
    if kind == "swap" and len(set(features)) < 2:
        raise UserError("--drift-kind swap needs at least two distinct features")
    if not np.isfinite(magnitude) or magnitude <= 0:
        raise UserError(f"drift magnitude must be a positive number, got {magnitude}")
