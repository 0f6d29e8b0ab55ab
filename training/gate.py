"""The promotion gate: pure logic, so every rule is unit-tested without a server.

The challenger must beat the champion on the gate metric by more than nothing and by at least
``margin`` (a tie keeps the champion: no churn for nothing), and must not be worse than the
champion on the guard metric by more than ``guard_tolerance``.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("auto", "never", "force")


@dataclass(frozen=True)
class GateRule:
    gate_metric: str = "f1"
    margin: float = 0.0
    guard_metric: str = "roc_auc"
    guard_tolerance: float = 0.01


@dataclass(frozen=True)
class Verdict:
    promote: bool
    decision: str  # first | promoted | rejected | forced | skipped
    reason: str


def decide(
    rule: GateRule,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    mode: str = "auto",
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
    delta = challenger[gate] - champion[gate]
    guard_drop = champion[guard] - challenger[guard]
    scores = (
        f"{gate} {challenger[gate]:.4f} vs champion {champion[gate]:.4f} (delta {delta:+.4f}, "
        f"margin {rule.margin:.4f}); {guard} {challenger[guard]:.4f} vs {champion[guard]:.4f} "
        f"(tolerance {rule.guard_tolerance:.4f})"
    )
    if delta <= 0 or delta < rule.margin:
        return Verdict(False, "rejected", f"does not beat the champion on {gate}: {scores}")
    if guard_drop > rule.guard_tolerance:
        return Verdict(False, "rejected", f"worse than the champion on {guard} beyond tolerance: {scores}")
    return Verdict(True, "promoted", f"beats the champion: {scores}")
