"""The promotion gate: pure logic, so every rule is unit-tested without a server.

The challenger must beat the champion on the gate metric by more than nothing and by at least
``margin`` (a tie keeps the champion: no churn for nothing), and must not be worse than the
champion on the guard metric by more than ``guard_tolerance``.

Before that, the hold-out must be able to decide (``holdout_verdict``): the rows the champion
trained on are left out of it (``fireman.training.holdout``), and if fewer than ``min_rows`` rows of
both classes remain, no hold-out decision is made and production stays.

On live evidence (``decide_live``) the same rule holds on the labelled live events both versions
scored, once there are at least ``min_events`` of them. The live comparison reads the 0/1 answers,
not the probabilities, so accuracy or F1 is the gate and there is no guard metric.
"""

from __future__ import annotations

from dataclasses import dataclass

from fireman.common.live_evaluation import METRICS as LIVE_METRICS

MODES = ("auto", "never", "force")
# ``live``: the candidate becomes the challenger, scored in shadow, and is promoted on live evidence.
PROMOTE_MODES = (*MODES, "live")


@dataclass(frozen=True)
class GateRule:
    gate_metric: str = "f1"
    margin: float = 0.0
    guard_metric: str = "roc_auc"
    guard_tolerance: float = 0.01


@dataclass(frozen=True)
class Verdict:
    promote: bool
    # first | promoted | rejected | forced | skipped | insufficient; live: insufficient | rejected | promoted
    decision: str
    reason: str


def decide(
    rule: GateRule, challenger: dict[str, float], champion: dict[str, float] | None, mode: str = "auto"
) -> Verdict:
    if mode not in MODES:
        raise ValueError(f"unknown promotion mode {mode!r}: use one of {', '.join(MODES)}")
    gate, guard = rule.gate_metric, rule.guard_metric
    if mode == "never":
        return Verdict(False, "skipped", "promotion disabled (--promote never)")
    if mode == "force":
        return Verdict(True, "forced", "forced (--promote force): gate bypassed")
    if champion is None:
        return Verdict(True, "first", "no champion: the first model is promoted")
    wins, scores = _gate_scores(rule, challenger, champion)
    guard_drop = champion[guard] - challenger[guard]
    scores += (
        f"; {guard} {challenger[guard]:.4f} vs {champion[guard]:.4f} (tolerance {rule.guard_tolerance:.4f})"
    )
    if not wins:
        return Verdict(False, "rejected", f"does not beat the champion on {gate}: {scores}")
    if guard_drop > rule.guard_tolerance:
        return Verdict(False, "rejected", f"worse than the champion on {guard} beyond tolerance: {scores}")
    return Verdict(True, "promoted", f"beats the champion: {scores}")


def holdout_verdict(mode: str, rows: int, both_classes: bool, min_rows: int, detail: str) -> Verdict | None:
    """``insufficient`` when, in ``auto`` mode, the rows left to compare on cannot decide; else None.

    ``never`` and ``force`` do not read the hold-out, so they go on regardless.
    """
    if mode != "auto" or (rows >= min_rows and both_classes):
        return None
    lack = f"fewer than {min_rows}" if rows < min_rows else "only one label class among them"
    return Verdict(
        False,
        "insufficient",
        f"the hold-out cannot decide: {detail}; {lack} (FIREMAN_TRAIN_GATE_MIN_ROWS rows of both classes "
        "needed); production stays",
    )


def decide_live(
    rule: GateRule, challenger: dict[str, float], champion: dict[str, float], events: int, min_events: int
) -> Verdict:
    """The gate on live evidence: ``events`` labelled events scored by both versions."""
    gate = rule.gate_metric
    if gate not in LIVE_METRICS:
        raise ValueError(f"the live gate compares {' or '.join(LIVE_METRICS)}, not {gate!r}")
    if events < min_events:
        return Verdict(
            False, "insufficient", f"{events} of the {min_events} live labelled events needed so far"
        )
    wins, scores = _gate_scores(rule, challenger, champion)
    scores += f" on {events} live labelled events"
    if not wins:
        return Verdict(False, "rejected", f"does not beat the champion on {gate}: {scores}")
    return Verdict(True, "promoted", f"beats the champion: {scores}")


def _gate_scores(
    rule: GateRule, challenger: dict[str, float], champion: dict[str, float]
) -> tuple[bool, str]:
    """Whether the challenger gains on the gate metric by more than nothing and at least the margin."""
    gate = rule.gate_metric
    delta = challenger[gate] - champion[gate]
    scores = (
        f"{gate} {challenger[gate]:.4f} vs champion {champion[gate]:.4f} (delta {delta:+.4f}, "
        f"margin {rule.margin:.4f})"
    )
    return delta > 0 and delta >= rule.margin, scores
