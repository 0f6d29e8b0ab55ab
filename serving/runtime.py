"""Process setup for the scorer command: logging and settings errors as user errors."""

from __future__ import annotations

import logging
import os

from pydantic import ValidationError

from fireman_common.errors import UserError
from serving.settings import ScorerSettings


def configure_logging(level: str) -> None:
    # MLflow's artifact download progress bars would flood a service's log on every model load.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise UserError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, not {level!r}")
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "mlflow", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


def load_settings() -> ScorerSettings:
    try:
        return ScorerSettings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UserError(f"invalid FIREMAN_SCORER_* settings: {problems}") from None
