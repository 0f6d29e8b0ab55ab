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
from tests.integration.faults_support import Pipeline, StackNames, StreamSpec, report

# Each test runs four processes for ~30-60 s on a 2-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def pipeline(
    fault_stack: ServiceManager, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Pipeline]:
    seed = 10 + len(request.node.name) % 50
    spec = StreamSpec(events=3000, rate=150, seed=seed)
    with Pipeline.with_synthetic_model(StackNames.fresh(fault_stack), tmp_path, spec) as pipe:
        yield pipe


def test_scorer_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(pipeline: Pipeline) -> None:
    audit = pipeline.survive_sigkill("scorer", before=(0, 600), ready="serving ", watch=(False, True))
    assert audit.kafka_predictions.lost == 0


def test_sink_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(pipeline: Pipeline) -> None:
    pipeline.survive_sigkill("sink", before=(600, 0), ready="sink: ", watch=(True, False))


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
