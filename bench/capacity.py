"""The capacity model of ``docs/performance.md``: CPU per event of each process, and what a rate needs.

``fireman bench report`` builds it from two benches of the same run. The monitoring bench gives the
CPU time each process spent on a run divided by its events: the scorer, the Kafka broker and
InfluxDB with the monitor off, the monitor's own share with it on, and the sink alone through the
same backlog. The scale-out bench gives measured one- and two-scorer rates to check the model on.

The model is additive: each event costs every process its CPU µs, wherever that process runs. A
deployment needs the sum in cores, planned at ``HEADROOM`` busy, and enough scorer and sink replicas
that none runs past its own measured rate. A consumer group uses at most one consumer per partition,
so the topic needs at least as many partitions as the larger group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fireman.monitoring.settings import MonitorSettings

RATES = (2_000, 10_000, 40_000, 100_000, 400_000)
# Cores planned to 70% busy: bursts, rebalances and catching up after an outage use the rest.
HEADROOM = 0.7


@dataclass(frozen=True)
class Costs:
    """CPU µs per event of each process, and the rates one scorer and one sink reached alone."""

    scorer_us: float
    sink_us: float
    monitor_us: float
    kafka_us: float  # the broker, serving the scorer, the sink and the monitor
    influxdb_us: float  # the scorer's prediction points and the sink's raw points
    scorer_rate: float
    sink_rate: float
    monitor_rate: float | None  # events/s one monitor takes in; None if not measured
    partitions: int  # the default partitions of a topic
    # The scorer with only the broker and InfluxDB work it causes (no sink, no monitor): what the
    # scale-out runs have on the machine, so what they are checked against.
    scorer_path_us: float

    @property
    def total_us(self) -> float:
        return self.scorer_us + self.sink_us + self.monitor_us + self.kafka_us + self.influxdb_us

    def cores(self, rate: float) -> float:
        return rate * self.total_us / 1e6 / HEADROOM

    def scorers(self, rate: float) -> int:
        return max(1, math.ceil(rate / (self.scorer_rate * HEADROOM)))

    def sinks(self, rate: float) -> int:
        return max(1, math.ceil(rate / (self.sink_rate * HEADROOM)))

    def partitions_for(self, rate: float) -> int:
        return max(self.partitions, self.scorers(rate), self.sinks(rate))

    def scorer_ceiling(self, cpus: int) -> float:
        """Events/s ``cpus`` cores give scorers alone, with the broker and InfluxDB work they cause."""
        return cpus * 1e6 / self.scorer_path_us


def render(costs: Costs, cpus: int, measured: dict[int, float] | None) -> list[str]:
    """Markdown: the cost table, replicas and cores per rate, and the check against measured runs.

    ``measured`` maps a number of scorers to the events/s the scale-out bench measured with them.
    """
    rows = [
        ("scorer (decode, model, encode, Kafka client, InfluxDB writer)", costs.scorer_us),
        ("sink (raw events to InfluxDB)", costs.sink_us),
        (
            "monitor (join and windows: one core over its unpaced intake rate)"
            if costs.monitor_rate
            # Without the scale-out bench only the paced run's CPU is known, and the monitor reads
            # the rest of a burst after the run ends.
            else "monitor (its CPU during the run, paced: a lower bound)",
            costs.monitor_us,
        ),
        ("Kafka broker", costs.kafka_us),
        ("InfluxDB (predictions and raw events)", costs.influxdb_us),
        ("**all**", costs.total_us),
    ]
    lines = [
        "| process | CPU µs per event | events/s per core |",
        "| --- | --- | --- |",
        *(f"| {name} | {us:.1f} | {1e6 / us:,.0f} |" for name, us in rows),
        "",
        f"One scorer alone reached {costs.scorer_rate:,.0f} events/s and one sink {costs.sink_rate:,.0f} on "
        f"this {cpus}-core machine, sharing it with Kafka and InfluxDB"
        + (
            f"; one monitor takes in {costs.monitor_rate:,.0f} events/s unpaced, and about "
            f"{costs.monitor_rate * MonitorSettings().intake_cpu_budget:,.0f} sustained within its default "
            "intake budget (it is a single instance by design, see architecture.md, Scaling out)."
            if costs.monitor_rate
            else "."
        ),
        f"A rate needs cores for the sum at {HEADROOM:.0%} busy, scorer and sink replicas each kept under "
        f"{HEADROOM:.0%} of its measured rate, and at least one partition per replica "
        f"({costs.partitions} by default):",
        "",
        "| events/s | cores | scorer replicas | sink replicas | partitions |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {rate:,} | {costs.cores(rate):.1f} | {costs.scorers(rate)} | {costs.sinks(rate)} | "
            f"{costs.partitions_for(rate)} |"
            for rate in RATES
        ),
    ]
    if measured:
        ceiling = costs.scorer_ceiling(cpus)
        lines += [
            "",
            f"Check against the scale-out bench (scorers only, no sink or monitor): the scorer with its "
            f"Kafka and InfluxDB work costs {costs.scorer_path_us:.1f} µs per event, so {cpus} cores "
            f"cap it at {ceiling:,.0f} events/s.",
            "",
            "| scorers | model: min(n times one scorer, machine cap) | measured | measured / model |",
            "| --- | --- | --- | --- |",
        ]
        for count, rate in sorted(measured.items()):
            predicted = min(count * costs.scorer_rate, ceiling)
            lines.append(f"| {count} | {predicted:,.0f} | {rate:,.0f} | {rate / predicted:.0%} |")
    return lines
