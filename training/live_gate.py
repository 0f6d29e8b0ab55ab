"""Promotion on live evidence: the challenger, scored in shadow beside production, replaces it only after
beating it on the same labelled live events (``fireman promote --live``, the retrain DAG's live mode).

The evidence is one ``fireman.common.live_evaluation.compare`` over InfluxDB; the rule is the gate's
(``gate.decide_live``: the gate metric, accuracy or F1, must gain by more than nothing and at least
``margin``, over at least ``live_min_events`` events). A decision is tagged on both versions as
``live.*`` (the hold-out's ``gate.*`` stay), and a win moves ``production`` the gate's way, with the
production history kept. No ``mlflow`` import: ``fireman promote --live`` starts as fast as the other
registry commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fireman.common import production_history
from fireman.common.errors import UserError
from fireman.common.influx import InfluxClient, InfluxUnavailable
from fireman.common.live_evaluation import LiveComparison, compare
from fireman.common.model_registry import RegistryClient
from fireman.training import registry
from fireman.training.gate import LIVE_METRICS, GateRule, decide_live
from fireman.training.settings import TrainingSettings


@dataclass(frozen=True)
class LiveDecision:
    version: str
    champion: str
    promoted: bool
    decision: str  # insufficient | rejected | promoted
    reason: str
    comparison: LiveComparison

    def evidence(self, min_events: int) -> dict[str, Any]:
        return {**self.comparison.to_dict(), "min_events": min_events}


def require_live_metric(settings: TrainingSettings) -> None:
    if settings.gate_metric not in LIVE_METRICS:
        raise UserError(
            f"the live gate compares {' or '.join(LIVE_METRICS)}; the gate metric is "
            f"{settings.gate_metric!r} (FIREMAN_TRAIN_GATE_METRIC)"
        )


def versions(client: RegistryClient, settings: TrainingSettings, version: str | None) -> tuple[str, str]:
    """``(challenger, champion)``: ``version`` or the challenger alias's, against production."""
    mlflow = settings.mlflow
    name = mlflow.model_name
    if version is None:
        found = client.version_by_alias(name, mlflow.challenger_alias)
        if found is None:
            raise UserError(
                f"registered model {name!r} has no {mlflow.challenger_alias!r} alias: name a VERSION, or "
                "let the retrain gate make one (a candidate it does not promote becomes the challenger)"
            )
        version = str(found.version)
    registry.get_version(client, name, version)
    champion = production_history.production_version(client, mlflow)
    if champion is None:
        raise UserError(
            f"registered model {name!r} has no {mlflow.production_alias!r} version to compare with"
        )
    if champion == str(version):
        raise UserError(f"version {version} of {name!r} is already {mlflow.production_alias}")
    return str(version), champion


def gather(settings: TrainingSettings, challenger: str, champion: str) -> LiveComparison:
    """The live evidence so far."""
    try:
        with InfluxClient(settings.influxdb) as influx:
            return compare(influx, champion, challenger, settings.live)
    except InfluxUnavailable as exc:
        # A UserError with the outage as its cause: one line on the CLI, retried by the DAG.
        raise UserError(f"could not read the live predictions: {exc}") from exc


def decide(
    settings: TrainingSettings,
    client: RegistryClient,
    version: str | None,
    by: str,
    record_insufficient: bool = False,
) -> LiveDecision:
    """Compare, apply the live gate, record the decision, and promote a winner.

    Too little evidence is recorded only when asked (the DAG, whose wait is over); ``fireman promote
    --live`` just says how much there is.
    """
    require_live_metric(settings)
    challenger, champion = versions(client, settings, version)
    comparison = gather(settings, challenger, champion)
    rule = GateRule(settings.gate_metric, settings.margin, settings.guard_metric, settings.guard_tolerance)
    verdict = decide_live(
        rule, comparison.challenger, comparison.champion, comparison.events, settings.live_min_events
    )
    decision = LiveDecision(
        challenger, champion, verdict.promote, verdict.decision, verdict.reason, comparison
    )
    if verdict.decision != "insufficient" or record_insufficient:
        name = settings.mlflow.model_name
        evidence = decision.evidence(settings.live_min_events)
        registry.record_decision(
            client, name, challenger, champion, verdict.decision, verdict.reason, evidence, by, prefix="live"
        )
    if verdict.promote:
        registry.move_production(client, settings.mlflow, challenger, how="live", by=by)
    return decision
