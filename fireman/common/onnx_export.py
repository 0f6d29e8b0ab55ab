"""The ONNX export of a registered version: converted and checked at registration, checked again at load.

The sklearn pipeline stays the source of truth. Training converts it with skl2onnx and logs the export
only if onnxruntime then gives sklearn's answers on check rows (training rows, the same rows with
features missing, and fixed synthetic rows); the loader checks a fresh session again on the fixed
rows before it lets the export score, and falls back to sklearn on any doubt. A version without an
export, or whose export fails its check, is scored by sklearn.

Inputs are float32: onnxruntime's ONNX-ML Imputer has no double kernel, and sklearn's trees cast
their input to float32 before comparing it with their thresholds anyway, so both sides take the same
branches. Probabilities come back as float32: they differ from sklearn's by about 1e-7, enough to
break an exact tie (half the trees each way) the other way, so the serving model has sklearn score
the rows where two classes nearly tie (``near_ties``) and every predicted class is sklearn's.

skl2onnx (training) and onnxruntime (serving) are imported only when used.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# A run artifact of the version's training run; the logged model's metadata names it (METADATA_KEY),
# so a version without that entry has no export and costs the loader no extra request.
ARTIFACT = "onnx/model.onnx"
METADATA_KEY = "onnx_export"
INPUT = "features"
PROBABILITIES = "probabilities"
# Float32 sums of a forest's leaf values: measured differences are below 1e-6.
PROBABILITY_TOLERANCE = 1e-5
# ai.onnx.ml 3 is what skl2onnx targets for tree ensembles; onnxruntime >= 1.20 runs both.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# The scorer has one model thread beside its Kafka loop on a 2-core machine (see `fireman bench onnx`).
INTRA_OP_THREADS = 1


class ExportRejected(Exception):
    """The export cannot stand in for the sklearn model; the message says why."""


def convert(estimator: Any, width: int) -> bytes:
    """The fitted classifier (or pipeline ending in one) as a serialized ONNX model.

    zipmap off: the probabilities come out as a plain (rows, classes) tensor in ``classes_`` order,
    not as a list of dicts.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    model = convert_sklearn(
        estimator,
        initial_types=[(INPUT, FloatTensorType([None, width]))],
        options={id(final): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    return bytes(model.SerializeToString())


class OnnxPredictor:
    """``predict_proba`` of an ONNX export, in an onnxruntime session."""

    def __init__(self, content: bytes, threads: int = INTRA_OP_THREADS) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ExportRejected(f"the export has {len(inputs)} inputs, not one feature matrix")
        self.input = inputs[0].name
        if PROBABILITIES not in {output.name for output in self.session.get_outputs()}:
            raise ExportRejected(f"the export has no {PROBABILITIES!r} output")

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        features = np.ascontiguousarray(matrix, dtype=np.float32)
        return np.asarray(self.session.run([PROBABILITIES], {self.input: features})[0])


def near_ties(proba: np.ndarray) -> np.ndarray:
    """Rows whose top two probabilities are too close for float32 sums to order them as sklearn does."""
    if proba.shape[1] < 2:
        return np.zeros(len(proba), dtype=bool)
    top_two = np.sort(proba, axis=1)[:, -2:]
    return np.asarray((top_two[:, 1] - top_two[:, 0]) <= 2 * PROBABILITY_TOLERANCE)


def check_rows(width: int, sample: np.ndarray | None = None) -> np.ndarray:
    """Rows to check a faster path against sklearn on: fixed synthetic ones, and ``sample`` if given.

    The synthetic rows span several orders of magnitude, with zeros and missing values, plus a row
    of all zeros and one with every feature missing (both legal events). The sample rows come twice:
    as they are, and with a fifth of their values missing, so the imputer's path is checked on
    realistic values too.
    """
    rng = np.random.default_rng(0)
    rows = rng.lognormal(mean=0.0, sigma=2.0, size=(256, width)) * (rng.random((256, width)) < 0.5)
    rows[rng.random(rows.shape) < 0.2] = np.nan
    rows[0, :] = np.nan
    rows[1, :] = 0.0
    if sample is None or not len(sample):
        return rows
    real = np.asarray(sample, dtype=np.float64)
    gaps = real.copy()
    gaps[rng.random(gaps.shape) < 0.2] = np.nan
    return np.vstack([rows, real, gaps])


def verify(predictor: OnnxPredictor, estimator: Any, rows: np.ndarray) -> float:
    """The largest probability difference on ``rows``; raises ExportRejected if they disagree.

    Labels must agree wherever sklearn's top two probabilities are further apart than the tolerance:
    on an exact tie (half the trees each way) float32 sums may break it the other way (the serving
    model lets sklearn score such rows, see ``near_ties``).
    """
    with warnings.catch_warnings():
        # Fitted on a DataFrame, checked on a matrix in the same column order: the warning is noise.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        expected = np.asarray(estimator.predict_proba(rows), dtype=np.float64)
    got = predictor.predict_proba(rows).astype(np.float64)
    if got.shape != expected.shape:
        raise ExportRejected(f"the export gives probabilities of shape {got.shape}, sklearn {expected.shape}")
    if not np.isfinite(got).all():
        raise ExportRejected("the export gives non-finite probabilities")
    difference = float(np.max(np.abs(got - expected)))
    if difference > PROBABILITY_TOLERANCE:
        raise ExportRejected(
            f"the export's probabilities differ from sklearn's by up to {difference:.2e} "
            f"(tolerance {PROBABILITY_TOLERANCE:.0e})"
        )
    top_two = np.sort(expected, axis=1)[:, -2:]
    decided = (top_two[:, 1] - top_two[:, 0]) > PROBABILITY_TOLERANCE
    differing = (np.argmax(got, axis=1) != np.argmax(expected, axis=1)) & decided
    if differing.any():
        raise ExportRejected(f"the export predicts another class than sklearn on {int(differing.sum())} rows")
    return difference


def export(estimator: Any, sample: np.ndarray) -> bytes | None:
    """The checked export of a freshly fitted model, or None (with a warning) if there is none.

    Never raises: a model without an export is registered and scored by sklearn all the same.
    """
    width = int(np.asarray(sample).shape[1])
    try:
        content = convert(estimator, width)
        difference = verify(OnnxPredictor(content), estimator, check_rows(width, sample))
    except Exception as exc:  # any converter or runtime failure only costs the export
        log.warning("no ONNX export: %s: %s; the version is registered without one", type(exc).__name__, exc)
        return None
    log.info(
        "ONNX export checked against sklearn (largest probability difference %.1e, %d bytes)",
        difference,
        len(content),
    )
    return content
