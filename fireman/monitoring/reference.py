"""The drift reference of a model version: the training sample its run logged, and the model's scores on it.

Windows carry the version that scored them, so each window is compared with that version's
reference; when the production alias moves, the new version's windows bring the new reference.
The version's model scores the reference once, to give prediction drift a baseline.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from fireman.common.model_registry import RegistryClient
from fireman.common.schema import FEATURE_NAMES
from fireman.common.settings import MlflowSettings
from fireman.monitoring.drift import Reference

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "reference/reference.parquet"
RETRY_AFTER_S = 60.0


class ReferenceStore:
    """Loads references on demand and keeps them; a failed load is retried after a minute."""

    def __init__(self, settings: MlflowSettings, rows: int, seed: int = 0) -> None:
        self.settings = settings
        self.rows = rows
        self.seed = seed
        self._loaded: dict[tuple[str, str], Reference] = {}
        self._failed: dict[tuple[str, str], float] = {}

    def get(self, model_name: str, version: str) -> Reference | None:
        key = (model_name, version)
        if key in self._loaded:
            return self._loaded[key]
        failed_at = self._failed.get(key)
        if failed_at is not None and time.monotonic() - failed_at < RETRY_AFTER_S:
            return None
        try:
            reference = self.load(model_name, version)
        except Exception as exc:
            self._failed[key] = time.monotonic()
            log.error("no drift reference for %s version %s: %s", model_name, version, exc)
            return None
        self._failed.pop(key, None)
        self._loaded[key] = reference
        return reference

    def load(self, model_name: str, version: str) -> Reference:
        import mlflow

        started = time.perf_counter()
        with RegistryClient(self.settings) as client:
            found = client.version(model_name, version)
        if found is None:
            raise LookupError(f"version {version} of {model_name!r} is not in the registry")
        run_id = found.run_id
        if not run_id:
            raise LookupError(f"version {version} is not linked to a run")
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
