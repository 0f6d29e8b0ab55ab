// fireman live dashboard: polls api/dashboard and draws each panel with uPlot.
// Each panel <section> exposes data-status (loading|ok|empty|error) and data-points (values drawn),
// which the headless-browser test reads.
"use strict";

(function () {
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf", "#e377c2", "#bcbd22"];
  const HEIGHT = 220;
  const state = { start: 0, end: 1, annotations: [], windowS: null, timer: null };
  const charts = {};

  const windowSelect = document.getElementById("window");
  const statusEl = document.getElementById("status");
  const banner = document.getElementById("banner");

  // Per panel: y range, and how each series is drawn.
  const PANEL_OPTIONS = {
    ingest: { y: null, series: () => ({}) },
    predictions: { y: null, series: () => ({}) },
    performance: {
      y: [0, 1],
      // Series come in pairs per version: accuracy (solid) then F1 (dashed), same colour.
      series: (label, i) => ({ stroke: COLORS[Math.floor(i / 2) % COLORS.length], dash: i % 2 ? [6, 4] : undefined }),
    },
    // Production in blue, the challenger scored in shadow in orange; accuracy solid, F1 dashed.
    shadow: {
      y: [0, 1],
      series: (label) => ({
        stroke: label.startsWith("shadow") ? COLORS[3] : COLORS[0],
        dash: label.endsWith("F1") ? [6, 4] : undefined,
      }),
    },
    drift: { y: [0, 1], series: () => ({ fill: "rgba(214, 39, 40, 0.12)", stroke: COLORS[1] }) },
    model_events: { y: null, series: () => ({ paths: uPlot.paths.stepped({ align: 1 }), stroke: COLORS[4] }) },
    lag: { y: null, series: () => ({}) },
  };

  function fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits ?? 2 });
  }

  function timeOf(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString();
  }

  // Model switches as dashed vertical lines on every chart, in grey so they never pass for data.
  function annotationsPlugin() {
    return {
      hooks: {
        draw: [
          (u) => {
            const ctx = u.ctx;
            const { left, top, width, height } = u.bbox;
            const px = window.devicePixelRatio || 1;
            ctx.save();
            ctx.lineWidth = px;
            ctx.font = `${11 * px}px system-ui, sans-serif`;
            for (const a of state.annotations) {
              const x = Math.round(u.valToPos(a.time, "x", true));
              if (x < left || x > left + width) continue;
              const refused = a.event === "refused";
              ctx.strokeStyle = refused ? "#9a9a9a" : "#555555";
              ctx.fillStyle = ctx.strokeStyle;
              ctx.setLineDash(refused ? [2 * px, 3 * px] : [5 * px, 4 * px]);
              ctx.beginPath();
              ctx.moveTo(x, top);
              ctx.lineTo(x, top + height);
              ctx.stroke();
              const label = refused ? `refused v${a.to_version}` : `v${a.to_version}`;
              ctx.fillText(label, x + 3 * px, top + 12 * px);
            }
            ctx.restore();
          },
        ],
      },
    };
  }

  function makeChart(name, el, panel) {
    const opts = PANEL_OPTIONS[name];
    const series = [{}].concat(
      panel.series.map((s, i) =>
        Object.assign(
          { label: s.label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, points: { show: sparse, size: 7 } },
          opts.series(s.label, i),
        ),
      ),
    );
    const width = Math.max(300, el.clientWidth);
    return new uPlot(
      {
        width,
        height: HEIGHT,
        series,
        scales: {
          x: { time: true, range: () => [state.start, state.end] },
          y: opts.y ? { range: opts.y } : { range: (u, min, max) => [0, Math.max(1, max * 1.1)] },
        },
        axes: [{}, { size: 56 }],
        legend: { live: true },
        plugins: [annotationsPlugin()],
      },
      toData(panel),
      el,
    );
  }

  // Dots only where a line alone would be invisible: a series with a handful of values (fresh lag).
  function sparse(u, seriesIdx) {
    let n = 0;
    for (const v of u.data[seriesIdx]) if (v !== null && v !== undefined && ++n > 3) return false;
    return true;
  }

  function toData(panel) {
    return [panel.x].concat(panel.series.map((s) => s.values));
  }

  function drawPanel(name, panel) {
    const section = document.getElementById(`panel-${name}`);
    const el = section.querySelector(".chart");
    const key = panel.series.map((s) => s.label).join("|");
    let entry = charts[name];
    if (!entry || entry.key !== key) {
      if (entry) entry.plot.destroy();
      entry = charts[name] = { key, plot: makeChart(name, el, panel) };
    } else {
      entry.plot.setData(toData(panel));
    }
    section.dataset.points = String(panel.points);
    section.dataset.series = String(panel.series.length);
    section.dataset.status = panel.points > 0 ? "ok" : "empty";
    section.querySelector(".summary").textContent = summary(name, panel);
    if (name === "drift") drawFeatures(section, panel);
    if (name === "model_events") drawEvents(section, panel);
  }

  function last(values) {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
    return null;
  }

  function summary(name, panel) {
    if (panel.points === 0) return "";
    switch (name) {
      case "ingest":
        return `${fmt(last(panel.series[0].values), 1)} events/s now · ${fmt(panel.total, 0)} in the window`;
      case "predictions":
        return `ham ${fmt(panel.total["0"], 0)} · spam ${fmt(panel.total["1"], 0)} in the window`;
      case "performance":
        return Object.entries(panel.latest)
          .map(([v, m]) => `v${v}: accuracy ${fmt(m.accuracy, 3)}, F1 ${fmt(m.f1, 3)}`)
          .join(" · ");
      case "shadow": {
        const l = panel.latest;
        if (!l) return "";
        const production = `production v${l.champion_version}: accuracy ${fmt(l.champion.accuracy, 3)}, F1 ${fmt(l.champion.f1, 3)}`;
        const shadow = `shadow v${l.challenger_version}: accuracy ${fmt(l.challenger.accuracy, 3)}, F1 ${fmt(l.challenger.f1, 3)}`;
        return `${production} · ${shadow} · on ${fmt(l.events, 0)} labelled events`;
      }
      case "drift": {
        const drifted = panel.features.filter((f) => f.drifted).length;
        return `latest share ${fmt(last(panel.series[0].values), 2)} · ${drifted} of ${panel.features.length} features drifted`;
      }
      case "model_events": {
        const switches = panel.events.filter((e) => e.event === "switch").length;
        const serving = last(panel.series[0]?.values ?? []);
        return `serving v${fmt(serving, 0)} · ${switches} switch${switches === 1 ? "" : "es"} in the window`;
      }
      case "lag": {
        const current = panel.current?.groups ?? [];
        if (panel.current?.error) return `now: unknown (${panel.current.error})`;
        return current.map((g) => `${g.group}: ${fmt(g.lag, 0)}`).join(" · ");
      }
      default:
        return "";
    }
  }

  function drawFeatures(section, panel) {
    const list = section.querySelector(".features");
    list.replaceChildren(
      ...panel.features
        .filter((f, i) => f.drifted || i < 12)
        .map((f) => {
          const li = document.createElement("li");
          li.textContent = `${f.feature} ${fmt(f.drift_score, 3)}`;
          li.title = f.drifted ? "drifted in the latest window" : "not drifted";
          if (f.drifted) li.className = "drifted";
          return li;
        }),
    );
    section.dataset.features = String(panel.features.length);
  }

  function drawEvents(section, panel) {
    const list = section.querySelector(".events");
    list.replaceChildren(
      ...panel.events
        .slice()
        .reverse()
        .map((e) => {
          const li = document.createElement("li");
          const load = e.load_seconds === null ? "" : `, loaded in ${fmt(e.load_seconds, 2)} s`;
          const what =
            e.event === "refused"
              ? `refused v${e.to_version}: ${e.reason}`
              : e.from_version
                ? `v${e.from_version} → v${e.to_version}${load}`
                : `started on v${e.to_version}${load}`;
          li.textContent = `${timeOf(e.time)} ${what}`;
          if (e.event === "refused") li.className = "refused";
          return li;
        }),
    );
    section.dataset.events = String(panel.events.length);
  }

  function showError(message) {
    banner.textContent = message;
    banner.hidden = false;
    statusEl.dataset.state = "error";
    statusEl.textContent = "not updating";
  }

  async function refresh() {
    let refreshS = 5;
    try {
      const query = state.windowS ? `?window=${state.windowS}` : "";
      const response = await fetch(`api/dashboard${query}`, { cache: "no-store" });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        showError(`The dashboard API answered ${response.status}: ${body.detail ?? response.statusText}`);
      } else {
        refreshS = body.refresh_s;
        if (state.windowS === null) {
          state.windowS = body.window_s;
          windowSelect.value = String(body.window_s);
        }
        state.start = body.start;
        state.end = body.end;
        state.annotations = body.annotations;
        for (const [name, panel] of Object.entries(body.panels)) drawPanel(name, panel);
        banner.hidden = true;
        statusEl.dataset.state = "ok";
        statusEl.textContent = `updated ${timeOf(body.generated_at)} · every ${fmt(refreshS, 0)} s`;
      }
    } catch (err) {
      showError(`The dashboard API is unreachable (${err}); retrying.`);
    }
    clearTimeout(state.timer);
    state.timer = setTimeout(refresh, refreshS * 1000);
  }

  windowSelect.addEventListener("change", () => {
    state.windowS = Number(windowSelect.value);
    refresh();
  });

  window.addEventListener("resize", () => {
    for (const [name, entry] of Object.entries(charts)) {
      const el = document.querySelector(`#panel-${name} .chart`);
      entry.plot.setSize({ width: Math.max(300, el.clientWidth), height: HEIGHT });
    }
  });

  refresh();
})();
