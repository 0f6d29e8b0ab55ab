"""Scale-out under rebalance: a third scorer and a third sink join their groups mid-stream.

Two sinks and two scorers share the four partitions of ``measurements`` in their consumer groups while
the generator streams a seeded fleet; once points are being stored, a third of each starts, and both
groups rebalance under load. The audit counts, per event id, the raw and prediction points in
InfluxDB: lost 0, duplicated 0 (revoked partitions are committed before they move, and a replay
overwrites the same points). Every member's log shows it owned partitions and did work, and the first
members' logs show their partitions were revoked when the newcomers joined.
"""

from __future__ import annotations

import ast
import re
import time
from functools import partial
from pathlib import Path

import pytest

from fireman.services.manager import ServiceManager
from tests.integration.faults_support import (
    REPORTS,
    FaultTimes,
    Pipeline,
    Proc,
    StackNames,
    StreamSpec,
    wait_for,
)

# Seven processes for ~2 min on a 2-core machine (each scorer loads its model in ~25 s), plus the
# private stack's start.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

# 20 sensors (the key) so that every one of the four partitions carries events. A scorer took 25 s from
# its start to owning partitions here; 4,500 events at 100 events/s keep the stream running ~15 s longer.
SPEC = StreamSpec(events=4500, rate=100, sensors=20, seed=41)
ASSIGNED = re.compile(r"assigned (?!nothing)")
SCORED = re.compile(r"scorer stopped: (\d+) events scored")
SINK_STATS = re.compile(r"sink stopped: (\{.*\})")


def scored(proc: Proc) -> int:
    """Events the scorer scored in its run, from its last log line (written once it stopped)."""
    found = SCORED.findall(proc.text())
    assert found, f"no final line\n{proc.tail()}"
    return int(found[-1])


def written(proc: Proc) -> int:
    """Points the sink wrote in its run, from its last log line (written once it stopped)."""
    found = SINK_STATS.findall(proc.text())
    assert found, f"no final line\n{proc.tail()}"
    return int(ast.literal_eval(found[-1])["written"])


def owns_partitions(proc: Proc) -> bool:
    return bool(ASSIGNED.search(proc.since_start()))


def test_third_scorer_and_sink_join_mid_stream_nothing_lost_or_duplicated(
    fault_stack: ServiceManager, tmp_path: Path
) -> None:
    names = StackNames.fresh(fault_stack)
    # Seven processes on one machine: the /metrics ports would clash (and another stack may hold them).
    quiet = {"FIREMAN_SINK_METRICS_PORT": "0", "FIREMAN_SCORER_METRICS_PORT": "0"}
    with Pipeline.with_synthetic_model(names, tmp_path, SPEC, **quiet) as pipeline:
        total = len(pipeline.expected)
        for command in ("sink", "scorer"):
            pipeline.add_member(command).start()
        pipeline.start()
        first = [pipeline.procs[name] for name in ("sink", "sink-2", "scorer", "scorer-2")]
        wait_for(lambda: all(map(owns_partitions, first)), 120, f"two members per group\n{pipeline.tails()}")
        pipeline.wait_counts(200, 200, 120, "200 events stored by the first members")

        before_join = {proc.log: len(proc.text()) for proc in first}
        times = FaultTimes("a third scorer and a third sink join mid-stream", time.monotonic())
        newcomers = [pipeline.add_member(command) for command in ("sink", "scorer")]
        for proc in newcomers:
            proc.start()
        joined_s = {}
        for proc in newcomers:  # the sink first: it has no model to load, so it joins sooner
            wait_for(
                partial(owns_partitions, proc), 180, f"{proc.command} 3 to get partitions\n{proc.tail()}"
            )
            joined_s[proc.command] = time.monotonic() - times.injected_at
        times.restored_at = times.injected_at
        times.back_at = time.monotonic()
        at_join = pipeline.counts()
        # The rebalance happened under load: the stream was not over when the newcomers got partitions.
        assert pipeline.procs["generator"].alive and at_join[1] < total, at_join

        def grown() -> bool:
            now = pipeline.counts()
            return all(now[i] > at_join[i] or now[i] >= total for i in (0, 1))

        wait_for(grown, 120, f"output to grow after the rebalance (was {at_join})\n{pipeline.tails()}")
        times.resumed_at = time.monotonic()
        audit = pipeline.finish(times)
        # Each first member gave its partitions up when the newcomers joined (an eager rebalance).
        rebalanced = [proc for proc in first if "revoked " in proc.text()[before_join[proc.log] :]]

    scorers = {name: scored(pipeline.procs[name]) for name in pipeline.members("scorer")}
    sinks = {name: written(pipeline.procs[name]) for name in pipeline.members("sink")}
    text = (
        f"\n[fault] a third scorer and a third sink joined mid-stream: {total} events at {SPEC.rate:g}/s; "
        f"they owned partitions {joined_s['sink']:.1f} s (sink) and {joined_s['scorer']:.1f} s "
        f"(scorer: its model load) after they started, {at_join[1]} predictions in; output grew again "
        f"{times.resumed_s:.1f} s and every event was stored {times.caught_up_s:.1f} s after the join; "
        f"events scored per scorer {scorers}, raw points written per sink {sinks}\n"
        f"[fault] {audit.line()}\n"
        f"[fault] lost={audit.lost} duplicated={audit.duplicated}"
    )
    print(text)
    REPORTS.append(text.strip())
    assert (audit.lost, audit.duplicated) == (0, 0), audit.line()
    assert len(rebalanced) == len(first), "a first member's partitions were never revoked"
    assert all(count > 0 for count in (*scorers.values(), *sinks.values())), (scorers, sinks)
