"""The event contract shared by the collector, the sink, the scorer and training.

Kafka ``measurements`` carry one :class:`Event` per message, keyed by ``sensor_id``; ``labels``
carry :class:`Label`. On the wire the timestamp is epoch milliseconds (UTC); on input it may also be
an RFC 3339 string with an offset. A missing feature is absent or null, never 0.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

FEATURE_NAMES: tuple[str, ...] = tuple(f"Cont_{i}" for i in range(1, 58))
LABEL_COLUMN = "label"

# 1970..2100 in epoch milliseconds: anything later is a unit mistake (microseconds or nanoseconds).
# Epoch seconds cannot be told from January-1970 milliseconds, so they pass as such.
MIN_EPOCH_MS = 0
MAX_EPOCH_MS = 4_102_444_800_000


def to_epoch_ms(value: Any) -> int:
    """Accept epoch milliseconds or an RFC 3339 string with an offset; return epoch ms (UTC)."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be RFC 3339 or epoch milliseconds, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("timestamp must be finite")
        millis = int(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"timestamp {value!r} is not RFC 3339 (e.g. 2026-01-31T12:00:00Z)") from None
        if parsed.tzinfo is None:
            raise ValueError(f"timestamp {value!r} has no UTC offset; add 'Z' or '+00:00'")
        millis = int(parsed.timestamp() * 1000)
    else:
        raise ValueError("timestamp must be RFC 3339 or epoch milliseconds")
    if not MIN_EPOCH_MS <= millis <= MAX_EPOCH_MS:
        raise ValueError(f"timestamp {value!r} is outside 1970..2100 (epoch milliseconds expected)")
    return millis


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


# Models score in float32 (ONNX, and sklearn's input check): a larger value becomes infinity there.
FLOAT32_MAX = float(np.finfo(np.float32).max)

EpochMs = Annotated[int, BeforeValidator(to_epoch_ms)]
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
FeatureValue = Annotated[
    float | None,
    Field(default=None, strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX),
]

Features = create_model(  # type: ignore[call-overload]
    "Features",
    __config__=ConfigDict(extra="forbid"),
    **{name: (FeatureValue, None) for name in FEATURE_NAMES},
)


class EventIn(BaseModel):
    """An event as a client posts it; the collector fills in ``event_id`` and ``timestamp``."""

    model_config = ConfigDict(extra="forbid")

    event_id: Identifier | None = None
    sensor_id: Identifier
    timestamp: EpochMs | None = None
    features: Features  # type: ignore[valid-type]


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: Identifier
    label: Annotated[int, Field(strict=True, ge=0, le=1)]
    sensor_id: Identifier
    timestamp: EpochMs


def present_features(features: BaseModel) -> dict[str, float]:
    """The features that have a value, as floats (ints on input are still float features)."""
    return {name: float(value) for name, value in features.__dict__.items() if value is not None}
