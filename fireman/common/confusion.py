"""Confusion counts of a binary classifier and the metrics read from them, without scikit-learn.

The monitor keeps one per window; the live comparison keeps one per model version. Both run in
processes (``fireman monitor``, ``fireman promote --live``) that must not pay scikit-learn's import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def add(self, prediction: int, label: int) -> None:
        if prediction == 1:
            if label == 1:
                self.tp += 1
            else:
                self.fp += 1
        elif label == 1:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def metrics(self) -> dict[str, float]:
        n = self.n
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "accuracy": (self.tp + self.tn) / n if n else math.nan,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
