"""``fireman bench onnx``: predict-only rows/s of the production pipeline, sklearn beside its ONNX export.

No server: the training's pipeline, with the training defaults, is fitted on half of Spambase with
20% of feature values missing (MCAR) and exported as training exports it (``fireman.common.onnx_export``),
checked against sklearn first. Each backend then scores the same batches of rows through
``ServingModel.score``, as the scorer does, in turns, in one thread (sklearn's forest with
``n_jobs=1``, onnxruntime with one intra-op thread) and in two; a backend's figure is its best turn,
which is least disturbed by other processes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from rich.console import Console
from rich.table import Table

from fireman.common import onnx_export
from fireman.common.dataset import load_spambase, mask_completely_at_random
from fireman.common.model import Exported, Lineage, build_serving_model, trees_in_turn
from fireman.common.schema import FEATURE_NAMES, LABEL_COLUMN
from fireman.training.pipeline import PARAM_NAMES, build_pipeline, fit_params_for
from fireman.training.settings import TrainingSettings

Predict = Callable[[np.ndarray], object]


@dataclass(frozen=True)
class BenchOptions:
    batches: list[int]
    seconds: float = 2.0  # per turn
    turns: int = 3


def run_bench(options: BenchOptions, console: Console | None = None) -> dict[int, dict[str, float]]:
    """Rows/s per batch size and backend; printed as a table with the ratios to sklearn."""
    console = console or Console()
    settings = TrainingSettings()
    frame = mask_completely_at_random(load_spambase(settings.dataset), 0.2, seed=settings.random_state)
    # Fitted on half, scoring the other half: unseen rows, as the scorer's are (and as often near a tie).
    train = frame.sample(frac=0.5, random_state=settings.random_state)
    unseen = frame.drop(train.index)
    params = fit_params_for({name: getattr(settings, name) for name in PARAM_NAMES}, len(train))
    model = build_pipeline(**params).fit(train[list(FEATURE_NAMES)], train[LABEL_COLUMN])
    model.set_params(forest__n_jobs=1)  # predict in one thread, as the scorer's model thread does
    rows = unseen[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    content = onnx_export.export(model, rows[:1000])
    if content is None:
        raise RuntimeError("the pipeline has no ONNX export (see the warning above)")
    served = build_serving_model(model, FEATURE_NAMES, Lineage("bench", "1", "bench"), 0.0)
    exact = trees_in_turn(model, len(FEATURE_NAMES), "bench") or model
    exported = {
        threads: replace(served, export=Exported(onnx_export.OnnxPredictor(content, threads), exact))
        for threads in (1, 2)
    }
    ties = onnx_export.near_ties(onnx_export.OnnxPredictor(content).predict_proba(rows))
    console.print(
        f"pipeline: {settings.n_estimators} trees, {len(FEATURE_NAMES)} features, fitted on {len(train)} "
        f"Spambase rows, scoring {len(unseen)} others, 20% missing; export {len(content) / 1e6:.1f} MB; "
        f"{ties.mean():.2%} of rows near a tie (scored by sklearn on the onnxruntime path)"
    )
    # ServingModel.score, as the scorer calls it: the model call, the tie fallback and the conversions.
    # Training fits with n_jobs=-1, which the scorer keeps: sklearn in two threads is its baseline too.
    two_jobs = replace(served, estimator=copy.deepcopy(model).set_params(forest__n_jobs=2))
    backends: dict[str, Predict] = {
        "sklearn": served.score,
        "onnxruntime": exported[1].score,
        "sklearn, 2 threads": two_jobs.score,
        "onnxruntime, 2 threads": exported[2].score,
    }
    # ``size`` rows each, cycling the data set if it is shorter.
    results = {
        size: _measure(backends, np.resize(rows, (size, rows.shape[1])), options) for size in options.batches
    }
    _print(results, console)
    return results


def _measure(backends: dict[str, Predict], batch: np.ndarray, options: BenchOptions) -> dict[str, float]:
    best = dict.fromkeys(backends, 0.0)
    for predict in backends.values():
        predict(batch)  # warm-up: first-call allocations
    for _ in range(options.turns):
        for name, predict in backends.items():
            best[name] = max(best[name], _rows_per_second(predict, batch, options.seconds))
    return best


def _rows_per_second(predict: Predict, batch: np.ndarray, seconds: float) -> float:
    calls = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls == 0:
        predict(batch)
        calls += 1
    return calls * len(batch) / elapsed


def _print(results: dict[int, dict[str, float]], console: Console) -> None:
    table = Table("batch", "backend", "rows/s", "vs sklearn", title="fireman bench onnx (predict only)")
    for size, rates in results.items():
        for name, rate in rates.items():
            table.add_row(f"{size:,}", name, f"{rate:,.0f}", f"{rate / rates['sklearn']:.2f}x")
    console.print(table)
