"""Fault injection on fireman's own processes: scorer and sink SIGKILLed, collector killed mid-send.

Each test streams a seeded fleet through collector -> Kafka -> sink + scorer on a private stack,
kills one process mid-stream, restarts it, and checks from InfluxDB and Kafka that every event ended
with exactly one raw point and exactly one prediction point (at-least-once delivery + idempotent
points): lost 0, duplicated 0.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    start_fault_stack,
)

# Each test runs four processes for ~30-60 s on a 2-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(private_services: ServiceManager) -> ServiceManager:
    return start_fault_stack(private_services)


@pytest.fixture
def pipeline(stack: ServiceManager, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    names = StackNames.fresh(stack)
    register_synthetic_model(names.mlflow)
    seed = 10 + len(request.node.name) % 50
    pipe = Pipeline(names, tmp_path, StreamSpec(events=3000, rate=150, seed=seed))
    try:
        yield pipe
    finally:
        pipe.stop()


def test_scorer_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(pipeline: Pipeline) -> None:
    pipeline.start()
    pipeline.wait_counts(0, 600, 120, "600 predictions before the kill")
    scorer = pipeline.procs["scorer"]
    times = pipeline.inject(
        "scorer SIGKILL + restart",
        down=scorer.kill,
        up=scorer.start,
        ready=logged(scorer, "serving "),
        watch=(False, True),
    )
    audit = pipeline.finish(times)
    report(times, audit, len(pipeline.expected))
    assert scorer.starts == 2
    assert (audit.lost, audit.duplicated) == (0, 0), audit.line()
    assert audit.kafka_predictions.lost == 0


def test_sink_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(pipeline: Pipeline) -> None:
    pipeline.start()
    pipeline.wait_counts(600, 0, 120, "600 raw points before the kill")
    sink = pipeline.procs["sink"]
    times = pipeline.inject(
        "sink SIGKILL + restart",
        down=sink.kill,
        up=sink.start,
        ready=logged(sink, "sink: "),
        watch=(True, False),
    )
    audit = pipeline.finish(times)
    report(times, audit, len(pipeline.expected))
    assert sink.starts == 2
    assert (audit.lost, audit.duplicated) == (0, 0), audit.line()


def test_collector_killed_while_generator_sends_retries_without_double_counting(
    pipeline: Pipeline,
) -> None:
    pipeline.start()
    pipeline.wait_counts(600, 0, 120, "600 raw points before the kill")
    collector = pipeline.procs["collector"]
    times = pipeline.inject(
        "collector SIGKILL while the generator sends, then restart",
        down=collector.kill,
        up=collector.start,
        ready=pipeline.collector_ready,
        watch=(True, True),
        # Down long enough that the generator's POSTs fail and are retried.
        hold_s=3.0,
    )
    audit = pipeline.finish(times)
    generator_log = pipeline.procs["generator"].text()
    times.notes.append(f"Kafka measurements redelivered: {audit.kafka_predictions.duplicated}")
    report(times, audit, len(pipeline.expected))
    # The generator did hit the dead collector and retried (its summary names the last error).
    assert "last error:" in generator_log, generator_log[-2000:]
    assert (audit.lost, audit.duplicated) == (0, 0), audit.line()
