"""Hold-out splits, metrics and the confusion-matrix figure."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split

from fireman.common.errors import UserError
from fireman.common.schema import FEATURE_NAMES, LABEL_COLUMN
from fireman.training.sources import Dataset

FEATURES = list(FEATURE_NAMES)
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")


def split(
    dataset: Dataset, test_size: float, how: str, random_state: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stratified hold-out, or (``how="time"``, InfluxDB history only) the most recent slice."""
    frame = dataset.frame
    if how == "time":
        if not dataset.info.time_ordered:
            raise UserError("--split time needs time-ordered history: use it with --source influx")
        cut = len(frame) - max(1, round(len(frame) * test_size))
        train, holdout = frame.iloc[:cut], frame.iloc[cut:]
    elif how == "stratified":
        counts = frame[LABEL_COLUMN].value_counts()
        if counts.min() < 2:
            raise UserError(
                f"missing label class: class {counts.idxmin()} has a single row, cannot hold any out"
            )
        train, holdout = train_test_split(
            frame, test_size=test_size, stratify=frame[LABEL_COLUMN], random_state=random_state
        )
    else:
        raise UserError(f"unknown split {how!r}: use stratified or time")
    for part, name in ((train, "training"), (holdout, "hold-out")):
        classes = set(pd.unique(part[LABEL_COLUMN]))
        if len(classes) < 2:
            raise UserError(f"missing label class: the {name} slice only has label {classes.pop()}")
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def score(model: Any, holdout: pd.DataFrame) -> dict[str, float]:
    truth = holdout[LABEL_COLUMN].to_numpy()
    features = holdout[FEATURES]
    predicted = model.predict(features)
    probability = model.predict_proba(features)[:, 1]
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "precision": float(precision_score(truth, predicted, zero_division=0)),
        "recall": float(recall_score(truth, predicted, zero_division=0)),
        "f1": float(f1_score(truth, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(truth, probability)),
        "log_loss": float(log_loss(truth, np.clip(probability, 1e-15, 1 - 1e-15), labels=[0, 1])),
    }


def confusion_figure(model: Any, holdout: pd.DataFrame, title: str) -> Figure:
    import sys

    import matplotlib

    # sklearn's display imports pyplot; pin the headless Agg backend unless a caller already chose one.
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    figure = Figure(figsize=(4.5, 4))
    axes = figure.add_subplot()
    ConfusionMatrixDisplay.from_predictions(
        holdout[LABEL_COLUMN],
        model.predict(holdout[FEATURES]),
        display_labels=["ham", "spam"],
        ax=axes,
        colorbar=False,
    )
    axes.set_title(title)
    figure.tight_layout()
    return figure


def missing_rate(frame: pd.DataFrame) -> float:
    return float(frame[FEATURES].isna().to_numpy().mean()) if len(frame) else 0.0
