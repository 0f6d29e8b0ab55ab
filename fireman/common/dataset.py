"""The UCI Spambase example data: ``FIREMAN_SPAMBASE_PATH``, a download, or the copy in the package.

Unset, both settings mean the packaged copy (``data/spambase.csv.gz``, attributed in
``SPAMBASE_ATTRIBUTION``), so the demo and a first ``make up`` work without internet access.
``FIREMAN_SPAMBASE_URL`` downloads other data in UCI's layout once into the cache: a zip holding
``spambase.data`` (no header, 57 features then the class) or that file bare, saved as a CSV with the
project's column names (``Cont_1``..``Cont_57``, ``label``). Spambase is licensed CC BY 4.0 by the
UCI Machine Learning Repository.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from importlib import resources
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from fireman.common.errors import UserError
from fireman.common.schema import FEATURE_NAMES, LABEL_COLUMN
from fireman.common.settings import DatasetSettings

COLUMNS = [*FEATURE_NAMES, LABEL_COLUMN]

# The packaged copy is UCI's data with only the columns renamed (Cont_1..Cont_57, label).
SPAMBASE_ATTRIBUTION = (
    "Spambase: Hopkins, M., Reeber, E., Forman, G. and Suermondt, J. (1999). UCI Machine Learning "
    "Repository, https://doi.org/10.24432/C53G6X. Licensed CC BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/); columns renamed to Cont_1..Cont_57 and label."
)


def load_spambase(settings: DatasetSettings) -> pd.DataFrame:
    """Spambase as float64 features and an int label column."""
    path = spambase_path(settings)
    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError) as exc:  # an empty file, a binary one, bad quoting: all ValueErrors
        raise UserError(f"{path} is not a readable CSV file: {exc}") from exc
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise UserError(f"{path} is not Spambase: missing columns {', '.join(missing[:5])}")
    frame = frame[COLUMNS]
    if frame.empty:
        raise UserError(f"{path} has a header but no rows")
    numbers = frame.apply(pd.to_numeric, errors="coerce").astype("float64")
    # An empty feature is a missing value, as in an event; text or a non-finite value is not. The
    # label must be a whole number (validation then asks for 0 or 1).
    bad = (numbers.isna() & frame.notna()) | np.isinf(numbers)
    bad[LABEL_COLUMN] = (numbers[LABEL_COLUMN] % 1 != 0).to_numpy()
    rows, columns = np.nonzero(bad.to_numpy())
    if len(rows):
        row, column = rows[0], columns[0]
        value = frame.iat[row, column]
        shown = "an empty cell" if pd.isna(value) else repr(str(value))
        wanted = "a whole-number label" if COLUMNS[column] == LABEL_COLUMN else "a finite number"
        # Line numbers as an editor shows them: the header is line 1.
        raise UserError(f"{path}: column {COLUMNS[column]} line {row + 2}: {shown} is not {wanted}")
    numbers[LABEL_COLUMN] = numbers[LABEL_COLUMN].astype("int64")
    return numbers


def spambase_path(settings: DatasetSettings) -> Path:
    if settings.spambase_path is not None:
        if settings.spambase_path.is_dir():
            raise UserError(f"FIREMAN_SPAMBASE_PATH points to {settings.spambase_path}, which is a directory")
        if not settings.spambase_path.is_file():
            raise UserError(f"FIREMAN_SPAMBASE_PATH points to {settings.spambase_path}, which does not exist")
        return settings.spambase_path
    if settings.spambase_url is None:
        return packaged_spambase()
    # One cached file per URL: data from another address never stands in for this one.
    digest = hashlib.sha256(settings.spambase_url.encode()).hexdigest()[:12]
    cached = settings.cache_dir / f"spambase-{digest}.csv"
    if not cached.is_file():
        download_spambase(settings.spambase_url, cached)
    return cached


def packaged_spambase() -> Path:
    return Path(str(resources.files("fireman.common") / "data" / "spambase.csv.gz"))


def download_spambase(url: str, destination: Path) -> None:
    try:
        response = httpx.get(url, follow_redirects=True, timeout=60.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise UserError(
            f"could not download Spambase from {url}: {exc}. "
            "Set FIREMAN_SPAMBASE_PATH to a local copy, or unset FIREMAN_SPAMBASE_URL for the packaged one."
        ) from exc
    frame = parse_uci_archive(response.content)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(".part")
    frame.to_csv(partial, index=False)
    partial.replace(destination)


def parse_uci_archive(content: bytes) -> pd.DataFrame:
    """Read ``spambase.data`` from UCI's zip (or the bare file) into the project's columns."""
    raw = content
    if content[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = [name for name in archive.namelist() if name.endswith("spambase.data")]
            if not names:
                raise UserError("the downloaded archive has no spambase.data")
            raw = archive.read(names[0])
    frame = pd.read_csv(io.BytesIO(raw), header=None)
    if frame.shape[1] != len(COLUMNS):
        raise UserError(f"spambase.data has {frame.shape[1]} columns, expected {len(COLUMNS)}")
    frame.columns = COLUMNS
    return frame


def mask_completely_at_random(frame: pd.DataFrame, rate: float, seed: int | None = None) -> pd.DataFrame:
    """Remove each feature value independently with probability ``rate`` (MCAR); the label stays."""
    if not 0.0 <= rate < 1.0:
        raise UserError(f"missing rate must be in [0, 1), got {rate}")
    rng = np.random.default_rng(seed)
    masked = frame.copy()
    features = masked[list(FEATURE_NAMES)].to_numpy(dtype="float64", copy=True)
    features[rng.random(features.shape) < rate] = np.nan
    masked[list(FEATURE_NAMES)] = features
    return masked
