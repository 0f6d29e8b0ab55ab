"""The drift reference of a model version: the training sample its run logged, and the model's scores on it.

Windows carry the version that scored them, so each window is compared with that version's
reference; when the production alias moves, the new version's windows bring the new reference.
The version's model scores the reference once, to give prediction drift a baseline.

Beside it, the same run's hold-out metrics (``accuracy`` and ``f1``, logged by training) are what the
version's online accuracy and F1 are held to (:mod:`fireman.monitoring.alerts`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np
import pandas as pd

from fireman.common.model_registry import RegistryClient
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import MlflowSettings
from fireman.monitoring.alerts import Holdout
from fireman.monitoring.drift import Reference

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "reference/reference.parquet"
RETRY_AFTER_S = 60.0
T = TypeVar("T")


class _Cache(Generic[T]):
    """Per-version values loaded once; a failed load is logged and retried after ``RETRY_AFTER_S``."""

    def __init__(self, what: str, load: Callable[[str, str], T]) -> None:
        self.what = what
        self.load = load
        self._loaded: dict[tuple[str, str], T] = {}
        self._failed: dict[tuple[str, str], float] = {}

    def get(self, model_name: str, version: str) -> T | None:
        key = (model_name, version)
        if key in self._loaded:
            return self._loaded[key]
        failed_at = self._failed.get(key)
        if failed_at is not None and time.monotonic() - failed_at < RETRY_AFTER_S:
            return None
        try:
            value = self.load(model_name, version)
        except Exception as exc:
            self._failed[key] = time.monotonic()
            log.error(
                "no %s for %s version %s (retried in %.0f s): %s",
                self.what,
                model_name,
                version,
                RETRY_AFTER_S,
                exc,
            )
            return None
        self._failed.pop(key, None)
        self._loaded[key] = value
        return value


class ReferenceStore:
    """Loads references and hold-out metrics on demand and keeps them; a failed load is retried later.

    ``get`` runs on the drift worker's thread and ``holdout`` on the reading thread: each has its own cache.
    """

    def __init__(self, settings: MlflowSettings, rows: int, seed: int = 0) -> None:
        self.settings = settings
        self.rows = rows
        self.seed = seed
        self._references = _Cache("drift reference", self.load)
        self._holdouts = _Cache("hold-out metrics (performance alerts off)", self.load_holdout)

    def get(self, model_name: str, version: str) -> Reference | None:
        return self._references.get(model_name, version)

    def holdout(self, model_name: str, version: str) -> Holdout | None:
        """The accuracy and F1 the version's training run measured on its hold-out."""
        return self._holdouts.get(model_name, version)

    def load_holdout(self, model_name: str, version: str) -> Holdout:
        with RegistryClient(self.settings) as client:
            run_id = self._run_id(client, model_name, version)
            metrics = client.run_metrics(run_id)
        if metrics is None:
            raise LookupError(f"run {run_id} of version {version} does not exist")
        missing = [key for key in Holdout.METRICS if key not in metrics]
        if missing:
            raise LookupError(f"run {run_id} logged no {', '.join(missing)}")
        holdout = Holdout(accuracy=metrics["accuracy"], f1=metrics["f1"])
        log.info(
            "hold-out of %s version %s: accuracy %.3f, F1 %.3f (run %s)",
            model_name,
            version,
            holdout.accuracy,
            holdout.f1,
            run_id,
        )
        return holdout

    @staticmethod
    def _run_id(client: RegistryClient, model_name: str, version: str) -> str:
        found = client.version(model_name, version)
        if found is None:
            raise LookupError(f"version {version} of {model_name!r} is not in the registry")
        if not found.run_id:
            raise LookupError(f"version {version} is not linked to a run")
        return found.run_id

    def load(self, model_name: str, version: str) -> Reference:
        import mlflow

        started = time.perf_counter()
        with RegistryClient(self.settings) as client:
            run_id = self._run_id(client, model_name, version)
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=REFERENCE_ARTIFACT, tracking_uri=self.settings.tracking_uri
        )
        frame = pd.read_parquet(local)
        known = [name for name in FEATURE_NAMES if name in frame.columns]
        if not known:
            raise LookupError(f"{REFERENCE_ARTIFACT} of run {run_id} has no Cont_* feature column")
        frame = frame.reindex(columns=list(FEATURE_NAMES)).astype("float64")
        if len(frame) > self.rows:
            frame = frame.sample(n=self.rows, random_state=self.seed)
        frame = frame.reset_index(drop=True)
        probabilities = self._score(model_name, version, run_id, frame)
        log.info(
            "drift reference for %s version %s: %d rows of run %s%s, loaded in %.1f s",
            model_name,
            version,
            len(frame),
            run_id,
            "" if probabilities is not None else " (no model scores: prediction drift off)",
            time.perf_counter() - started,
        )
        return Reference(model_name, version, frame, probabilities)

    def _score(self, model_name: str, version: str, run_id: str, frame: pd.DataFrame) -> np.ndarray | None:
        """The version's probabilities on the reference, scored exactly as the scorer scores events."""
        from fireman.common.model import AliasTarget, Registry

        try:
            model = Registry(self.settings).load(AliasTarget(model_name, version, run_id))
            _, probabilities = model.score(frame[list(model.feature_order)].to_numpy(dtype=np.float64))
        except Exception as exc:
            log.warning("could not score the reference with %s version %s: %s", model_name, version, exc)
            return None
        return np.asarray(probabilities, dtype=np.float64)
