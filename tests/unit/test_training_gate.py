"""The promotion gate's rules, one decision at a time."""

from __future__ import annotations

import pytest

from fireman.training.gate import GateRule, decide, decide_live

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


LIVE_CHAMPION = {"accuracy": 0.90, "f1": 0.88}


def test_live_gate_waits_for_enough_events_however_good_the_challenger() -> None:
    verdict = decide_live(RULE, {"accuracy": 1.0, "f1": 1.0}, LIVE_CHAMPION, events=499, min_events=500)
    assert (verdict.promote, verdict.decision) == (False, "insufficient")
    assert verdict.reason == "499 of the 500 live labelled events needed so far"


def test_live_gate_promotes_a_gain_of_at_least_the_margin_and_quotes_both_figures() -> None:
    better = {"accuracy": 0.93, "f1": 0.91}
    verdict = decide_live(RULE, better, LIVE_CHAMPION, events=500, min_events=500)
    assert (verdict.promote, verdict.decision) == (True, "promoted")
    assert (
        "f1 0.9100 vs champion 0.8800" in verdict.reason and "on 500 live labelled events" in verdict.reason
    )
    assert not decide_live(GateRule(margin=0.05), better, LIVE_CHAMPION, 800, 500).promote
    on_accuracy = GateRule(gate_metric="accuracy", margin=0.02)
    assert decide_live(on_accuracy, better, LIVE_CHAMPION, 800, 500).promote


def test_live_gate_keeps_the_champion_on_a_tie_or_a_loss() -> None:
    for challenger in (dict(LIVE_CHAMPION), {"accuracy": 0.95, "f1": 0.80}):
        verdict = decide_live(RULE, challenger, LIVE_CHAMPION, events=600, min_events=500)
        assert (verdict.promote, verdict.decision) == (False, "rejected")
        assert "does not beat the champion on f1" in verdict.reason


def test_live_gate_has_no_roc_auc() -> None:
    with pytest.raises(ValueError, match="the live gate compares accuracy or f1, not 'roc_auc'"):
        decide_live(GateRule(gate_metric="roc_auc"), LIVE_CHAMPION, LIVE_CHAMPION, 600, 500)


def test_a_hold_out_too_small_to_decide_keeps_production_in_auto_mode_only() -> None:
    from fireman.training.gate import holdout_verdict

    verdict = holdout_verdict("auto", 12, True, 30, "12 of 900 hold-out rows compared")
    assert verdict is not None and (verdict.promote, verdict.decision) == (False, "insufficient")
    assert "12 of 900" in verdict.reason and "FIREMAN_TRAIN_GATE_MIN_ROWS" in verdict.reason
    one_class = holdout_verdict("auto", 300, False, 30, "300 rows")
    assert one_class is not None and "one label class" in one_class.reason
    assert holdout_verdict("auto", 30, True, 30, "30 rows") is None
    # never and force do not read the hold-out.
    assert holdout_verdict("force", 0, False, 30, "0 rows") is None
    assert holdout_verdict("never", 0, False, 30, "0 rows") is None
