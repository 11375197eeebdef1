// Charts (uPlot, from web/node_modules, served by Gravix) and sparklines (plain SVG).
//
// A query result is a list of rows for the buckets that had requests; a chart needs
// one value per bucket. seriesData() lays the rows out on every bucket of the range,
// with gaps (null) where a bucket had no requests, and the comparison rows (already
// moved forward by the offset by the API) beside them.

import uPlot from "../../vendor/uplot/uPlot.esm.js";
import { h, svg } from "./dom.js";
import * as fmt from "./format.js";

const HEIGHT = 190;

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#777";
}

export const CHART_SPECS = [
  {
    id: "error-rate",
    title: "Error rate (5xx share)",
    series: [{ key: "error_rate", label: "error rate", color: "--c-err" }],
    compare: ["error_rate"],
    value: (v) => fmt.percent(v / 100),
    axis: (v) => `${+v.toFixed(2)}%`,
  },
  {
    id: "latency",
    title: "Latency",
    series: [
      { key: "p50", label: "p50", color: "--c-1" },
      { key: "p95", label: "p95", color: "--c-2" },
      { key: "p99", label: "p99", color: "--c-3" },
    ],
    compare: ["p95"],
    value: fmt.ms,
    axis: (v) => (v >= 1000 ? `${+(v / 1000).toFixed(1)} s` : `${+v.toFixed(1)} ms`),
  },
  {
    id: "throughput",
    title: "Throughput",
    series: [{ key: "throughput", label: "requests/s", color: "--c-1" }],
    compare: ["throughput"],
    value: fmt.rate,
    axis: (v) => `${+v.toFixed(2)}/s`,
  },
];

const KEYS = ["requests", "error_rate", "p50", "p95", "p99", "throughput"];

function layOut(rows, columns, from, to, grainMs, n, zeroBefore) {
  const at = Object.fromEntries(columns.map((c, i) => [c.name, i]));
  const out = Object.fromEntries(KEYS.map((k) => [k, new Array(n).fill(null)]));
  for (const row of rows) {
    const i = Math.round((row[at.time] - from) / grainMs);
    if (i < 0 || i >= n) continue;
    out.requests[i] = row[at.requests];
    out.error_rate[i] = row[at.error_rate] === null ? null : row[at.error_rate] * 100;
    for (const k of ["p50", "p95", "p99"]) out[k][i] = row[at[k]];
  }
  for (let i = 0; i < n; i++) {
    const start = from + i * grainMs;
    // Requests per second over the part of the bucket inside the range: the current,
    // unfinished bucket is not shown as a drop in traffic.
    const seconds = (Math.min(start + grainMs, to) - start) / 1000;
    if (out.requests[i] !== null) out.throughput[i] = out.requests[i] / seconds;
    else if (start <= zeroBefore) out.throughput[i] = 0; // a quiet bucket: no requests at all
  }
  return out;
}

/** {xs, values, compare, empty, compareEmpty} for a time-series query result. */
export function seriesData(result, grainMs, newestMs) {
  const { from, to } = result.meta;
  const n = Math.max(1, Math.ceil((to - from) / grainMs));
  const xs = Array.from({ length: n }, (_, i) => (from + i * grainMs) / 1000);
  const newest = newestMs === null || newestMs === undefined ? -Infinity : newestMs;
  const values = layOut(result.rows, result.columns, from, to, grainMs, n, newest);
  let compare = null;
  if (result.compare) {
    const rows = result.compare.rows;
    compare = layOut(rows, result.columns, from, to, grainMs, n, rows.length ? Infinity : -Infinity);
  }
  return {
    xs,
    values,
    compare,
    empty: result.rows.length === 0,
    compareEmpty: result.compare ? result.compare.rows.length === 0 : null,
  };
}

