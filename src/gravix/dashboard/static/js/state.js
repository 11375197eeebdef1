// The view state lives in the URL, so a view can be bookmarked, shared and reloaded,
// and the browser's back button works. Query parameters of the dashboard's page:
//
//   view     overview (default) | endpoint | status | alerts | slo
//   service  a service name: the overview's filter, the endpoint's service, or the
//            SLO page's (that service's objectives and those of every service)
//   method, path   the endpoint (view=endpoint)
//   range    15m | 1h (default) | 6h | 24h | 7d | 30d: the last ...
//   from, to a fixed range instead (RFC 3339 UTC, or epoch ms); replaces range
//   compare  1d | 7d: overlay the same period a day or a week earlier; the tables'
//            changes are then against that period too (else the previous period)
//   latency  log (default) | linear: the latency chart's axis
//   rule     view=alerts only: the rule editor, for a new rule ("new") or rule <id>

export const PRESETS = ["15m", "1h", "6h", "24h", "7d", "30d"];
export const DEFAULT_RANGE = "1h";
export const COMPARES = { "1d": "a day earlier", "7d": "a week earlier" };
export const VIEWS = ["overview", "endpoint", "status", "alerts", "slo"];
export const LATENCY_SCALES = ["log", "linear"];

const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 };
export const GRAINS = [
  ["1m", 60_000], ["5m", 300_000], ["15m", 900_000], ["1h", 3_600_000], ["6h", 21_600_000], ["1d", 86_400_000],
];

export function presetMs(preset) {
  return Number(preset.slice(0, -1)) * UNIT_MS[preset.slice(-1)];
}

function parseTime(text) {
  if (!text) return null;
  if (/^\d{1,15}$/.test(text)) return Number(text);
  // Only full times with a zone: a bookmark must mean the same moment everywhere.
  if (!/[zZ]|[+-]\d\d:?\d\d$/.test(text)) return null;
  const t = Date.parse(text);
  return Number.isNaN(t) ? null : t;
}

export function isoTime(tMs) {
  return new Date(tMs).toISOString().replace(".000Z", "Z");
}

/** The state of a URL's query string; anything unknown or invalid falls back to a default. */
export function readState(search) {
  const p = new URLSearchParams(search);
  const state = {
    view: VIEWS.includes(p.get("view")) ? p.get("view") : "overview",
    service: p.get("service") || "",
    method: p.get("method") || "",
    path: p.get("path") || "",
    range: PRESETS.includes(p.get("range")) ? p.get("range") : DEFAULT_RANGE,
    from: null,
    to: null,
    compare: p.get("compare") in COMPARES ? p.get("compare") : "",
    latency: LATENCY_SCALES.includes(p.get("latency")) ? p.get("latency") : "log",
    rule: /^(new|[1-9][0-9]{0,15})$/.test(p.get("rule") || "") ? p.get("rule") : "",
  };
  const from = parseTime(p.get("from"));
  const to = parseTime(p.get("to"));
  if (from !== null && to !== null && from < to) {
    state.from = from;
    state.to = to;
    state.range = "";
  }
  if (state.view === "endpoint" && !(state.service && state.method && state.path)) state.view = "overview";
  if (state.view !== "endpoint") {
    state.method = "";
    state.path = "";
  }
  if (state.view !== "alerts") state.rule = "";
  return state;
}

/** The query string of a state, defaults left out ("" for the default overview). */
export function toSearch(state) {
  const p = new URLSearchParams();
  if (state.view !== "overview") p.set("view", state.view);
  // The status, alerts and SLO views are the tenant's, whatever the overview's filter;
  // the SLO page keeps the service alone: its objectives (a page per service).
  const scoped = !["status", "alerts", "slo"].includes(state.view);
  if (state.view === "alerts" && state.rule) p.set("rule", state.rule);
  if ((scoped || state.view === "slo") && state.service) p.set("service", state.service);
  if (scoped && state.view === "endpoint") {
    p.set("method", state.method);
    p.set("path", state.path);
  }
  if (state.from !== null && state.to !== null) {
    p.set("from", isoTime(state.from));
    p.set("to", isoTime(state.to));
  } else if (state.range && state.range !== DEFAULT_RANGE) {
    p.set("range", state.range);
  }
  if (state.compare && scoped) p.set("compare", state.compare);
  if (state.latency === "linear" && scoped) p.set("latency", state.latency);
  const text = p.toString();
  return text ? `?${text}` : "";
}

export function href(state) {
  return `./${toSearch(state)}`;
}

/** The query range of a state: {from, to, spanMs, fixed, previous} (previous: a duration). */
export function timeRange(state) {
  if (state.from !== null && state.to !== null) {
    const span = state.to - state.from;
    return { from: state.from, to: state.to, spanMs: span, fixed: true, previous: duration(span) };
  }
  return { from: `now-${state.range}`, to: "now", spanMs: presetMs(state.range), fixed: false, previous: state.range };
}

/**
 * What the tables' changes are measured against: the chosen comparison (Day before,
 * Week before), else the previous period of the same length. {compare, text}: the
 * query's `compare` offset, and the baseline in words.
 */
export function baseline(state) {
  if (state.compare) return { compare: state.compare, text: `the same period ${COMPARES[state.compare]}` };
  return { compare: timeRange(state).previous, text: "the previous period of the same length" };
}

/** A query duration for a span: whole minutes when it is one, else seconds. */
export function duration(spanMs) {
  if (spanMs % 60_000 === 0) return `${spanMs / 60_000}m`;
  return `${Math.max(1, Math.round(spanMs / 1000))}s`;
}

// Charts of more than two weeks get a point a day: the daily tier answers them, where
// finer points over a month merge every hour's latency sketches (about 4x slower, see
// bench/README.md, "Dashboard").
export const DAILY_AFTER_MS = 14 * 86_400_000;
const CHART_POINTS = 300;

/** The grain of the charts for a range of `spanMs`. */
export function chartGrain(spanMs) {
  if (spanMs > DAILY_AFTER_MS) return { name: "1d", ms: 86_400_000 };
  return grainFor(spanMs, CHART_POINTS);
}

/** The finest grain that keeps a series at most `maxPoints` buckets long. */
export function grainFor(spanMs, maxPoints) {
  for (const [name, grainMs] of GRAINS) {
    if (spanMs / grainMs <= maxPoints) return { name, ms: grainMs };
  }
  const [name, grainMs] = GRAINS[GRAINS.length - 1];
  return { name, ms: grainMs };
}

export function rangeLabel(state) {
  if (state.from !== null && state.to !== null) return "the chosen period";
  return `the last ${state.range.replace("m", " min").replace("h", " h").replace("d", " days")}`;
}
