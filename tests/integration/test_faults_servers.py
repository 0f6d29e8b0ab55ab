"""Fault injection on the servers: Kafka and InfluxDB stopped for 20 s, MLflow down during a reload poll.

Each test streams a seeded fleet through collector -> Kafka -> sink + scorer on a private stack, stops
one server mid-stream, starts it again, and checks from InfluxDB and Kafka that every event ended with
exactly one raw point and exactly one prediction point: lost 0, duplicated 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fireman.services.manager import ServiceManager
from tests.integration.faults_support import (
    Pipeline,
    StackNames,
    StreamSpec,
    logged,
    register_synthetic_model,
    report,
    start_services,
    stop_services,
    wait_for,
)
from tests.support.scoring import set_production

# Each test runs four processes and a 20 s outage: ~1-2 min apiece on a 2-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 20.0


@pytest.fixture
def names(fault_stack: ServiceManager) -> StackNames:
    return StackNames.fresh(fault_stack)


@pytest.fixture
def pipeline(names: StackNames, tmp_path: Path) -> Iterator[Pipeline]:
    with Pipeline.with_synthetic_model(
        names,
        tmp_path,
        StreamSpec(events=3000, rate=100, seed=21),
        # Far shorter than the outage: a batch in flight when the broker stops is refused, rewound
        # and scored again, and the scorer has to ride that out.
        FIREMAN_SCORER_DELIVERY_TIMEOUT_MS="5000",
    ) as pipe:
        yield pipe


@dataclass(frozen=True)
class Server:
    """One server of the private stack, to stop (``down``) and start again (``up``) in an outage."""

    stack: ServiceManager
    name: str

    def down(self) -> None:
        stop_services(self.stack, [self.name])

    def up(self) -> None:
        start_services(self.stack, [self.name])

    def back(self) -> bool:
        return self.stack.services[self.name].healthy()


def test_kafka_broker_down_20s_then_back_loses_and_duplicates_nothing(
    fault_stack: ServiceManager, pipeline: Pipeline
) -> None:
    kafka = Server(fault_stack, "kafka")
    audit = pipeline.survive(
        "Kafka broker stopped for 20 s, then started",
        before=(300, 300),
        down=kafka.down,
        up=kafka.up,
        ready=lambda: kafka.back() and pipeline.collector_ready(),
        watch=(True, True),
        hold_s=OUTAGE_S,
        # The collector refuses writes (503) instead of buffering them while the broker is gone.
        during=lambda: not pipeline.collector_ready(),
        during_what="the collector to report Kafka down on /readyz",
    )
    assert pipeline.procs["scorer"].starts == 1  # it rode the outage out, nothing was restarted
    assert audit.kafka_predictions.lost == 0


def test_influxdb_down_20s_then_back_loses_and_duplicates_nothing(
    fault_stack: ServiceManager, pipeline: Pipeline
) -> None:
    influxdb = Server(fault_stack, "influxdb")
    sink, scorer = pipeline.procs["sink"], pipeline.procs["scorer"]
    pipeline.survive(
        "InfluxDB stopped for 20 s, then started",
        before=(300, 300),
        down=influxdb.down,
        up=influxdb.up,
        ready=influxdb.back,
        watch=(True, True),
        hold_s=OUTAGE_S,
        during=lambda: logged(sink, "InfluxDB unavailable")() and logged(scorer, "InfluxDB unavailable")(),
        during_what="the sink and the scorer to notice InfluxDB is down",
    )
    assert sink.starts == 1 and scorer.starts == 1  # both rode it out, nothing was restarted


def test_mlflow_down_during_reload_poll_keeps_serving_then_picks_up_the_new_alias(
    fault_stack: ServiceManager, names: StackNames, tmp_path: Path
) -> None:
    first = register_synthetic_model(names.mlflow, seed=0)
    second = register_synthetic_model(names.mlflow, seed=1, promote=False)
    pipeline = Pipeline(
        names,
        tmp_path,
        StreamSpec(events=3000, rate=100, seed=31),
        extra_env={
            "FIREMAN_SCORER_RELOAD_INTERVAL_S": "1",
            # MLflow's client retries a refused connection for ~2 min by default; a poll that gives up
            # quickly makes the failed poll observable within the test (the hot path never waits on it).
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        },
    )
    mlflow = Server(fault_stack, "mlflow")
    after_switch = pipeline.add_stream(seed=32, events=600)
    scorer = pipeline.procs["scorer"]
    failed_poll = logged(scorer, "could not read the model registry")
    served: list[int] = []

    def scored_while_down() -> bool:
        # A poll has failed, and predictions are still being written with the current model.
        if not failed_poll():
            return False
        served.append(pipeline.counts()[1])
        return served[-1] > served[0] + 100

    try:
        pipeline.start()
        pipeline.wait_counts(300, 300, 120, "300 events through before the outage")
        times = pipeline.inject(
            "MLflow server stopped during reload polls, then started and the alias moved",
            down=mlflow.down,
            up=mlflow.up,
            ready=mlflow.back,
            watch=(False, False),  # nothing stalls: the scorer keeps serving the model it has
            during=scored_while_down,
            during_what="a failed registry poll while predictions keep flowing",
            after_up=lambda: set_production(names.mlflow, second),
        )
        wait_for(
            logged(scorer, f"replacing version {first}"),
            60,
            f"the scorer to switch to version {second}\n{scorer.tail()}",
        )
        times.notes.append(
            f"{served[-1] - served[0]} predictions written after a failed poll while MLflow was down; "
            f"new alias served {time.monotonic() - times.back_at:.1f} s after MLflow was back"
        )
        after_switch.start()  # events that only the new version can have scored
        audit = pipeline.finish(times)
        versions = pipeline.prediction_versions()
    finally:
        pipeline.stop()
    report(times, audit, len(pipeline.expected))
    assert scorer.starts == 1
    assert versions[first] >= 300 and versions[second] >= 600, versions
    assert (audit.lost, audit.duplicated) == (0, 0), audit.line()