/** Indices of values with no neighbour: a line cannot show them, so they get a dot. */
function isolated(values) {
  const out = [];
  for (let i = 0; i < values.length; i++) {
    if (values[i] !== null && (i === 0 || values[i - 1] === null) && (i === values.length - 1 || values[i + 1] === null)) out.push(i);
  }
  return out.length ? out : null;
}

const lonePoints = () => ({ size: 5, filter: (u, si, show) => (show ? null : isolated(u.data[si])) });

function eventColor(kind) {
  if (kind === "deploy") return cssVar("--c-deploy");
  if (kind === "incident") return cssVar("--c-err");
  return cssVar("--muted");
}

function drawEvents(u, events) {
  const { ctx } = u;
  const { left, top, width, height } = u.bbox;
  const px = devicePixelRatio || 1;
  ctx.save();
  ctx.lineWidth = 1.5 * px;
  for (const ev of events) {
    const x = Math.round(u.valToPos(ev.timestamp / 1000, "x", true));
    if (x < left || x > left + width) continue;
    const color = eventColor(ev.kind);
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.setLineDash(ev.kind === "deploy" || ev.kind === "incident" ? [] : [3 * px, 3 * px]);
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, top + height);
    ctx.stroke();
    ctx.beginPath(); // a flag on top, so a marker is told from a data line
    ctx.moveTo(x - 5 * px, top);
    ctx.lineTo(x + 5 * px, top);
    ctx.lineTo(x, top + 7 * px);
    ctx.closePath();
    ctx.fill();
  }
  ctx.restore();
}

export function eventText(ev) {
  const version = ev.version ? ` ${ev.version}` : "";
  return `${ev.kind}${version} · ${ev.service} · ${fmt.dateTime(ev.timestamp)} — ${ev.message}`;
}

/** One chart panel: a title, the plot (uPlot: legend with exact values on hover), a hover line. */
export class ChartPanel {
  constructor(spec) {
    this.spec = spec;
    this.events = [];
    this.plot = null;
    this.signature = "";
    this.data = null;
    this.drawn = Promise.resolve();
    this.resolveDrawn = null;
    this.width = 0;
    this.titleId = `chart-${spec.id}-title`;
    this.plotEl = h("div", { class: "chart", role: "img", "aria-label": spec.title });
    this.hoverEl = h("p", { class: "chart-hover" });
    this.el = h(
      "section",
      { class: "panel chart-panel", "aria-labelledby": this.titleId, dataset: { chart: spec.id } },
      h("h3", { id: this.titleId }, spec.title),
      this.plotEl,
      this.hoverEl,
    );
    // The plot follows its box (window resized, scroll bar shown, phone turned).
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(this.plotEl);
  }

  options(compareLabel) {
    const spec = this.spec;
    const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid"), width: 1 }, ticks: { stroke: cssVar("--grid"), width: 1 } };
    const shown = (v) => (v === null || v === undefined ? "–" : spec.value(v));
    const series = [{ value: (u, t) => (t === null ? "–" : fmt.dateTime(t * 1000)) }];
    for (const s of spec.series) {
      series.push({ label: s.label, stroke: cssVar(s.color), width: 1.75, value: (u, v) => shown(v), points: lonePoints() });
    }
    if (compareLabel) {
      for (const key of spec.compare) {
        const s = spec.series.find((x) => x.key === key);
        series.push({
          label: `${s.label}, ${compareLabel}`,
          stroke: cssVar(s.color),
          width: 1.25,
          dash: [6, 4],
          value: (u, v) => shown(v),
          points: lonePoints(),
        });
      }
    }
    return {
      width: Math.max(200, this.plotEl.clientWidth || 300),
      height: HEIGHT,
      series,
      scales: { y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { ...axis, font: "11px system-ui, sans-serif" },
        { ...axis, font: "11px system-ui, sans-serif", size: 56, values: (u, ticks) => ticks.map(spec.axis) },
      ],
      legend: { live: true },
      cursor: { y: false, points: { size: 6 } },
      hooks: {
        draw: [(u) => {
          drawEvents(u, this.events);
          if (this.resolveDrawn) this.resolveDrawn();
          this.resolveDrawn = null;
        }],
        setCursor: [(u) => this.hover(u)],
      },
    };
  }

