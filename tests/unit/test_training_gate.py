"""The promotion gate's rules, one decision at a time."""

from __future__ import annotations

import pytest

from fireman.training.gate import GateRule, decide

RULE = GateRule(gate_metric="f1", margin=0.0, guard_metric="roc_auc", guard_tolerance=0.01)
CHAMPION = {"f1": 0.90, "roc_auc": 0.97}


def test_first_model_is_promoted_without_a_champion() -> None:
    verdict = decide(RULE, {"f1": 0.5, "roc_auc": 0.5}, None)
    assert (verdict.promote, verdict.decision) == (True, "first")


def test_better_challenger_is_promoted_and_reason_quotes_scores() -> None:
    verdict = decide(RULE, {"f1": 0.92, "roc_auc": 0.97}, CHAMPION)
    assert (verdict.promote, verdict.decision) == (True, "promoted")
    assert "0.9200" in verdict.reason and "0.9000" in verdict.reason


def test_tie_keeps_the_champion() -> None:
    verdict = decide(RULE, dict(CHAMPION), CHAMPION)
    assert (verdict.promote, verdict.decision) == (False, "rejected")
    assert "does not beat" in verdict.reason


def test_win_below_margin_is_rejected() -> None:
    rule = GateRule(margin=0.05)
    assert not decide(rule, {"f1": 0.93, "roc_auc": 0.98}, CHAMPION).promote
    assert decide(rule, {"f1": 0.96, "roc_auc": 0.98}, CHAMPION).promote


def test_guard_metric_drop_beyond_tolerance_is_rejected() -> None:
    verdict = decide(RULE, {"f1": 0.95, "roc_auc": 0.95}, CHAMPION)
    assert not verdict.promote
    assert "roc_auc" in verdict.reason and "tolerance" in verdict.reason
    assert decide(RULE, {"f1": 0.95, "roc_auc": 0.965}, CHAMPION).promote  # within tolerance


MODES = [("never", False, "skipped"), ("force", True, "forced")]


@pytest.mark.parametrize(("mode", "promote", "decision"), MODES)
def test_modes_override_the_scores(mode: str, promote: bool, decision: str) -> None:
    verdict = decide(RULE, {"f1": 0.1, "roc_auc": 0.5}, CHAMPION, mode)
    assert (verdict.promote, verdict.decision) == (promote, decision)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown promotion mode"):
        decide(RULE, CHAMPION, CHAMPION, "sometimes")
