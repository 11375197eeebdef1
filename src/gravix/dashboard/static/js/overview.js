// The overview: charts for all services (or the filtered one), the services table,
// the top failing endpoints and the events of the period.

import * as api from "./api.js";
import { ChartsSection } from "./chartsection.js";
import { h } from "./dom.js";
import { eventsList, replaceSlot, servicesTable, topEndpointsTable } from "./panels.js";
import { chartQuery, scopeFilters } from "./queries.js";
import { chartGrain, grainFor, rangeLabel, timeRange } from "./state.js";
import { View } from "./view.js";

const SPARK_POINTS = 40;
const TOP = 10;

/** Await every promise; rethrow the first failure once all have settled. */
export async function settle(promises) {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw failed.reason;
  return results.map((r) => r.value);
}

/** A promise whose rejection is not reported as unhandled (it is awaited later, or not needed). */
export function quiet(promise) {
  promise.catch(() => {});
  return promise;
}

/**
 * The endpoints with the most errors, with their p95. Two queries: the counts of every
 * endpoint (cheap), then p95 for the top ones only, since merging the latency sketches
 * of every endpoint over a long range is what costs (bench/README.md, "Dashboard").
 */
async function topEndpoints(scope, when, previous) {
  const dims = ["service", "method", "path"];
  const counts = await api.query({
    metrics: ["errors", "requests", "error_rate"], dimensions: dims, filters: scope, ...when,
    grain: "all", compare: previous, order: [{ by: "errors", desc: true }], limit: 5000,
  });
  const top = counts.rows.filter((row) => row[3] > 0).slice(0, TOP);
  if (!top.length) return { ...counts, p95: null };
  const values = (i) => [...new Set(top.map((row) => row[i]))];
  const p95 = await api.query({
    metrics: ["p95"], dimensions: dims, ...when, grain: "all", compare: previous,
    filters: [
      { dimension: "service", op: "in", values: values(0) },
      { dimension: "method", op: "in", values: values(1) },
      { dimension: "path", op: "in", values: values(2) },
    ],
  });
  return { ...counts, p95 };
}

export class OverviewView extends View {
  constructor(app, state) {
    super(app, state, "overview");
    this.title = state.service ? `${state.service} · Gravix` : "Overview · Gravix";
  }

  mountNormal() {
    if (this.mode === "normal") return;
    this.mode = "normal";
    const s = this.state;
    // All services: every deploy of every service would bury the charts in lines.
    this.charts = new ChartsSection(s.service ? null : ["incident"]);
    this.servicesSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.topSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.eventsSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.el.replaceChildren(
      h(
        "h2",
        { class: "view-title", id: "view-title", tabindex: "-1" },
        s.service ? `Service ${s.service}` : "All services",
      ),
      this.charts.el,
      h(
        "div",
        { class: "columns" },
        h("section", { class: "panel", "aria-labelledby": "services-title" },
          h("h3", { id: "services-title" }, "Services"),
          h("p", { class: "panel-hint" }, "Change against the previous period of the same length."),
          this.servicesSlot),
        h("section", { class: "panel", "aria-labelledby": "top-title" },
          h("h3", { id: "top-title" }, "Top failing endpoints"),
          h("p", { class: "panel-hint" }, "By 5xx answers; open one for its charts and status codes."),
          this.topSlot),
      ),
      h("section", { class: "panel", "aria-labelledby": "events-title" },
        h("h3", { id: "events-title" }, "Events"),
        this.eventsSlot),
    );
  }

  async refresh() {
    const s = this.state;
    const range = timeRange(s);
    const grain = chartGrain(range.spanMs);
    const spark = grainFor(range.spanMs, SPARK_POINTS);
    const scope = scopeFilters(s);
    const when = { from: range.from, to: range.to };
    // The charts first, alone: every other request would only slow them down.
    const charts = await api.query(chartQuery(s));
    const eventsQuery = quiet(api.events(range.from, range.to, s.service));
    const newest = charts.meta.freshness.newest_fact_ms;
    const servicesQuery = quiet(api.query({
      metrics: ["requests", "error_rate", "p95"], dimensions: ["service"], ...when,
      grain: "all", compare: range.previous, order: [{ by: "requests", desc: true }],
    }));
    const sparkQuery = quiet(api.query({
      metrics: ["error_rate"], dimensions: ["service"], ...when, grain: spark.name,
    }));
    const topQuery = quiet(topEndpoints(scope, when, range.previous));
    const serviceList = quiet(this.app.setServices(api.services()));
    if (newest === null) {
      this.mountEmpty();
      await settle([servicesQuery, sparkQuery, topQuery, eventsQuery, serviceList]);
      return { newest, charts: false };
    }
    this.mountNormal();
    const drawn = this.charts.update(charts, grain.ms, newest, s.compare, rangeLabel(s));
    if (drawn) this.charts.whenDrawn().then(() => this.app.chartsDrawn(this));
    const parts = [
      serviceList,
      settle([servicesQuery, sparkQuery]).then(([services, sparks]) => {
        replaceSlot(this.servicesSlot, servicesTable(services, sparks, s, spark.ms));
      }),
      topQuery.then((top) => replaceSlot(this.topSlot, topEndpointsTable(top, s, TOP))),
      eventsQuery.then(({ events }) => {
        this.charts.setEvents(events);
        replaceSlot(this.eventsSlot, eventsList(events));
      }),
    ];
    await settle(parts);
    return { newest, charts: drawn };
  }

  restyle() {
    if (this.charts) this.charts.restyle();
  }
}
