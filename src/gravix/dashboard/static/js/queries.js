// The queries of a view's charts, in one place: the views run them, and boot.js starts
// them early (before the rest of the page's code has loaded), so both must build the
// same bodies.

import { chartGrain, timeRange } from "./state.js";

// latency_count: how many requests the percentiles stand for (a stock access log has no
// latency), said beside the latency chart; asked here so it costs no extra request.
export const CHART_METRICS = ["requests", "error_rate", "p50", "p95", "p99", "latency_count"];

/** The filters of a view's scope: one endpoint, one service, or none. */
export function scopeFilters(state) {
  const eq = (dimension, value) => ({ dimension, op: "eq", values: [value] });
  if (state.view === "endpoint") {
    return [eq("service", state.service), eq("method", state.method), eq("path", state.path)];
  }
  return state.service ? [eq("service", state.service)] : [];
}

/** POST /api/v1/query body of the charts of `state` (error rate, latency, throughput). */
export function chartQuery(state) {
  const range = timeRange(state);
  return {
    metrics: CHART_METRICS,
    filters: scopeFilters(state),
    from: range.from,
    to: range.to,
    grain: chartGrain(range.spanMs).name,
    ...(state.compare ? { compare: state.compare } : {}),
  };
}

/**
 * The error-rate chart's lines per service (the overview of all services only, else
 * null): requests and errors of every service on the charts' buckets, from which the
 * chart takes the top five and sums the rest as "others".
 */
export function serviceErrorQuery(state) {
  if (state.view !== "overview" || state.service) return null;
  const range = timeRange(state);
  return {
    metrics: ["requests", "errors"],
    dimensions: ["service"],
    from: range.from,
    to: range.to,
    grain: chartGrain(range.spanMs).name,
  };
}
