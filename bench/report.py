"""``fireman bench report``: run every benchmark in one go and write ``docs/performance.md``.

The collector, scorer, serve, training, monitoring and soak benches run one after the other on this machine,
each with its own side-by-side comparison (batch POSTs vs single-event POSTs, batched scoring vs one
``predict`` per message, monitoring on vs off), so every ratio in the report was measured in the
same run as the figure it qualifies. The report also records how it was produced and the machine.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fireman.bench.soak import SoakOptions, SoakResult, run_soak

if TYPE_CHECKING:
    from fireman.bench.monitoring import Configuration, MonitoringResult
    from fireman.bench.scale_out import BenchResult as ScaleOutResult


@dataclass(frozen=True)
class ReportOptions:
    output: Path = Path("docs/performance.md")
    soak_minutes: float = 10.0
    quick: bool = False


@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    target: str
    met: bool | None
    baseline: str = "-"
    ratio: str = "-"


@dataclass
class Section:
    name: str
    command: str
    rows: list[Row] = field(default_factory=list)
    error: str | None = None
    load: tuple[float, float] = (0.0, 0.0)


@dataclass
class Measured:
    """Results one bench leaves for a part of the report built from several (the capacity model)."""

    monitoring: MonitoringResult | None = None
    scale_out: ScaleOutResult | None = None

    def capacity(self) -> list[str]:
        """The capacity model's markdown; empty unless the monitoring bench ran."""
        from fireman.bench import capacity
        from fireman.bench.monitoring import DEFAULTS_OFF, DEFAULTS_ON
        from fireman.common.settings import KafkaSettings

        result = self.monitoring
        if result is None:
            return []

        def cpu(config: Configuration, process: str) -> float:
            return result.cpu_us(config, process) or 0.0

        monitor_rate = self.scale_out.monitor_per_s if self.scale_out else None
        # The monitor paces itself to its CPU budget through a burst and catches up after the run,
        # so its CPU during the run undercounts it: one core over its unpaced intake rate does not.
        monitor_us = 1e6 / monitor_rate if monitor_rate else cpu(DEFAULTS_ON, "monitor")
        costs = capacity.Costs(
            scorer_us=cpu(DEFAULTS_OFF, "scorer"),
            sink_us=result.sink.sink_us,
            monitor_us=monitor_us,
            # The broker serves the monitor too: its extra work with the monitor on is the monitor's.
            kafka_us=max(cpu(DEFAULTS_ON, "kafka"), cpu(DEFAULTS_OFF, "kafka"))
            + (result.sink.kafka_us or 0.0),
            influxdb_us=cpu(DEFAULTS_OFF, "influxdb") + (result.sink.influxdb_us or 0.0),
            scorer_rate=result.rate(DEFAULTS_OFF),
            sink_rate=result.sink.events_per_s,
            monitor_rate=monitor_rate,
            partitions=KafkaSettings().partitions,
            scorer_path_us=sum(cpu(DEFAULTS_OFF, process) for process in ("scorer", "kafka", "influxdb")),
        )
        scale = self.scale_out
        runs = (
            {int(mode.split()[0]): scale.mean(mode) for mode in dict.fromkeys(r.mode for r in scale.runs)}
            if scale
            else None
        )
        return capacity.render(costs, os.cpu_count() or 1, runs)


