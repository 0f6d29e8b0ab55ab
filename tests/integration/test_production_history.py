"""Rollback restores the version that served just before, whoever moved the alias: a property test
against the real MLflow server.

Hypothesis draws sequences of alias moves by the three hands that make them: a person in the MLflow
UI (a bare ``set_registered_model_alias``, the REST call the UI's aliases editor makes, which fireman
cannot hook), ``fireman promote`` and the retrain DAG's gate, with the scorer's reload poll
observing the alias in between or not. The model of what served: a version serves once the scorer
has seen it or a fireman command has acted after it (both look at the alias first); a UI move that
is overwritten before anyone looked never served.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from fireman.common import mlflow_uri, production_history
from fireman.common.errors import UserError
from fireman.common.model_registry import RegistryClient
from fireman.common.settings import MlflowSettings
from fireman.training import registry
from tests.conftest import forget_model
from tests.integration.registry_support import VERSIONS, registered_model

pytestmark = pytest.mark.integration

HANDS = ("ui", "cli", "dag")

moves = st.lists(
    st.tuples(st.sampled_from(HANDS), st.sampled_from(VERSIONS), st.booleans()), min_size=1, max_size=7
)


@dataclass
class Served:
    """The test's own account of which versions served, from the operations alone."""

    versions: list[str] = field(default_factory=list)
    unseen_ui_move: str | None = None

    def serve(self, version: str) -> None:
        if not self.versions or self.versions[-1] != version:
            self.versions.append(version)

    def look(self) -> None:
        if self.unseen_ui_move is not None:
            self.serve(self.unseen_ui_move)
            self.unseen_ui_move = None


@pytest.fixture(scope="module")
def model(mlflow_service: MlflowSettings) -> Iterator[MlflowSettings]:
    names = registered_model(mlflow_service)
    yield names
    forget_model(names)


def start_over(client: MlflowClient, names: MlflowSettings) -> None:
    """The model as if just registered: no aliases, no history (cheaper than a model per example)."""
    for alias in client.get_registered_model(names.model_name).aliases or {}:
        client.delete_registered_model_alias(names.model_name, alias)
    client.delete_registered_model_tag(names.model_name, production_history.HISTORY_TAG)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=moves)
def test_rollback_restores_the_version_that_served_before_whoever_moved_the_alias(
    model: MlflowSettings, steps: list[tuple[str, str, bool]]
) -> None:
    names = model
    client = mlflow_uri.client(names)  # MLflow's own client plays the UI
    start_over(client, names)
    served = Served()
    with RegistryClient(names) as fireman_client:
        play(steps, client, fireman_client, names, served)


def play(
    steps: list[tuple[str, str, bool]],
    client: MlflowClient,
    fireman_client: RegistryClient,
    names: MlflowSettings,
    served: Served,
) -> None:
    for hand, version, scorer_polls_after in steps:
        current = production_history.production_version(fireman_client, names)
        if hand == "ui":
            client.set_registered_model_alias(names.model_name, names.production_alias, version)
            served.unseen_ui_move = version if version != current else served.unseen_ui_move
        elif current != version:
            served.look()
            if hand == "cli":
                registry.promote_manually(fireman_client, names, version, by="hypothesis")
            else:
                registry.move_production(fireman_client, names, version, how="promoted")
            served.serve(version)
        if scorer_polls_after:
            production_history.observe(
                fireman_client, names, version_now(fireman_client, names), "the scorer"
            )
            served.look()

    served.look()  # rollback looks at the alias before it acts
    if len(served.versions) < 2:
        with pytest.raises(UserError, match="cannot tell which version served before"):
            registry.rollback(fireman_client, names, by="hypothesis")
        return
    change = registry.rollback(fireman_client, names, by="hypothesis")
    assert change.production == served.versions[-2], served.versions
    assert version_now(fireman_client, names) == served.versions[-2]
    # A second rollback goes one step further back; it never re-deploys what was just rolled back.
    if len(served.versions) >= 3:
        assert registry.rollback(fireman_client, names, by="hypothesis").production == served.versions[-3]


def version_now(client: RegistryClient, names: MlflowSettings) -> str:
    version = production_history.production_version(client, names)
    assert version is not None
    return version


def test_a_move_in_the_ui_is_recorded_as_manual_beside_the_gate_evidence(
    new_registered_model: Callable[[], MlflowSettings],
) -> None:
    names = new_registered_model()
    client = mlflow_uri.client(names)
    fireman_client = RegistryClient(names)
    registry.move_production(fireman_client, names, "1", how="first")
    registry.record_decision(
        fireman_client, names.model_name, "2", "1", "rejected", "does not beat", {"f1": 0.5}
    )
    client.set_registered_model_alias(names.model_name, names.production_alias, "2")  # the UI's call

    assert production_history.observe(fireman_client, names, "2", "the scorer")
    tags = client.get_model_version(names.model_name, "2").tags
    assert tags["gate.decision"] == "rejected"  # the gate's evidence stays
    assert tags["manual.from_version"] == "1" and "seen by the scorer" in tags["manual.by"]
    assert client.get_registered_model(names.model_name).aliases[names.previous_alias] == "1"
    assert not production_history.observe(fireman_client, names, "2", "the scorer")  # recorded once

    change = registry.rollback(fireman_client, names, by="test")
    assert (change.production, change.replaced) == ("1", "2")
    assert "v1 served before it" in change.note
