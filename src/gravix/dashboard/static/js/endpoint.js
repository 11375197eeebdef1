// The endpoint view: one service's method and path, with its charts, its headline
// figures against the previous period, the status codes it answered and its versions.

import * as api from "./api.js";
import { ChartsSection } from "./chartsection.js";
import { h } from "./dom.js";
import * as fmt from "./format.js";
import { quiet, settle } from "./overview.js";
import { delta, eventsList, note, records, replaceSlot, table } from "./panels.js";
import { chartQuery, scopeFilters } from "./queries.js";
import { chartGrain, href, rangeLabel, timeRange } from "./state.js";
import { View } from "./view.js";

function statusClass(code) {
  return `status-${String(code)[0]}xx`;
}

function statusTable(result) {
  const rows = records(result);
  if (!rows.length) return note("No requests in this period.", "empty-note");
  const total = rows.reduce((sum, r) => sum + r.requests, 0);
  return table(
    "Answers by HTTP status code",
    [["Status", "name"], ["Requests", "num"], ["Share", "share"]],
    rows.map((r) =>
      h(
        "tr",
        {},
        h("th", { scope: "row", class: `name ${statusClass(r.status)}` }, String(r.status)),
        h("td", { class: "num" }, fmt.exactCount(r.requests)),
        h(
          "td",
          { class: "share" },
          h("meter", { min: 0, max: 1, value: r.requests / total, "aria-hidden": "true" }),
          " ",
          fmt.percent(r.requests / total),
        ),
      ),
    ),
    "statuses",
  );
}

function versionTable(result) {
  const rows = records(result);
  if (!rows.length) return note("No requests in this period.", "empty-note");
  return table(
    "Requests, error rate and p95 latency by version",
    [["Version", "name"], ["Requests", "num"], ["Error rate", "num"], ["p95", "num"]],
    rows.map((r) =>
      h(
        "tr",
        {},
        h("th", { scope: "row", class: "name" }, r.version === null ? h("span", { class: "muted" }, "(none)") : h("code", {}, r.version)),
        h("td", { class: "num" }, fmt.count(r.requests)),
        h("td", { class: "num" }, fmt.percent(r.error_rate)),
        h("td", { class: "num" }, fmt.ms(r.p95)),
      ),
    ),
    "versions",
  );
}

function figures(result) {
  const [now] = records(result);
  const [before] = result.compare ? records(result, result.compare.rows) : [];
  const prev = before || {};
  const item = (label, value, d) => h("div", { class: "figure" }, h("dt", {}, label), h("dd", {}, h("span", { class: "value" }, value), d ? " " : null, d));
  if (!now) return note("No requests in this period.", "empty-note");
  return h(
    "dl",
    { class: "figures" },
    item("Requests", fmt.count(now.requests), delta(now.requests, prev.requests, "relative", false)),
    item("Errors (5xx)", fmt.count(now.errors), delta(now.errors, prev.errors, "relative")),
    item("Error rate", fmt.percent(now.error_rate), delta(now.error_rate, prev.error_rate, "points")),
    item("p50", fmt.ms(now.p50), delta(now.p50, prev.p50, "relative")),
    item("p95", fmt.ms(now.p95), delta(now.p95, prev.p95, "relative")),
    item("p99", fmt.ms(now.p99), delta(now.p99, prev.p99, "relative")),
  );
}

export class EndpointView extends View {
  constructor(app, state) {
    super(app, state, "endpoint");
    this.title = `${state.method} ${state.path} · ${state.service} · Gravix`;
  }

  backLink() {
    const s = this.state;
    const overview = { ...s, view: "overview", method: "", path: "" };
    return h(
      "a",
      {
        href: href(overview),
        class: "back",
        onclick: (e) => {
          if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
          e.preventDefault();
          this.app.back(overview);
        },
      },
      "← Back",
    );
  }

  mountNormal() {
    if (this.mode === "normal") return;
    this.mode = "normal";
    const s = this.state;
    this.charts = new ChartsSection();
    this.figuresSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.statusSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.versionSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.eventsSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.el.replaceChildren(
      h("nav", { class: "crumbs", "aria-label": "Back" }, this.backLink()),
      h(
        "h2",
        { class: "view-title", id: "view-title", tabindex: "-1" },
        h("span", { class: "method" }, s.method),
        " ",
        h("span", { class: "path" }, s.path),
        " ",
        h("span", { class: "service-tag" }, s.service),
      ),
      h("section", { class: "panel", "aria-label": "Figures" }, this.figuresSlot),
      this.charts.el,
      h(
        "div",
        { class: "columns" },
        h("section", { class: "panel", "aria-labelledby": "status-title" },
          h("h3", { id: "status-title" }, "Status codes"), this.statusSlot),
        h("section", { class: "panel", "aria-labelledby": "version-title" },
          h("h3", { id: "version-title" }, "Versions"), this.versionSlot),
      ),
      h("section", { class: "panel", "aria-labelledby": "events-title" },
        h("h3", { id: "events-title" }, `Events of ${s.service}`), this.eventsSlot),
    );
  }

  async refresh() {
    const s = this.state;
    const range = timeRange(s);
    const grain = chartGrain(range.spanMs);
    const when = { from: range.from, to: range.to, filters: scopeFilters(s) };
    const charts = await api.query(chartQuery(s)); // first, alone (see overview.js)
    const eventsQuery = quiet(api.events(range.from, range.to, s.service));
    const newest = charts.meta.freshness.newest_fact_ms;
    const figureQuery = quiet(api.query({
      metrics: ["requests", "errors", "error_rate", "p50", "p95", "p99"], ...when,
      grain: "all", compare: range.previous,
    }));
    const statusQuery = quiet(api.query({
      metrics: ["requests"], dimensions: ["status"], ...when, grain: "all",
      order: [{ by: "requests", desc: true }],
    }));
    const versionQuery = quiet(api.query({
      metrics: ["requests", "error_rate", "p95"], dimensions: ["version"], ...when, grain: "all",
      order: [{ by: "requests", desc: true }], limit: 20,
    }));
    const serviceList = quiet(this.app.setServices(api.services()));
    if (newest === null) {
      this.mountEmpty();
      await settle([figureQuery, statusQuery, versionQuery, eventsQuery, serviceList]);
      return { newest, charts: false };
    }
    this.mountNormal();
    const drawn = this.charts.update(charts, grain.ms, newest, s.compare, rangeLabel(s));
    if (drawn) this.charts.whenDrawn().then(() => this.app.chartsDrawn(this));
    await settle([
      serviceList,
      figureQuery.then((r) => replaceSlot(this.figuresSlot, figures(r))),
      statusQuery.then((r) => replaceSlot(this.statusSlot, statusTable(r))),
      versionQuery.then((r) => replaceSlot(this.versionSlot, versionTable(r))),
      eventsQuery.then(({ events }) => {
        this.charts.setEvents(events);
        replaceSlot(this.eventsSlot, eventsList(events));
      }),
    ]);
    return { newest, charts: drawn };
  }

  restyle() {
    if (this.charts) this.charts.restyle();
  }
}
