// Charts (uPlot, from web/node_modules, served by Gravix) and sparklines (plain SVG).
//
// A query result is a list of rows for the buckets that had requests; a chart needs
// one value per bucket. seriesData() lays the rows out on every bucket of the range,
// with gaps (null) where a bucket had no requests, and the comparison rows (already
// moved forward by the offset by the API) beside them. serviceLines() does the same
// for the overview's error rate per service.
//
// Each chart's legend shows values without a pointer (a phone has none): those of the
// bucket pointed at, else of the bucket tapped or clicked ("selected"; tap it again to
// let go), else of the newest bucket with data ("latest").
//
// A request may have no latency (a stock nginx or Apache access log): the percentiles
// are of the requests that had one, so the latency chart says how many of the period's
// requests those are, and says there is no latency instead of drawing an empty plot.

import uPlot from "../../vendor/uplot/uPlot.esm.js";
import { h, svg } from "./dom.js";
import * as fmt from "./format.js";
import { kindOf, MarkerLane } from "./markers.js";

const HEIGHT = 190;
export const TOP_SERVICES = 5;
// A log axis cannot show 0: a latency of 0 ms is drawn at this floor (the legend says 0).
const LOG_FLOOR_MS = 0.01;

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#777";
}

/** Only the powers of ten of a log axis's splits: a grid line per decade, not nine. */
function decades(u, splits) {
  return splits.map((v) => (v !== null && Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9 ? v : null));
}

function latencyAxis(v) {
  if (v >= 1000) return `${+(v / 1000).toFixed(1)} s`;
  return `${+v.toPrecision(3)} ms`;
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
    axis: latencyAxis,
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
    const seconds = Math.max(1, (Math.min(start + grainMs, to) - start) / 1000);
    if (out.requests[i] !== null) out.throughput[i] = out.requests[i] / seconds;
    else if (start <= zeroBefore) out.throughput[i] = 0; // a quiet bucket: no requests at all
  }
  return out;
}

/**
 * {requests, known}: the requests of a result's rows and, of them, those with a latency
 * (latency_count; a result without that column counts every request as known).
 */
export function latencyCoverage(result) {
  const at = Object.fromEntries(result.columns.map((c, i) => [c.name, i]));
  let requests = 0;
  let known = 0;
  for (const row of result.rows) {
    requests += row[at.requests];
    known += at.latency_count === undefined || row[at.latency_count] === null ? row[at.requests] : row[at.latency_count];
  }
  return { requests, known };
}

/** {xs, from, values, compare, latency, empty, compareEmpty} for a time-series query result. */
export function seriesData(result, grainMs, newestMs) {
  const { from, to } = result.meta;
  const n = Math.max(1, Math.ceil((to - from) / grainMs));
  const xs = Array.from({ length: n }, (_, i) => (from + i * grainMs) / 1000);
  const newest = newestMs === null || newestMs === undefined ? -Infinity : newestMs;
  // The API counts whole minutes (meta.to: the end of the current one); the current
  // bucket's rate is over the part that has passed, up to the moment asked.
  const asked = result.meta.requested ? Math.min(to, result.meta.requested.to) : to;
  const values = layOut(result.rows, result.columns, from, asked, grainMs, n, newest);
  let compare = null;
  if (result.compare) {
    const rows = result.compare.rows;
    compare = layOut(rows, result.columns, from, asked, grainMs, n, rows.length ? Infinity : -Infinity);
  }
  return {
    xs,
    from,
    grainMs,
    values,
    compare,
    services: null,
    latency: latencyCoverage(result),
    empty: result.rows.length === 0,
    compareEmpty: result.compare ? result.compare.rows.length === 0 : null,
  };
}

/**
 * The error rate (in %) per bucket of the services with the most 5xx answers in the
 * period (ties: more requests, then the name), the rest summed as "others"; with six
 * services or fewer, every one by name. Adds `services` ([{key, label, color}]) and
 * their values to `data` (from seriesData, on the same buckets).
 */
