"""Promotion on live evidence against real InfluxDB and MLflow.

Shadow and production predictions and their labels are written to a database of the test's own the
way the scorer and the sink write them (``tests.support.live_data``); registered models have versions
without artifacts (aliases and tags are all the live gate touches). ``fireman promote --live`` runs as
a user runs it, in a new process; the monitor's comparison runs in a real ``Monitor``; the retrain
DAG's live mode is its task functions, called as Airflow calls them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator

import pytest

from fireman.common import production_history
from fireman.common.influx import InfluxClient
from fireman.common.live_evaluation import compare
from fireman.common.measurements import LIVE_COMPARISON
from fireman.common.model_registry import RegistryClient
from fireman.common.settings import (
    InfluxSettings,
    KafkaSettings,
    LiveEvidenceSettings,
    MlflowSettings,
    StateSettings,
)
from fireman.monitoring.live import LiveComparisonWorker
from fireman.monitoring.monitor import Monitor
from fireman.monitoring.settings import MonitorSettings
from fireman.services.process import wait_until
from tests.conftest import free_port
from tests.integration.test_airflow_support import configure_airflow
from tests.integration.test_cli_registry import HEAVY, run_fireman
from tests.support import live_data
from tests.support.background import on_thread
from tests.support.live_data import Event

configure_airflow()

pytestmark = pytest.mark.integration

CHAMPION, CHALLENGER = "1", "2"
MIN_EVENTS = 30


@pytest.fixture
def model(new_registered_model: Callable[[], MlflowSettings]) -> Iterator[MlflowSettings]:
    """A registered model serving v1 (recorded in its production history) with v2 as the challenger."""
    names = new_registered_model()
    with RegistryClient(names) as client:
        production_history.push(client, names, CHAMPION, "test-suite", "manual")
        client.set_alias(names.model_name, names.challenger_alias, CHALLENGER)
    yield names


@pytest.fixture
def live_env(monkeypatch: pytest.MonkeyPatch, influx_db: InfluxSettings) -> InfluxSettings:
    """What ``fireman promote --live`` and the DAG's tasks read: the test's database and a small N."""
    monkeypatch.setenv("FIREMAN_INFLUXDB_URL", influx_db.url)
    monkeypatch.setenv("FIREMAN_INFLUXDB_DATABASE", influx_db.database)
    monkeypatch.setenv("FIREMAN_TRAIN_LIVE_MIN_EVENTS", str(MIN_EVENTS))
    return influx_db


def aliases(names: MlflowSettings) -> dict[str, str]:
    with RegistryClient(names) as client:
        found = client.registered_model(names.model_name)
    assert found is not None
    return found.aliases


def tags(names: MlflowSettings, version: str) -> dict[str, str]:
    with RegistryClient(names) as client:
        found = client.version(names.model_name, version)
    assert found is not None
    return found.tags


def output_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("import time:")]


# --- the comparison ----------------------------------------------------------------------------------


def test_the_comparison_counts_only_events_both_versions_scored_and_that_are_labelled(
    influx_db: InfluxSettings,
) -> None:
    # Ten events both versions scored, all labelled: production says spam every time (5 right, F1 2/3),
    # the challenger is always right. Two of production's points are from before roles (no tag), and
    # one label was given two hours after its event, after the last prediction.
    labels = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    both = [
        Event(
            f"both-{i}",
            label,
            production=1,
            shadow=label,
            untagged=i < 2,
            label_delay_ms=7_200_000 * (i == 9),
        )
        for i, label in enumerate(labels)
    ]
    left_out = [
        Event("unlabelled", None, production=1, shadow=1),
        Event("production-only", 1, production=1, shadow=None),
        Event("shadow-only", 0, production=None, shadow=0),
        Event("older-champion", 0, production=1, shadow=0, production_version="9"),
        Event("other-challenger", 1, production=0, shadow=1, shadow_version="8"),
        Event("nobody", 1, production=None, shadow=None),
    ]
    start = int(time.time() * 1000) - 3 * 3600 * 1000
    live_data.write(influx_db, both[:5] + left_out + both[5:], CHAMPION, CHALLENGER, start_ms=start)

    with InfluxClient(influx_db) as client:
        result = compare(client, CHAMPION, CHALLENGER, LiveEvidenceSettings(max_events=1000))

    assert result.events == 10
    assert result.champion == {"accuracy": pytest.approx(0.5), "f1": pytest.approx(2 / 3)}
    assert result.challenger == {"accuracy": 1.0, "f1": 1.0}
    # Read: the challenger's shadow answers (both, unlabelled, shadow-only, older-champion).
    assert result.shadow_predictions == 13
    assert result.since_ms is not None and result.until_ms is not None
    assert start <= result.since_ms < result.until_ms < start + 17_000


def test_the_comparison_reads_the_newest_shadow_predictions_within_the_lookback(
    influx_db: InfluxSettings,
) -> None:
    now_ms = int(time.time() * 1000)
    # Two hours old: outside a one-hour lookback. Then six recent events, every one labelled.
    live_data.write(
        influx_db, live_data.scored(2, 0, 2, "old"), CHAMPION, CHALLENGER, start_ms=now_ms - 7_200_000
    )
    live_data.write(
        influx_db, live_data.scored(6, 6, 0, "new"), CHAMPION, CHALLENGER, start_ms=now_ms - 60_000
    )

    with InfluxClient(influx_db) as client:
        within_hour = compare(client, CHAMPION, CHALLENGER, LiveEvidenceSettings(lookback_hours=1))
        newest_four = compare(client, CHAMPION, CHALLENGER, LiveEvidenceSettings(max_events=4))
        unknown = compare(client, CHAMPION, "7", LiveEvidenceSettings())

    assert (within_hour.events, within_hour.challenger["accuracy"]) == (6, 0.0)
    assert (newest_four.events, newest_four.shadow_predictions) == (4, 4)
    assert newest_four.since_ms == now_ms - 60_000 + 2 * 1000  # the oldest of the newest four
    assert unknown.events == 0 and math.isnan(unknown.champion["accuracy"])


# --- fireman promote --live ----------------------------------------------------------------------------


def test_a_challenger_that_wins_on_live_data_is_promoted(
    model: MlflowSettings, live_env: InfluxSettings
) -> None:
    live_data.write(live_env, live_data.scored(40, 28, 36), CHAMPION, CHALLENGER)

    done, imported = run_fireman(model, "promote", "--live", "--by", "ops")

    assert done.returncode == 0, done.stderr[-2000:]
    assert f"production -> v{CHALLENGER} (beats the champion: f1" in done.stdout
    assert f"previous -> v{CHAMPION}" in done.stdout
    assert not imported & set(HEAVY), f"fireman promote --live imported {imported & set(HEAVY)}"
    # Promoted through the gate's path: the history says how, and the alias of a challenger that now
    # serves is gone (it is not scored in shadow beside itself).
    assert aliases(model) == {"production": CHALLENGER, "previous": CHAMPION}
    with RegistryClient(model) as client:
        history = production_history.read(client, model.model_name)
    assert [(e.version, e.how, e.by) for e in history] == [
        (CHAMPION, "manual", "test-suite"),
        (CHALLENGER, "live", "ops"),
    ]
    won = tags(model, CHALLENGER)
    assert (won["live.decision"], won["live.compared_with"], won["live.by"]) == ("promoted", CHAMPION, "ops")
    evidence = json.loads(won["live.metrics"])
    assert evidence["events"] == 40 and evidence["min_events"] == MIN_EVENTS
    assert evidence["challenger"] == {"version": CHALLENGER, "accuracy": 0.9, "f1": pytest.approx(0.9)}
    assert evidence["champion"]["accuracy"] == 0.7
    replaced = tags(model, CHAMPION)
    assert json.loads(replaced[f"live.challenge.v{CHALLENGER}"])["decision"] == "promoted"
    assert replaced["gate.replaced_by"] == CHALLENGER
    listed, _ = run_fireman(model, "models", "--json")
    assert {row["version"]: row["live"] for row in json.loads(listed.stdout)}[CHALLENGER] == "promoted"


def test_a_challenger_that_loses_on_live_data_is_not_promoted(
    model: MlflowSettings, live_env: InfluxSettings
) -> None:
    live_data.write(live_env, live_data.scored(40, 36, 28), CHAMPION, CHALLENGER)

    done, _ = run_fireman(model, "promote", "--live")

    assert done.returncode == 1, done.stderr[-2000:]
    (line,) = done.stdout.splitlines()
    assert line.startswith(
        f"v{CHALLENGER} not promoted: does not beat the champion on f1: f1 0.7000 vs champion"
    )
    assert "0.9000" in line and "on 40 live labelled events" in line
    assert line.endswith(f"production stays v{CHAMPION}")
    assert aliases(model) == {"production": CHAMPION, "challenger": CHALLENGER}
    assert tags(model, CHALLENGER)["live.decision"] == "rejected"


def test_too_few_live_events_exit_1_and_change_nothing(
    model: MlflowSettings, live_env: InfluxSettings
) -> None:
    # Twelve labelled events both scored, plus unlabelled ones that must not count.
    events = live_data.scored(12, 0, 12) + [Event(f"pending-{i}", None, 1, 1) for i in range(30)]
    live_data.write(live_env, events, CHAMPION, CHALLENGER)

    done, _ = run_fireman(model, "promote", "--live")

    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        f"not enough live evidence for v{CHALLENGER}: 12 of {MIN_EVENTS} labelled events scored by both it "
        f"and production v{CHAMPION}; production unchanged"
    ]
    assert aliases(model) == {"production": CHAMPION, "challenger": CHALLENGER}
    assert not any(key.startswith("live.") for key in tags(model, CHALLENGER))


def test_bad_input_to_promote_live_is_one_line_and_exit_2(
    new_registered_model: Callable[[], MlflowSettings], live_env: InfluxSettings
) -> None:
    names = new_registered_model()
    with RegistryClient(names) as client:
        production_history.push(client, names, CHAMPION, "test-suite", "manual")
    for args, message in (
        (("promote", "--live"), f"registered model {names.model_name!r} has no 'challenger' alias"),
        (("promote", "--live", "99"), f"unknown version 99 of registered model {names.model_name!r}"),
        (
            ("promote", "--live", CHAMPION),
            f"version {CHAMPION} of {names.model_name!r} is already production",
        ),
        (("promote",), "name the VERSION to promote, or use --live"),
    ):
        done, _ = run_fireman(names, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr[-2000:])
        (line,) = output_lines(done.stderr)
        assert line.startswith(f"error: {message}"), line


# --- the monitor --------------------------------------------------------------------------------------


def test_the_monitor_writes_the_live_comparison_periodically(
    model: MlflowSettings,
    influx_db: InfluxSettings,
    kafka_topics: KafkaSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    live_data.write(influx_db, live_data.scored(40, 28, 36), CHAMPION, CHALLENGER)
    settings = MonitorSettings(
        kafka=kafka_topics,
        influxdb=influx_db,
        mlflow=model,
        group_id=f"m-{kafka_topics.topic_measurements}",
        state=StateSettings(home=tmp_path_factory.mktemp("monitor")),
        live_comparison_interval_s=1.0,
    )
    monitor = Monitor(settings)

    with on_thread(monitor.run, "monitor", join_s=90):
        assert wait_until(lambda: monitor.live.comparisons >= 2, 60, interval_s=0.2), "no second comparison"

    with InfluxClient(influx_db) as client:
        rows = client.query(f'SELECT * FROM "{LIVE_COMPARISON.name}"')
    assert rows, "no live_comparison point"
    point = rows[-1]
    assert (point["model_name"], point["champion_version"], point["challenger_version"]) == (
        model.model_name,
        CHAMPION,
        CHALLENGER,
    )
    assert point["events"] == 40
    assert (point["champion_accuracy"], point["challenger_accuracy"]) == (0.7, 0.9)
    assert point["champion_f1"] == pytest.approx(0.7) and point["challenger_f1"] == pytest.approx(0.9)


def test_no_challenger_no_comparison_and_failures_are_not_fatal(
    model: MlflowSettings,
    new_registered_model: Callable[[], MlflowSettings],
    influx_db: InfluxSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    without = new_registered_model()
    worker = LiveComparisonWorker(MonitorSettings(influxdb=influx_db, mlflow=without))
    with InfluxClient(influx_db) as influx, RegistryClient(without) as registry:
        assert worker.compare_once(influx, registry) is None
    # InfluxDB unreachable: logged at every interval, and the thread goes on.
    down = influx_db.model_copy(update={"port": free_port()})
    failing = LiveComparisonWorker(
        MonitorSettings(influxdb=down, mlflow=model, live_comparison_interval_s=0.2)
    )

    def failed_twice() -> bool:
        return sum("live comparison failed" in r.getMessage() for r in caplog.records) >= 2

    with caplog.at_level(logging.WARNING, logger="fireman.monitoring.live"):
        failing.start()
        try:
            assert wait_until(failed_twice, 30, interval_s=0.1), caplog.text
        finally:
            failing.stop()
    assert failing.comparisons == 0


# --- the retrain DAG's live mode ------------------------------------------------------------------------


@pytest.fixture
def dag_env(
    monkeypatch: pytest.MonkeyPatch, live_env: InfluxSettings, model: MlflowSettings
) -> MlflowSettings:
    """What the DAG's tasks read; the test's model has no challenger yet: evaluation makes one."""
    monkeypatch.setenv("FIREMAN_MLFLOW_TRACKING_URI", model.tracking_uri)
    monkeypatch.setenv("FIREMAN_MLFLOW_MODEL_NAME", model.model_name)
    with RegistryClient(model) as client:
        client.delete_alias(model.model_name, model.challenger_alias)
    return model


def test_dag_live_mode_makes_a_challenger_waits_for_evidence_then_promotes(
    dag_env: MlflowSettings, live_env: InfluxSettings
) -> None:
    from fireman.training import dag_tasks

    decision = dag_tasks.evaluate_and_promote(CHALLENGER, promote="live")

    assert (decision["decision"], decision["promoted"], decision["challenger"]) == ("challenger", False, True)
    assert aliases(dag_env) == {"production": CHAMPION, "challenger": CHALLENGER}
    assert tags(dag_env, CHALLENGER)["gate.decision"] == "challenger"
    waiting = dag_tasks.await_live_evidence(decision)
    assert not waiting.is_done
    assert waiting.xcom_value == {"waited": True, "events": 0, "needed": MIN_EVENTS, "champion": CHAMPION}

    live_data.write(live_env, live_data.scored(40, 28, 36), CHAMPION, CHALLENGER)
    ready = dag_tasks.await_live_evidence(decision)
    assert ready.is_done and ready.xcom_value["events"] == 40
    decided = dag_tasks.decide_on_live_evidence(decision)

    assert (decided["decision"], decided["promoted"], decided["champion"]) == ("promoted", True, CHAMPION)
    assert decided["metrics"]["events"] == 40
    assert aliases(dag_env) == {"production": CHALLENGER, "previous": CHAMPION}
    assert tags(dag_env, CHALLENGER)["live.decision"] == "promoted"


def test_dag_live_mode_after_the_wait_records_the_shortfall_and_keeps_production(
    dag_env: MlflowSettings, live_env: InfluxSettings
) -> None:
    from fireman.training import dag_tasks

    decision = dag_tasks.evaluate_and_promote(CHALLENGER, promote="live")
    live_data.write(live_env, live_data.scored(12, 0, 12), CHAMPION, CHALLENGER)

    # What runs when the sensor timed out (skipped): the decision, on what there is.
    decided = dag_tasks.decide_on_live_evidence(decision)

    assert (decided["decision"], decided["promoted"]) == ("insufficient", False)
    assert "12 of the 30 live labelled events" in decided["reason"]
    assert aliases(dag_env) == {"production": CHAMPION, "challenger": CHALLENGER}
    recorded = tags(dag_env, CHALLENGER)
    assert (
        recorded["live.decision"] == "insufficient" and json.loads(recorded["live.metrics"])["events"] == 12
    )