def machine() -> dict[str, str]:
    """CPU count and model, memory, load average, OS and Python: what the figures depend on."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return {
        "CPUs": str(os.cpu_count()),
        "CPU model": model,
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "load average (1, 5, 15 min) at the start": " / ".join(f"{v:.2f}" for v in load),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": sys.version.split()[0],
    }


TIMES = "\u00d7"  # the multiplication sign of "12x"


def _x(value: float) -> str:
    return f"{value:.1f}{TIMES}" if value < 100 else f"{value:,.0f}{TIMES}"


def _collector(quick: bool) -> list[Row]:
    from fireman.bench.collector import BATCH_TARGET, SINGLE_TARGET, BenchOptions, run_bench

    # One worker is the default; two show what the second core buys, measured in the same run.
    workers = [1, 2]
    options = BenchOptions(workers=workers)
    if quick:
        options.duration_s, options.warmup_s = 3.0, 1.0
    results = run_bench(options)
    by_key = {(r.workers, r.scenario): r for r in results}
    rows = []
    for count in workers:
        single = by_key.get((count, "single"))
        batch = by_key.get((count, f"batch {options.batch_size}"))
        if single is None or batch is None:
            continue
        label = f"collector ({count} worker{'s' if count > 1 else ''})"
        rows.append(
            Row(
                f"{label}, single-event POSTs/s",
                f"{single.requests_per_s:,.0f}",
                f"≥ {SINGLE_TARGET:,}",
                single.requests_per_s >= SINGLE_TARGET,
            )
        )
        rows.append(
            Row(
                f"{label}, events/s in batch POSTs of {options.batch_size:,}",
                f"{batch.events_per_s:,.0f}",
                f"≥ {BATCH_TARGET:,}",
                batch.events_per_s >= BATCH_TARGET,
                baseline=f"{single.events_per_s:,.0f} (one event per POST)",
                ratio=_x(batch.events_per_s / single.events_per_s),
            )
        )
    return rows


def _scorer(quick: bool) -> list[Row]:
    from fireman.bench.scorer import BenchOptions, Previous, run_bench

    options = (
        BenchOptions(events=20_000, latency_seconds=5.0, baseline_seconds=3.0) if quick else BenchOptions()
    )
    result = run_bench(options)
    return [
        Row(
            "scorer, end-to-end events/s (Kafka → model → Kafka + InfluxDB), defaults, no monitor, "
            "mean of 2 runs",
            f"{result.events_per_s:,.0f}",
            "≥ 20,000",
            result.events_per_s >= 20_000,
            baseline=f"{result.baseline_per_s:,.0f} (the seed's loop: one predict per message, 1 thread)",
            ratio=_x(result.ratio),
        ),
        Row(
            "scorer vs the seed's loop (one predict per message, the same model, n_jobs=1)",
            _x(result.ratio),
            f"≥ 100{TIMES}",
            result.ratio >= 100,
        ),
        Row(
            f"scorer p50 / p99 latency at {options.rate:,} events/s, defaults",
            f"{result.p50_ms:.0f} / {result.p99_ms:.0f} ms",
            "p99 < 100 ms",
            result.p99_ms < 100,
            baseline=f"{result.previous_p50_ms:.0f} / {result.previous_p99_ms:.0f} ms ({Previous().name})",
            ratio=f"p99 {result.p99_ms / result.previous_p99_ms:.2f}{TIMES}",
        ),
        Row(
            f"scorer rate of good events with {options.poison_share:.0%} raw poison mixed in",
            f"{result.poisoned_per_s:,.0f} ({result.poisoned_ratio:.0%} of the clean run)",
            "≥ 90% of the clean rate",
            result.poisoned_ratio >= 0.9,
            ratio=f"{result.poisoned_ratio:.2f}{TIMES}",
        ),
    ]


def _serve(quick: bool) -> list[Row]:
    from fireman.bench.serve import BenchOptions, run_bench

    options = BenchOptions(duration_s=5.0, warmup_s=1.0) if quick else BenchOptions()
    return [
        Row(
            f"serve p50 / p99 latency, {result.rows} row{'s' if result.rows > 1 else ''} a request at "
            f"{result.rate:g} requests/s (open loop)",
            f"{result.p50_ms:.1f} / {result.p99_ms:.1f} ms"
            + (f", {result.errors} errors" if result.errors else ""),
            "-",
            None if not result.errors else False,
        )
        for result in run_bench(options)
    ]


def _training(quick: bool) -> list[Row]:
    from fireman.bench.train import run_bench

    rows = 20_000 if quick else 100_000
    timings = run_bench(rows=rows)
    total = timings["total"]
    return [Row(f"training from {rows:,} rows of InfluxDB history", f"{total:.1f} s", "≤ 60 s", total <= 60)]


def _monitoring(quick: bool, measured: Measured) -> list[Row]:
    from fireman.bench.monitoring import (
        DEFAULTS_OFF,
        DEFAULTS_ON,
        NOT_GIVING_WAY,
        PREVIOUS_ON,
        BenchOptions,
        run_bench,
    )

    options = BenchOptions(events=30_000, repeats=1) if quick else BenchOptions()
    result = run_bench(options)
    measured.monitoring = result
    configs = (DEFAULTS_ON, DEFAULTS_OFF, PREVIOUS_ON, NOT_GIVING_WAY)
    on, off, previous, not_giving_way = (result.rate(config) for config in configs)
    runs = {
        config: ", ".join(f"{run.events_per_s:,.0f}" for run in result.runs[config]) for config in configs
    }
    repeats = len(result.runs[DEFAULTS_ON])
    return [
        Row(
            f"scorer end to end with monitoring on, defaults (binary events, ONNX), mean of {repeats} runs "
            f"({runs[DEFAULTS_ON]})",
            f"{on:,.0f}",
            "≥ 40,000",
            on >= 40_000,
            baseline=f"{previous:,.0f} (JSON events, scikit-learn, monitoring on: {runs[PREVIOUS_ON]})",
            ratio=_x(on / previous),
        ),
        Row(
            f"scorer throughput with monitoring on / off, defaults, mean of {repeats} runs each",
            f"{on / off:.1%}",
            "≥ 90%",
            on / off >= 0.9,
            baseline=f"{off:,.0f} events/s (monitoring off: {runs[DEFAULTS_OFF]})",
            ratio=f"{on:,.0f} / {off:,.0f}",
        ),
        Row(
            f"the same with a monitor that does not give way to the scorer (yield_lag 0), mean of {repeats} "
            f"runs ({runs[NOT_GIVING_WAY]})",
            f"{not_giving_way / off:.1%}",
            "-",
            None,
            baseline="monitoring off, as above",
            ratio=f"{not_giving_way:,.0f} / {off:,.0f}",
        ),
    ]


def _onnx(quick: bool) -> list[Row]:
    from fireman.bench.onnx import BenchOptions, run_bench

    size = 1000
    results = run_bench(BenchOptions(batches=[size], seconds=0.5 if quick else 2.0, turns=1 if quick else 3))
    rates = results[size]
    return [
        Row(
            f"model call alone, batches of {size:,}, {name} (best of the turns)",
            f"{rate:,.0f} rows/s",
            "-",
            None,
            baseline=f"{rates['sklearn']:,.0f} rows/s (sklearn, 1 thread)",
            ratio=f"{rate / rates['sklearn']:.2f}{TIMES}",
        )
        for name, rate in rates.items()
        if name != "sklearn"
    ]


def _scale_out(quick: bool, measured: Measured) -> list[Row]:
    from fireman.bench.scale_out import BenchOptions, run_bench

    # Quick mode keeps the full backlog: it is what leaves events to time once both scorers are in.
    result = run_bench(BenchOptions(repeats=1) if quick else BenchOptions())
    measured.scale_out = result
    rows = [
        Row(
            f"{mode} in one group, end to end, mean of {len(result.of(mode))} runs",
            f"{result.mean(mode):,.0f} events/s",
            "-",
            None,
            baseline=f"{result.mean(result.baseline):,.0f} ({result.baseline})"
            if mode != result.baseline
            else "-",
            ratio=f"{result.ratio(mode):.2f}{TIMES}" if mode != result.baseline else "-",
        )
        for mode in dict.fromkeys(run.mode for run in result.runs)
    ]
    if result.monitor_per_s is not None:
        rows.append(
            Row(
                "one monitor's intake (measurement and prediction joined)",
                f"{result.monitor_per_s:,.0f} events/s",
                "-",
                None,
            )
        )
    return rows


def _cli(quick: bool) -> list[Row]:
    from fireman.bench.cli_startup import BASELINE, TARGET_S, run_bench

    timings = run_bench(repeats=1 if quick else 5)
    command, seconds = timings.slowest
    return [
        Row(
            f"slowest of fireman --help, models, promote, rollback (fireman {command})",
            f"{seconds:.2f} s",
            f"< {TARGET_S:g} s",
            seconds < TARGET_S,
            baseline=f"{timings.baseline_s:.2f} s ({BASELINE})",
            ratio=f"{seconds / timings.baseline_s:.2f}{TIMES}",
        )
    ]


def _soak(minutes: float) -> list[Row]:
    result: SoakResult = run_soak(SoakOptions(minutes=minutes))
    growths = {
        name: g
        for name in ("collector", "sink", "scorer", "monitor")
        if (g := result.growth(name)) is not None
    }
    worst = max(growths.items(), key=lambda item: item[1]) if growths else ("-", 0.0)
    lags = {g: lag for g in ("sink", "scorer", "monitor") if (lag := result.max_lag(g)) is not None}
    p50, p99 = result.latency()
    rows = [
        Row(
            f"soak {minutes:g} min at {result.options.rate:g} events/s: largest RSS growth after warm-up",
            f"{worst[1]:+.1%} ({worst[0]})",
            f"< {result.options.max_growth:.0%}",
            result.memory_flat,
        ),
        Row(
            "soak: largest consumer lag after warm-up",
            ", ".join(f"{g} {v:,}" for g, v in lags.items()) or "unknown",
            ", ".join(f"{g} ≤ {result.lag_bound(g):,.0f}" for g in lags)
            + f" ({result.options.max_lag_s:g} s of traffic per topic read)",
            result.lag_bounded,
        ),
        Row(
            "soak: scored events/s (steady state)",
            f"{result.events_per_s:,.0f}",
            f"{result.options.rate:g} (the generator's rate)",
            result.events_per_s >= 0.95 * result.options.rate,
        ),
    ]
    if p50 is not None and p99 is not None:
        rows.append(Row("soak: end-to-end latency p50 / worst p99", f"{p50:.0f} / {p99:.0f} ms", "-", None))
    if result.exited:
        rows.append(Row("soak: processes that exited", str(result.exited), "none", False))
    return rows


def run_report(options: ReportOptions, console: Console | None = None) -> Path:
    console = console or Console()
    started = dt.datetime.now(dt.UTC)
    host = machine()
    load = host["load average (1, 5, 15 min) at the start"]
    console.print(f"benchmark report on {host['CPUs']} CPUs ({host['CPU model']}), load {load}")
    measured = Measured()
    benches: list[tuple[str, str, Callable[[], list[Row]]]] = [
        ("Collector", "fireman bench collector", lambda: _collector(options.quick)),
        ("Scorer", "fireman bench scorer", lambda: _scorer(options.quick)),
        ("Model call", "fireman bench onnx --batches 1000", lambda: _onnx(options.quick)),
        ("Monitoring", "fireman bench monitoring", lambda: _monitoring(options.quick, measured)),
        ("Scale-out", "fireman bench scale-out", lambda: _scale_out(options.quick, measured)),
        ("Serve", "fireman bench serve", lambda: _serve(options.quick)),
        ("Training", "fireman bench train", lambda: _training(options.quick)),
        ("CLI", "fireman bench cli", lambda: _cli(options.quick)),
        (
            "Soak",
            f"fireman bench soak --minutes {options.soak_minutes:g}",
            lambda: _soak(options.soak_minutes),
        ),
    ]
    sections = []
    for name, command, run in benches:
        console.rule(f"{name}: {command}")
        section = Section(name, command)
        before = os.getloadavg()[0]
        try:
            section.rows = run()
        except Exception as exc:  # one failing bench must not lose the others' figures
            section.error = f"{type(exc).__name__}: {exc}"
            console.print(f"[red]{name} bench failed: {escape(section.error)}[/]")
        section.load = (before, os.getloadavg()[0])
        sections.append(section)
    finished = dt.datetime.now(dt.UTC)
    try:
        capacity = measured.capacity()
    except Exception as exc:  # the figures it is built from are in the report either way
        capacity = [f"The capacity model could not be built: {type(exc).__name__}: {exc}"]
    text = render(sections, host, started, finished, options, capacity)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text)
    _print(sections, console)
    console.print(f"wrote {options.output}")
    return options.output


def _verdict(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "**short**")


def render(
    sections: list[Section],
    host: dict[str, str],
    started: dt.datetime,
    finished: dt.datetime,
    options: ReportOptions,
    capacity: list[str] | None = None,
) -> str:
    lines = [
        "# Performance",
        "",
        "Generated by `fireman bench report`"
        + (" --quick (short smoke runs, not for quoting)" if options.quick else "")
        + f" on {started:%Y-%m-%d %H:%M} UTC, in {(finished - started).total_seconds() / 60:.0f} min. "
        "Every figure below was measured in this one run; each ratio compares two configurations measured "
        "side by side in it, so the ratios hold even where the machine's load moved the absolute numbers.",
        "",
        "## Summary",
        "",
        "| figure | measured | target | verdict | per-message baseline (same run) | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for section in sections:
        for row in section.rows:
            cells = [row.figure, row.value, row.target, _verdict(row.met), row.baseline, row.ratio]
            lines.append("| " + " | ".join(cells) + " |")
        if section.error:
            lines.append(f"| {section.name} | failed: {section.error[:120]} | - | - | - | - |")
    if capacity:
        lines += [
            "",
            "## Capacity model",
            "",
            "Built from the monitoring bench's CPU accounting (defaults; each process's CPU time over a run "
            "divided by its events) and checked against the scale-out bench, both of this run "
            "(`fireman.bench.capacity`).",
            "",
            *capacity,
        ]
    lines += [
        "",
        "## How the figures were produced",
        "",
        "| bench | command | load average before → after |",
        "| --- | --- | --- |",
    ]
    for section in sections:
        lines.append(
            f"| {section.name} | `{section.command}` | {section.load[0]:.2f} → {section.load[1]:.2f} |"
        )
    lines += [
        "",
        "- **Collector**: a keep-alive HTTP load generator in its own process posts to a real `fireman "
        "collector` (acks=all); single-event POSTs are the per-message baseline for batch POSTs.",
        "- **Scorer**: a backlog on Kafka is scored end to end (decode → one `predict_proba` per batch → "
        "predictions acknowledged by Kafka → InfluxDB → offsets committed); the baseline scores the same "
        "events one `predict` call per message (the seed's loop, same model, one thread). Latency: events "
        "produced at a fixed rate, measured from the event's timestamp to the written prediction, with the "
        "defaults and then with the scorer as it was before #17 (JSON events, scikit-learn, 100 ms batches).",
        "- **Serve**: a real `fireman serve` process answers Open Inference Protocol V2 requests (1 row, "
        "then 100 rows each) sent open-loop at a fixed rate from this process; latency runs from each "
        "request's scheduled time to the last byte of its answer, so queueing counts.",
        "- **Training**: `fireman train` on synthetic history written to InfluxDB, wall time of all phases.",
        "- **Model call**: `ServingModel.score` alone on 1,000-row batches of unseen Spambase rows, "
        "sklearn against the version's ONNX export run by onnxruntime, in one and two threads.",
        "- **Monitoring**: scorer throughput through the same backlog in four configurations, each run "
        "several times in rotating order: the defaults (binary events, ONNX) with the drift monitor "
        "consuming the same topics and without it, the defaults with a monitor that does not give way "
        "to the scorer while it is behind, and JSON events scored by scikit-learn (the "
        "configuration before the binary wire format and the ONNX export) with the monitor on. The CPU "
        "time of every process over each run feeds the capacity model; the sink runs alone once.",
        "- **Scale-out**: one scorer against two in one consumer group, each in a process of its own, "
        "through the same backlog; then one monitor's intake rate.",
        "- **Soak**: generator → collector → Kafka → sink + scorer + monitor at a fixed rate; RSS of every "
        "process, committed consumer lag and end-to-end latency sampled every 5 s; memory is flat when no "
        "process grows 10% or more between the end of the warm-up (first 20%) and the end.",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {key} | {value} |" for key, value in host.items()),
        f"| load average at the end | {' / '.join(f'{v:.2f}' for v in os.getloadavg())} |",
        "",
        "Kafka, InfluxDB and MLflow ran locally on the same machine. Figures taken under load are lower "
        "bounds; re-run on an idle machine before quoting absolute numbers.",
        "",
        "Profiles, earlier runs and the measurements behind each design choice are in "
        "[performance-notes.md](performance-notes.md).",
        "",
    ]
    return "\n".join(lines)


def _print(sections: list[Section], console: Console) -> None:
    table = Table("figure", "measured", "target", "verdict", "baseline", "ratio", title="benchmark report")
    for section in sections:
        for row in section.rows:
            table.add_row(row.figure, row.value, row.target, _verdict(row.met), row.baseline, row.ratio)
        if section.error:
            table.add_row(section.name, f"[red]failed[/]: {escape(section.error[:80])}", "-", "-", "-", "-")
    console.print(table)
