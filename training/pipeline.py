"""The model: one scikit-learn Pipeline, a SimpleImputer then a RandomForestClassifier.

It is always fitted on data with production's missingness (NaN for an absent feature), so the
forest learns on imputed values exactly as it will be served them.
"""

from __future__ import annotations

from typing import Any

from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

from fireman.common.schema import FEATURE_NAMES

FEATURES: list[str] = list(FEATURE_NAMES)
PARAM_NAMES = (
    "imputer_strategy",
    "n_estimators",
    "max_depth",
    "min_samples_leaf",
    "criterion",
    "class_weight",
    "max_samples",
    "random_state",
    "n_jobs",
)


def build_pipeline(
    imputer_strategy: str = "median",
    n_estimators: int = 100,
    max_depth: int | None = None,
    min_samples_leaf: int = 1,
    criterion: str = "entropy",
    class_weight: str | None = "balanced",
    max_samples: int | float | None = None,
    random_state: int | None = 0,
    n_jobs: int = -1,
    **unknown: Any,
) -> Pipeline:
    if unknown:
        raise TypeError(f"unknown pipeline parameters: {', '.join(sorted(unknown))}")
    # keep_empty_features: a column that is entirely missing in a window still yields a feature, so the
    # fitted model always takes all 57 inputs.
    imputer = SimpleImputer(strategy=imputer_strategy, keep_empty_features=True)
    forest = RandomForestClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        criterion=criterion,
        class_weight=class_weight,
        max_samples=max_samples,
        random_state=random_state,
        n_jobs=n_jobs,
    )
    return Pipeline([("imputer", imputer), ("forest", forest)])


def check_params(params: dict[str, Any]) -> None:
    """Raise sklearn's InvalidParameterError (a ValueError) for a bad value now, not in fit."""
    for _, step in build_pipeline(**params).steps:
        # No public API validates an unfitted estimator; this is the check fit itself runs first.
        step._validate_params()


def fit_params_for(params: dict[str, Any], n_rows: int) -> dict[str, Any]:
    """Pipeline parameters for a training set of ``n_rows``: ``max_samples`` is a cap, not a demand."""
    cap = params.get("max_samples")
    return {**params, "max_samples": None} if isinstance(cap, int) and cap >= n_rows else dict(params)