  columns() {
    const d = this.data;
    const cols = [d.xs, ...this.spec.series.map((s) => d.values[s.key])];
    if (this.signature) cols.push(...this.spec.compare.map((k) => d.compare[k]));
    return cols;
  }

  /** Draw `data` (from seriesData); compareLabel: "a day earlier" or "" for none. */
  update(data, compareLabel) {
    this.data = data;
    this.drawn = new Promise((resolve) => {
      this.resolveDrawn = resolve;
    });
    const signature = data.compare ? compareLabel : "";
    if (!this.plot || signature !== this.signature) {
      this.destroy();
      this.signature = signature;
      this.plot = new uPlot(this.options(signature), this.columns(), this.plotEl);
      this.width = this.plotEl.clientWidth;
    } else {
      this.plot.setData(this.columns());
    }
    this.plotEl.setAttribute("aria-label", `${this.spec.title}: ${this.summary()}`);
  }

  summary() {
    const { xs } = this.data;
    const parts = this.spec.series.map((s) => {
      const vals = this.data.values[s.key];
      let peak = -1;
      for (let i = 0; i < vals.length; i++) if (vals[i] !== null && (peak < 0 || vals[i] > vals[peak])) peak = i;
      if (peak < 0) return `${s.label}: no data`;
      return `${s.label} peaks at ${this.spec.value(vals[peak])} at ${fmt.dateTime(xs[peak] * 1000)}`;
    });
    return parts.join("; ");
  }

  setEvents(events) {
    this.events = events;
    if (this.plot) this.plot.redraw(false, false);
  }

  hover(u) {
    const left = u.cursor.left;
    let text = "";
    if (left !== undefined && left >= 0) {
      let best = 7; // px: close enough to a marker to name it
      for (const ev of this.events) {
        const d = Math.abs(u.valToPos(ev.timestamp / 1000, "x") - left);
        if (d <= best) {
          best = d;
          text = eventText(ev);
        }
      }
    }
    if (this.hoverEl.textContent !== text) this.hoverEl.textContent = text;
  }

  resize() {
    const width = this.plotEl.clientWidth;
    if (this.plot && width && width !== this.width) {
      this.width = width;
      this.plot.setSize({ width, height: HEIGHT });
    }
  }

  /** Rebuild with the current colours (after a light/dark switch). */
  restyle() {
    if (!this.plot || !this.data) return;
    this.destroy();
    this.plot = new uPlot(this.options(this.signature), this.columns(), this.plotEl);
    this.width = this.plotEl.clientWidth;
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }

  /** For good: the view is gone. */
  dispose() {
    this.destroy();
    this.resizer.disconnect();
  }
}

/** A small SVG line of `values` (ratios, null for gaps), scaled to at least `floor`. */
export function sparkline(values, label, floor = 0.05) {
  const known = values.filter((v) => v !== null);
  const top = Math.max(floor, ...known);
  const n = values.length;
  let d = "";
  let pen = false;
  values.forEach((v, i) => {
    if (v === null) {
      pen = false;
      return;
    }
    const x = n > 1 ? (i / (n - 1)) * 100 : 50;
    const y = 22 - (v / top) * 20;
    d += `${pen ? "L" : "M"}${x.toFixed(2)} ${y.toFixed(2)} `;
    pen = true;
  });
  return svg(
    "svg",
    { class: "spark", viewBox: "0 0 100 24", preserveAspectRatio: "none", role: "img", "aria-label": label },
    svg("title", {}, label),
    svg("line", { x1: 0, x2: 100, y1: 22, y2: 22, class: "spark-base", "vector-effect": "non-scaling-stroke" }),
    d ? svg("path", { d: d.trim(), class: "spark-line", "vector-effect": "non-scaling-stroke" }) : null,
  );
}
