// The query of a view's charts, in one place: the views run it, and boot.js starts it
// early (before the rest of the page's code has loaded), so both must build the same body.

import { chartGrain, timeRange } from "./state.js";

export const CHART_METRICS = ["requests", "error_rate", "p50", "p95", "p99"];

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
