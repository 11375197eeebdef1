// The overview: charts for all services (the error rate per service) or the filtered
// one, the services table, the top failing endpoints and the events of the period.
// The tables' changes are against the chosen comparison (Day before, Week before), else
// against the previous period of the same length; every table follows the service filter.
// Above it all, a notice when intake refused facts, events or spans in the last hour
// (from GET /api/v1/status, one request a refresh), with or without data to show, and
// one of the alerts firing now (GET /api/v1/alerts); the charts mark alert transitions.

import { chartAlerts, firingNotice } from "./alerts.js";
import * as api from "./api.js";
import { ChartsSection } from "./chartsection.js";
import { h } from "./dom.js";
import { ExplainPanel } from "./explain.js";
import { exportButtons } from "./export.js";
import { eventsList, panelHead, replaceSlot, servicesTable, topEndpointsTable } from "./panels.js";
import { chartQuery, scopeFilters, serviceErrorQuery } from "./queries.js";
import { baseline, chartGrain, grainFor, href, rangeLabel, timeRange } from "./state.js";
import { rejectedNotice } from "./status.js";
import { View } from "./view.js";

const SPARK_POINTS = 40;
const TOP = 10;
const ENDPOINT_DIMENSIONS = ["service", "method", "path"];

/** The services table's query (also its download). */
function servicesQuery(state) {
  const range = timeRange(state);
  return {
    metrics: ["requests", "error_rate", "p95"], dimensions: ["service"], filters: scopeFilters(state),
    from: range.from, to: range.to, grain: "all", compare: baseline(state).compare,
    order: [{ by: "requests", desc: true }],
  };
}