export function serviceLines(result, data, top = TOP_SERVICES) {
  const at = Object.fromEntries(result.columns.map((c, i) => [c.name, i]));
  const totals = new Map();
  for (const row of result.rows) {
    const t = totals.get(row[at.service]) || { requests: 0, errors: 0 };
    t.requests += row[at.requests];
    t.errors += row[at.errors];
    totals.set(row[at.service], t);
  }
  const ranked = [...totals.entries()]
    .sort(([a, x], [b, y]) => y.errors - x.errors || y.requests - x.requests || (a < b ? -1 : a > b ? 1 : 0))
    .map(([name]) => name);
  const named = ranked.length <= top + 1 ? ranked : ranked.slice(0, top);
  const line = new Map(named.map((name, i) => [name, i]));
  const others = ranked.length > named.length ? named.length : -1;
  const n = data.xs.length;
  const sums = Array.from({ length: named.length + (others >= 0 ? 1 : 0) }, () => ({
    requests: new Array(n).fill(0),
    errors: new Array(n).fill(0),
  }));
  for (const row of result.rows) {
    const i = Math.round((row[at.time] - data.from) / data.grainMs);
    if (i < 0 || i >= n) continue;
    const j = line.has(row[at.service]) ? line.get(row[at.service]) : others;
    sums[j].requests[i] += row[at.requests];
    sums[j].errors[i] += row[at.errors];
  }
  data.services = sums.map((s, j) => {
    const key = `service-${j}`;
    data.values[key] = s.requests.map((r, i) => (r > 0 ? (s.errors[i] / r) * 100 : null));
    const isOthers = j === others;
    return {
      key,
      label: isOthers ? `others (${ranked.length - named.length} services)` : named[j],
      color: isOthers ? "--s-other" : `--s-${j + 1}`,
    };
  });
  return data;
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

/** The shade of the events listed: one event's marker colour (markers.kindOf); several: red. */
function eventColor(events) {
  const kind = events.length === 1 ? kindOf(events) : "incident";
  if (kind === "deploy" || kind === "resolved") return cssVar("--c-deploy");
  if (kind === "incident" || kind === "firing") return cssVar("--c-err");
  return cssVar("--muted");
}

/**
 * One chart panel: a title, the plot, its marker lane, its legend (exact values) and the
 * list of the events of the marker pointed at. options: {log} (latency on a log axis),
 * {tools} (a node beside the title). The latency panel also says how many requests had
 * a latency when some had none, and words instead of the plot when none had.
 */
export class ChartPanel {
  constructor(spec, { log = false, tools = null } = {}) {
    this.spec = spec;
    this.log = log && spec.id === "latency";
    this.events = [];
    this.plot = null;
    this.signature = "";
    this.data = null;
    this.compareLabel = "";
    this.raw = []; // per uPlot series: the values the legend shows (unclamped)
    this.latest = -1; // the newest bucket with a value on any line
    this.selected = null; // the time (s) of the bucket tapped or clicked
    this.drawn = Promise.resolve();
    this.resolveDrawn = null;
    this.width = 0;
    this.titleId = `chart-${spec.id}-title`;
    this.titleEl = h("h3", { id: this.titleId }, spec.title);
    this.plotEl = h("div", { class: "chart", role: "img", "aria-label": spec.title });
    this.lane = new MarkerLane(`chart-${spec.id}`, () => this.redrawSoon());
    this.legendEl = h("div", { class: "chart-legend" });
    this.tools = tools;
    this.noteEl = h("p", { class: "chart-note", hidden: true });
    this.blankEl = h("div", { class: "chart-blank", hidden: true });
    // The plot and what belongs to it, hidden together when there is nothing to draw.
    this.bodyEl = h("div", { class: "chart-body" }, this.plotEl, this.lane.el, this.legendEl, this.lane.list);
    this.el = h(
      "section",
      { class: "panel chart-panel", "aria-labelledby": this.titleId, dataset: { chart: spec.id, scale: this.log ? "log" : "linear" } },
      h("div", { class: "chart-head" }, this.titleEl, tools),
      this.blankEl,
      this.bodyEl,
      this.noteEl, // under the legend, so the three plots stay level
    );
    // The plot follows its box (window resized, scroll bar shown, phone turned).
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(this.plotEl);
  }

  /** The solid lines of `data`: [{key, label, color}]. */
  lines(data) {
    return this.spec.id === "error-rate" && data.services ? data.services : this.spec.series;
  }

  /** The dashed comparison lines: [{key, label, color}] over data.compare. */
  dashed(data, compareLabel) {
    if (!compareLabel || !data.compare) return [];
    if (this.spec.id === "error-rate" && data.services) {
      return [{ key: "error_rate", label: `all services, ${compareLabel}`, color: "--muted" }];
    }
    return this.spec.compare.map((key) => {
      const s = this.spec.series.find((x) => x.key === key);
      return { ...s, label: `${s.label}, ${compareLabel}` };
    });
  }

  /** The bucket the legend shows when nothing is pointed at: the selected one, else the latest. */
  restIndex() {
    if (this.selected !== null) {
      const i = this.data.xs.indexOf(this.selected);
      if (i >= 0) return i;
      this.selected = null; // the range moved on past it
      this.el.dataset.selected = "";
    }
    return this.latest;
  }

  legendValue(si, idx) {
    const i = idx === null || idx === undefined ? this.restIndex() : idx;
    if (si === 0) {
      if (i < 0) return "–";
      const time = fmt.dateTime(this.data.xs[i] * 1000);
      if (idx !== null && idx !== undefined) return time;
      return `${time} (${this.selected !== null ? "selected" : "latest"})`;
    }
    const v = i < 0 ? null : this.raw[si][i];
    return v === null || v === undefined ? "–" : this.spec.value(v);
  }

  options() {
    const spec = this.spec;
    const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid"), width: 1 }, ticks: { stroke: cssVar("--grid"), width: 1 } };
    const value = (u, v, si, idx) => this.legendValue(si, idx);
    const series = [{ label: "Time", value }];
    for (const s of this.lines(this.data)) {
      series.push({ label: s.label, stroke: cssVar(s.color), width: 1.75, value, points: lonePoints() });
    }
    for (const s of this.dashed(this.data, this.compareLabel)) {
      series.push({ label: s.label, stroke: cssVar(s.color), width: 1.25, dash: [6, 4], value, points: lonePoints() });
    }
    // Log: whole decades, so the lowest line is not pressed on the bottom edge.
    const y = this.log
      ? { distr: 3, log: 10, range: (u, min, max) => (min > 0 && max > 0 ? uPlot.rangeLog(min, max, 10, true) : [1, 1000]) }
      : { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] };
    const yAxis = { ...axis, font: "11px system-ui, sans-serif", size: 56, values: (u, ticks) => ticks.map((v) => (v === null ? null : spec.axis(v))) };
    if (this.log) {
      yAxis.filter = decades;
      yAxis.grid = { ...axis.grid, filter: decades };
      yAxis.ticks = { ...axis.ticks, filter: decades };
    }
    return {
      width: Math.max(200, this.plotEl.clientWidth || 300),
      height: HEIGHT,
      series,
      scales: { y },
      axes: [
        { ...axis, font: "11px system-ui, sans-serif" },
        yAxis,
      ],
      legend: { live: true, mount: (u, el) => this.legendEl.replaceChildren(el) },
      cursor: { y: false, points: { size: 6 } },
      hooks: {
        ready: [(u) => u.over.addEventListener("click", () => this.select(u))],
        draw: [(u) => {
          this.lane.update(u, this.events);
          this.drawGuides(u);
          if (this.resolveDrawn) this.resolveDrawn();
          this.resolveDrawn = null;
        }],
      },
    };
  }

  /** A tap or click on the plot selects its bucket; the same one again lets go. */
  select(u) {
    const idx = u.cursor.idx;
    if (idx === null || idx === undefined || !this.data) return;
    const t = this.data.xs[idx];
    this.selected = this.selected === t ? null : t;
    this.el.dataset.selected = this.selected === null ? "" : String(this.selected * 1000);
    u.redraw(false, false);
    // The view's "What changed" panel explains the bucket (explain.js).
    const detail = { chart: this.spec.id, time: this.selected === null ? null : this.selected * 1000, grainMs: this.data.grainMs };
    this.el.dispatchEvent(new CustomEvent("gravix:select", { bubbles: true, detail }));
  }

  /** The time span of the events listed (shaded), and the selected bucket (a dashed line). */
  drawGuides(u) {
    const { ctx } = u;
    const { top, height } = u.bbox;
    const px = uPlot.pxRatio || 1;
    const shown = this.lane.shown;
    ctx.save();
    if (shown) {
      const times = shown.events.map((e) => e.timestamp / 1000);
      const x0 = u.valToPos(Math.min(...times), "x", true);
      const x1 = u.valToPos(Math.max(...times), "x", true);
      const width = Math.max(2 * px, x1 - x0);
      ctx.fillStyle = eventColor(shown.events);
      ctx.globalAlpha = 0.25;
      ctx.fillRect((x0 + x1) / 2 - width / 2, top, width, height);
      ctx.globalAlpha = 1;
    }
    if (this.selected !== null) {
      const x = Math.round(u.valToPos(this.selected, "x", true));
      ctx.strokeStyle = cssVar("--muted");
      ctx.lineWidth = px;
      ctx.setLineDash([3 * px, 3 * px]);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
    }
    ctx.restore();
  }

  redrawSoon() {
    // Not from inside uPlot's draw hook, where a redraw would be dropped.
    requestAnimationFrame(() => this.plot && this.plot.redraw(false, false));
  }

  columns() {
    const d = this.data;
    const lines = this.lines(d).map((s) => d.values[s.key]);
    const dashed = this.dashed(d, this.compareLabel).map((s) => d.compare[s.key]);
    this.raw = [d.xs, ...lines, ...dashed];
    this.latest = -1;
    for (let i = d.xs.length - 1; i >= 0 && this.latest < 0; i--) {
      if (lines.some((vals) => vals[i] !== null)) this.latest = i;
    }
    const plotted = (vals) => (this.log ? vals.map((v) => (v === null ? null : Math.max(v, LOG_FLOOR_MS))) : vals);
    return [d.xs, ...lines.map(plotted), ...dashed.map(plotted)];
  }

  /** Draw `data` (from seriesData); compareLabel: "a day earlier" or "" for none. */
  update(data, compareLabel) {
    this.data = data;
    this.compareLabel = data.compare ? compareLabel : "";
    this.drawn = new Promise((resolve) => {
      this.resolveDrawn = resolve;
    });
    const labels = [...this.lines(data), ...this.dashed(data, this.compareLabel)].map((s) => `${s.key}=${s.label}`);
    const signature = labels.join("\n");
    const title = data.services && this.spec.id === "error-rate" ? `${this.spec.title} by service` : this.spec.title;
    const shownTitle = this.log ? `${title}, log scale` : title;
    if (this.titleEl.textContent !== shownTitle) this.titleEl.textContent = shownTitle;
    const columns = this.columns();
    if (!this.plot || signature !== this.signature) {
      this.destroy();
      this.signature = signature;
      this.plot = new uPlot(this.options(), columns, this.plotEl);
      this.width = this.plotEl.clientWidth;
    } else {
      this.plot.setData(columns);
    }
    this.plotEl.setAttribute("aria-label", `${shownTitle}: ${this.summary()}`);
    if (this.spec.id === "latency") this.showCoverage(data.latency);
  }

  /**
   * How many of the period's requests the latency lines stand for: a note when some had
   * no latency, words instead of the plot when none had (the plot is still drawn, hidden).
   */
  showCoverage({ requests, known }) {
    const none = requests > 0 && known === 0;
    const partial = known > 0 && known < requests;
    let note = "";
    if (partial) {
      // Never "0%" or "100%" for a part: 1 of 1,000 is "1%", 999 of 1,000 is "99%".
      const share = Math.min(99, Math.max(1, Math.round((known / requests) * 100)));
      note = `Latency known for ${fmt.exactCount(known)} of ${fmt.exactCount(requests)} requests (${share}%); the lines are of those.`;
    }
    if (this.noteEl.textContent !== note) this.noteEl.textContent = note;
    this.noteEl.hidden = !partial;
    this.el.dataset.latency = none ? "none" : partial ? "partial" : "all";
    this.bodyEl.hidden = none;
    if (this.tools) this.tools.hidden = none;
    this.blankEl.hidden = !none;
    if (none) {
      this.blankEl.replaceChildren(
        h("p", { class: "chart-blank-title" }, "No latency recorded (access log without request time)"),
        h("p", {}, `None of the ${fmt.exactCount(requests)} requests of this period came with a latency, as from an nginx or Apache access log in its stock format. Add $request_time (nginx) or %D (Apache) to the log format: docs/sending-data.md, "Access logs".`),
      );
    }
  }

  summary() {
    const { xs } = this.data;
    const parts = this.lines(this.data).map((s) => {
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
    this.plot = new uPlot(this.options(), this.columns(), this.plotEl);
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
