// The endpoint view: one service's method and path, with its charts, its headline
// figures against the chosen comparison (else the previous period), the status codes
// it answered and its versions, each with its downloads.

import { chartAlerts } from "./alerts.js";
import * as api from "./api.js";
import { ChartsSection } from "./chartsection.js";
import { h } from "./dom.js";
import { ExplainPanel } from "./explain.js";
import { exportButtons } from "./export.js";
import * as fmt from "./format.js";
import { quiet, settle } from "./overview.js";
import { delta, eventsList, note, panelHead, records, replaceSlot, table } from "./panels.js";
import { chartQuery, scopeFilters } from "./queries.js";
import { baseline, chartGrain, href, rangeLabel, timeRange } from "./state.js";
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

function figures(result, against) {
  const [now] = records(result);
  const [before] = result.compare ? records(result, result.compare.rows) : [];
  const prev = before || {};
  const item = (label, value, d) => h("div", { class: "figure" }, h("dt", {}, label), h("dd", {}, h("span", { class: "value" }, value), d ? " " : null, d));
  const change = (key, kind, higherIsWorse = true) => delta(now[key], prev[key], kind, higherIsWorse, against);
  if (!now) return note("No requests in this period.", "empty-note");
  return h(
    "dl",
    { class: "figures" },
    item("Requests", fmt.count(now.requests), change("requests", "relative", false)),
    item("Errors (5xx)", fmt.count(now.errors), change("errors", "relative")),
    item("Error rate", fmt.percent(now.error_rate), change("error_rate", "points")),
    item("p50", fmt.ms(now.p50), change("p50", "relative")),
    item("p95", fmt.ms(now.p95), change("p95", "relative")),
    item("p99", fmt.ms(now.p99), change("p99", "relative")),
  );
}

/** The figures, status codes and versions queries of an endpoint (the views and their downloads). */
function figuresQuery(state) {
  const range = timeRange(state);
  return {
    metrics: ["requests", "errors", "error_rate", "p50", "p95", "p99"], filters: scopeFilters(state),
    from: range.from, to: range.to, grain: "all", compare: baseline(state).compare,
  };
}

function statusQuery(state) {
  const range = timeRange(state);
  return {
    metrics: ["requests"], dimensions: ["status"], filters: scopeFilters(state), from: range.from, to: range.to,
    grain: "all", order: [{ by: "requests", desc: true }],
  };
}

function versionQuery(state) {
  const range = timeRange(state);
  return {
    metrics: ["requests", "error_rate", "p95"], dimensions: ["version"], filters: scopeFilters(state),
    from: range.from, to: range.to, grain: "all", order: [{ by: "requests", desc: true }], limit: 20,
  };
}

export class EndpointView extends View {
  constructor(app, state) {
    super(app, state, "endpoint");
    this.explain = null;
    this.el.addEventListener("gravix:select", (e) => this.explain && this.explain.select(e.detail));
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
    this.charts = new ChartsSection(s, { exports: [{ what: "the chart data", label: "Chart data", body: () => chartQuery(s) }] });
    this.figuresSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.statusSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.versionSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.eventsSlot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.explain = new ExplainPanel(this.app, s, timeRange(s), scopeFilters(s));
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
      h("section", { class: "panel", "aria-label": "Figures", dataset: { panel: "figures" } },
        h("div", { class: "panel-head" },
          h("p", { class: "panel-hint" }, `Change against ${baseline(s).text}.`),
          exportButtons("the figures", () => figuresQuery(s))),
        this.figuresSlot),
      this.charts.el,
      this.explain.el,
      h(
        "div",
        { class: "columns" },
        h("section", { class: "panel", "aria-labelledby": "status-title", dataset: { panel: "statuses" } },
          panelHead("status-title", "Status codes", exportButtons("the status codes", () => statusQuery(s))),
          this.statusSlot),
        h("section", { class: "panel", "aria-labelledby": "version-title", dataset: { panel: "versions" } },
          panelHead("version-title", "Versions", exportButtons("the versions", () => versionQuery(s))),
          this.versionSlot),
      ),
      h("section", { class: "panel", "aria-labelledby": "events-title" },
        h("h3", { id: "events-title" }, `Events of ${s.service}`), this.eventsSlot),
    );
  }

  async refresh() {
    const s = this.state;
    const range = timeRange(s);
    const grain = chartGrain(range.spanMs);
    const charts = await api.query(chartQuery(s)); // first, alone (see overview.js)
    const eventsQuery = quiet(api.events(range.from, range.to, s.service));
    const alertMarks = quiet(chartAlerts(range.from, range.to, { service: s.service, method: s.method, path: s.path }));
    const newest = charts.meta.freshness.newest_fact_ms;
    const figureAnswer = quiet(api.query(figuresQuery(s)));
    const statusAnswer = quiet(api.query(statusQuery(s)));
    const versionAnswer = quiet(api.query(versionQuery(s)));
    const serviceList = quiet(this.app.setServices(api.services()));
    if (newest === null) {
      this.mountEmpty();
      await settle([figureAnswer, statusAnswer, versionAnswer, eventsQuery, serviceList, alertMarks]);
      return { newest, charts: false };
    }
    this.mountNormal();
    const drawn = this.charts.update(charts, null, grain.ms, newest, s.compare, rangeLabel(s));
    if (drawn) this.charts.whenDrawn().then(() => this.app.chartsDrawn(this));
    await settle([
      serviceList,
      figureAnswer.then((r) => replaceSlot(this.figuresSlot, figures(r, baseline(s).text))),
      statusAnswer.then((r) => replaceSlot(this.statusSlot, statusTable(r))),
      this.explain.refresh(),
      versionAnswer.then((r) => replaceSlot(this.versionSlot, versionTable(r))),
      settle([eventsQuery, alertMarks]).then(([{ events }, marks]) => {
        this.charts.setEvents([...events, ...marks]);
        replaceSlot(this.eventsSlot, eventsList(events));
      }),
    ]);
    return { newest, charts: drawn };
  }

  restyle() {
    if (this.charts) this.charts.restyle();
  }
}