/** The top failing endpoints as one query, with p95: the table's download. */
function topEndpointsExport(state) {
  const range = timeRange(state);
  return {
    metrics: ["errors", "requests", "error_rate", "p95"], dimensions: ENDPOINT_DIMENSIONS,
    filters: scopeFilters(state), from: range.from, to: range.to, grain: "all",
    compare: baseline(state).compare, order: [{ by: "errors", desc: true }], limit: TOP,
  };
}

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
async function topEndpoints(scope, when, compare) {
  const dims = ENDPOINT_DIMENSIONS;
  const counts = await api.query({
    metrics: ["errors", "requests", "error_rate"], dimensions: dims, filters: scope, ...when,
    grain: "all", compare, order: [{ by: "errors", desc: true }], limit: 5000,
  });
  const top = counts.rows.filter((row) => row[3] > 0).slice(0, TOP);
  if (!top.length) return { ...counts, p95: null };
  const values = (i) => [...new Set(top.map((row) => row[i]))];
  const p95 = await api.query({
    metrics: ["p95"], dimensions: dims, ...when, grain: "all", compare,
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
    this.explain = null;
    this.el.addEventListener("gravix:select", (e) => this.explain && this.explain.select(e.detail));
    this.title = state.service ? `${state.service} · Gravix` : "Overview · Gravix";
    this.notice = h("div", { class: "notice-slot", role: "status", hidden: true, dataset: { notice: "rejected" } });
    this.alertsNotice = h("div", { class: "notice-slot", role: "status", hidden: true, dataset: { notice: "alerts" } });
  }

  mountEmpty() {
    super.mountEmpty();
    if (this.el.firstChild !== this.alertsNotice) this.el.prepend(this.alertsNotice, this.notice);
  }

  /** The notice of alerts firing now (answer: GET /api/v1/alerts, or null: none to say). */
  showFiring(answer) {
    const node = firingNotice(answer, href({ ...this.state, view: "alerts" }));
    if ((node ? node.textContent : "") !== this.alertsNotice.textContent) {
      this.alertsNotice.replaceChildren(...(node ? [node] : []));
    }
    this.alertsNotice.hidden = !node;
  }

  /** The notice of what intake refused in the last hour (the tenant's, every service). */
  showRejected(rejected) {
    const node = rejectedNotice(rejected, href({ ...this.state, view: "status" }));
    // Only when it changes: a live region says its new text each time it is replaced.
    if ((node ? node.textContent : "") !== this.notice.textContent) {
      this.notice.replaceChildren(...(node ? [node] : []));
    }
    this.notice.hidden = !node;
  }

  mountNormal() {
    if (this.mode === "normal") return;
    this.mode = "normal";
    const s = this.state;
    const exports = [{ what: "the chart data", label: "Chart data", body: () => chartQuery(s) }];
    if (serviceErrorQuery(s)) {
      exports.push({ what: "the errors by service", label: "Errors by service", body: () => serviceErrorQuery(s) });
    }
    // All services: every deploy of every service would crowd the lanes.
    this.charts = new ChartsSection(s, { kinds: s.service ? null : ["incident", "alert"], exports });
    this.servicesSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.topSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.eventsSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.explain = new ExplainPanel(this.app, s, timeRange(s), scopeFilters(s));
    const against = baseline(s).text;
    this.el.replaceChildren(
      this.alertsNotice,
      this.notice,
      h(
        "h2",
        { class: "view-title", id: "view-title", tabindex: "-1" },
        s.service ? `Service ${s.service}` : "All services",
      ),
      this.charts.el,
      this.explain.el,
      h(
        "div",
        { class: "columns" },
        h("section", { class: "panel", "aria-labelledby": "services-title", dataset: { panel: "services" } },
          panelHead("services-title", "Services", exportButtons("the services table", () => servicesQuery(s))),
          h("p", { class: "panel-hint" }, `Change against ${against}.`),
          this.servicesSlot),
        h("section", { class: "panel", "aria-labelledby": "top-title", dataset: { panel: "endpoints" } },
          panelHead("top-title", "Top failing endpoints", exportButtons("the top failing endpoints", () => topEndpointsExport(s))),
          h("p", { class: "panel-hint" }, `By 5xx answers, with the change against ${against}; open one for its charts and status codes.`),
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
    const against = baseline(s);
    // The charts first, alone: every other request would only slow them down.
    const perServiceBody = serviceErrorQuery(s);
    const [charts, perService] = await settle([
      api.query(chartQuery(s)),
      perServiceBody ? api.query(perServiceBody) : null,
    ]);
    const eventsQuery = quiet(api.events(range.from, range.to, s.service));
    const newest = charts.meta.freshness.newest_fact_ms;
    const servicesAnswer = quiet(api.query(servicesQuery(s)));
    const sparkQuery = quiet(api.query({
      metrics: ["error_rate"], dimensions: ["service"], filters: scope, ...when, grain: spark.name,
    }));
    const topQuery = quiet(topEndpoints(scope, when, against.compare));
    const serviceList = quiet(this.app.setServices(api.services()));
    const rejected = quiet(api.status().then((st) => this.showRejected(st.rejected)));
    // Alerts add to the overview; when their API cannot answer, the rest still shows.
    const firing = quiet(api.alerts().then((answer) => this.showFiring(answer), (e) => {
      if (e.kind === "auth") throw e;
      this.showFiring(null);
    }));
    const alertMarks = quiet(chartAlerts(range.from, range.to, { service: s.service, method: "", path: "" }));
    if (newest === null) {
      this.mountEmpty();
      await settle([servicesAnswer, sparkQuery, topQuery, eventsQuery, serviceList, rejected, firing, alertMarks]);
      return { newest, charts: false };
    }
    this.mountNormal();
    const drawn = this.charts.update(charts, perService, grain.ms, newest, s.compare, rangeLabel(s));
    if (drawn) this.charts.whenDrawn().then(() => this.app.chartsDrawn(this));
    const parts = [
      serviceList,
      rejected,
      firing,
      settle([servicesAnswer, sparkQuery]).then(([services, sparks]) => {
        replaceSlot(this.servicesSlot, servicesTable(services, sparks, s, spark.ms, against.text));
      }),
      topQuery.then((top) => replaceSlot(this.topSlot, topEndpointsTable(top, s, TOP, against.text))),
      this.explain.refresh(),
      settle([eventsQuery, alertMarks]).then(([{ events }, marks]) => {
        this.charts.setEvents([...events, ...marks]);
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
