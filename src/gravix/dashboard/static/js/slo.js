// The SLO page (view=slo, and view=slo&service=<name>: one service's): per service, each objective of the tenant's SLO alert rules
// with its error budget left, the budget's burn-down over the period (uPlot), and where
// the budget went, by endpoint and by version. One request a refresh: GET /api/v1/slo
// (docs/slo.md), which counts everything server-side through the query layer.

import uPlot from "../../vendor/uplot/uPlot.esm.js";
import * as api from "./api.js";
import { h } from "./dom.js";
import * as fmt from "./format.js";
import { note, table } from "./panels.js";
import { href } from "./state.js";

const HEIGHT = 170;
const PERIODS = { "7d": "7 days", "28d": "28 days", "30d": "30 days" };

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#777";
}

/** The service an objective is of: its series' label, else its rule's one-service filter. */
function serviceOf(rule, labels) {
  if (labels.service) return labels.service;
  const only = rule.filters.find((f) => f.dimension === "service" && (f.op === "eq" || f.op === "in") && f.values.length === 1);
  return only ? String(only.values[0]) : "";
}

/** "99.5% of requests without a 5xx over 30 days". */
export function objectiveText(rule) {
  const target = `${+(rule.target * 100).toFixed(3)}%`;
  const what = rule.objective === "latency" ? `faster than ${fmt.ms(rule.latency_ms)}` : "answered without a 5xx";
  return `${target} of requests ${what}, over ${PERIODS[rule.period] || rule.period}`;
}

function leftClass(left) {
  if (left === null) return "";
  if (left < 0) return "slo-over";
  return left < 0.25 ? "slo-low" : "slo-ok";
}

/** One uPlot chart of the budget left (%) at the end of each hour of the period. */
class BurndownChart {
  constructor(title, points) {
    this.el = h("div", { class: "chart slo-chart", role: "img" });
    this.points = points;
    this.title = title;
    this.plot = null;
    const last = points.length ? points[points.length - 1][1] : null;
    this.el.setAttribute("aria-label", `${title}: ${last === null ? "no requests" : `${fmt.percent(last)} of the budget left now`}`);
    this.resizer = new ResizeObserver(() => this.draw());
    this.resizer.observe(this.el);
  }

  draw() {
    const width = this.el.clientWidth;
    if (!width) return;
    if (this.plot) {
      if (width !== this.width) this.plot.setSize({ width, height: HEIGHT });
      this.width = width;
      return;
    }
    this.width = width;
    const xs = this.points.map((p) => p[0] / 1000);
    const ys = this.points.map((p) => (p[1] === null ? null : p[1] * 100));
    const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid"), width: 1 }, ticks: { stroke: cssVar("--grid"), width: 1 }, font: "11px system-ui, sans-serif" };
    this.plot = new uPlot({
      width,
      height: HEIGHT,
      series: [
        { label: "End of hour", value: (u, v) => (v === null ? "–" : fmt.dateTime(v * 1000)) },
        { label: "budget left", stroke: cssVar("--c-1"), width: 1.75, value: (u, v) => (v === null ? "–" : `${v.toFixed(1)}%`) },
      ],
      scales: { y: { range: (u, min, max) => [Math.min(0, min ?? 0), Math.max(100, max ?? 100)] } },
      axes: [axis, { ...axis, size: 52, values: (u, ticks) => ticks.map((v) => `${+v.toFixed(1)}%`) }],
      cursor: { y: false },
    }, [xs, ys], this.el);
  }

  dispose() {
    this.resizer.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

export class SloView {
  constructor(app, state) {
    this.app = app;
    this.state = state;
    const heading = state.service ? `SLOs of ${state.service}` : "SLOs";
    this.title = `${heading} · Gravix`;
    this.charts = [];
    this.shown = "";
    this.slot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.el = h(
      "div",
      { class: "view view-slo" },
      h("h2", { class: "view-title", id: "view-title", tabindex: "-1" }, heading),
      h("p", { class: "panel-hint" },
        "The objectives are the SLO alert rules (Alerts, kind SLO), so this page and the burn-rate alerts agree. ",
        "The error budget is the bad requests an objective allows over its period; the chart shows how much of it was left at the end of each hour, counted from the period's start."),
      this.slot,
    );
  }

  async refresh() {
    const answer = await api.slo();
    const key = JSON.stringify(answer.slos);
    if (key !== this.shown) {
      this.shown = key;
      this.destroy();
      this.slot.replaceChildren(this.render(answer.slos));
      for (const chart of this.charts) chart.draw();
    }
    return { newest: undefined };
  }

  render(slos) {
    if (!slos.length) {
      return h(
        "div",
        { class: "panel empty-note", dataset: { panel: "slo-empty" } },
        h("p", {}, "No SLO yet. An SLO is an alert rule of kind SLO: an objective (availability or latency), a target and a period."),
        h("p", {}, h("a", { href: href({ ...this.state, view: "alerts", rule: "new" }), "data-internal": "" }, "New rule"), " (editors and admins), or a rule file: docs/alerts.md."),
      );
    }
    const cards = [];
    for (const slo of slos) {
      if (!slo.series.length) {
        cards.push(this.card(slo, { labels: {}, requests: 0, bad: 0, budget: 0, budget_left: null, burn_rate: null, burndown: [], spent_by: { endpoint: [], version: [] } }));
      }
      for (const series of slo.series) cards.push(this.card(slo, series));
    }
    // Per service, then the objectives of all services.
    cards.sort((a, b) => (a.dataset.service || "\uffff").localeCompare(b.dataset.service || "\uffff"));
    const services = [...new Set(cards.map((c) => c.dataset.service).filter(Boolean))];
    const chosen = this.state.service;
    const shown = chosen ? cards.filter((c) => !c.dataset.service || c.dataset.service === chosen) : cards;
    const own = chosen && !shown.some((c) => c.dataset.service === chosen);
    const list = h("div", { class: "slo-list" }, own ? note(`No SLO of service ${chosen} alone.`, "empty-note") : null, shown);
    if (!services.length && !chosen) return list;
    return h("div", {}, this.chooser(services, chosen), list);
  }

  /** Links to each service's page (its objectives, and those of every service), and to all. */
  chooser(services, chosen) {
    const link = (service, text) => {
      const attrs = { href: href({ ...this.state, view: "slo", service }), "data-internal": "" };
      if (service === chosen) attrs["aria-current"] = "page";
      return h("li", {}, h("a", attrs, text));
    };
    const names = chosen && !services.includes(chosen) ? [...services, chosen] : services;
    return h(
      "nav",
      { class: "slo-services", "aria-label": "SLOs of a service" },
      h("ul", {}, link("", "All services"), ...names.map((s) => link(s, s))),
    );
  }

  card(slo, series) {
    const { rule } = slo;
    const service = serviceOf(rule, series.labels);
    const others = Object.entries(series.labels).filter(([d]) => d !== "service").map(([d, v]) => `${d} ${v}`);
    const scope = service ? `Service ${service}` : "All services";
    const titleId = `slo-${rule.id}-${labelKey(series.labels)}`;
    const left = series.budget_left;
    const item = (label, value, cls = "") => h("div", { class: "figure" }, h("dt", {}, label), h("dd", {}, h("span", { class: `value ${cls}` }, value)));
    const chart = new BurndownChart(`Error budget left of ${rule.name}`, series.burndown);
    this.charts.push(chart);
    return h(
      "section",
      { class: "panel slo", "aria-labelledby": titleId, dataset: { slo: rule.name, service } },
      h("h3", { id: titleId }, scope, others.length ? ` · ${others.join(", ")}` : "", " · ", h("span", { class: "slo-name" }, rule.name)),
      h("p", { class: "panel-hint", dataset: { objective: "" } }, objectiveText(rule), rule.enabled ? "" : " (rule disabled: it alerts no one)"),
      h(
        "dl",
        { class: "figures" },
        item("Error budget left", left === null ? "no requests" : fmt.percent(left), leftClass(left)),
        item("Bad requests", `${fmt.exactCount(series.bad)} of ${fmt.exactCount(series.requests)}`),
        item("Budget", `${fmt.exactCount(Math.round(series.budget))} bad requests`),
        item("Burn rate", series.burn_rate === null ? "–" : `${series.burn_rate.toFixed(2)}x`),
      ),
      h("h4", {}, "Burn-down"),
      series.burndown.length ? chart.el : note("No requests in the period.", "empty-note"),
      h("div", { class: "columns" }, this.spent(series, "endpoint", service), this.spent(series, "version", service)),
    );
  }

  /** Where the budget went, by endpoint or by version: the five with most bad requests. */
  spent(series, by, service) {
    const rows = series.spent_by[by];
    const title = by === "endpoint" ? "Spent by endpoint" : "Spent by version";
    if (!rows.length) return h("div", { dataset: { spent: by } }, h("h4", {}, title), note("No bad requests.", "empty-note"));
    const name = (r) => {
      if (by === "version") return r.version === null ? h("span", { class: "muted" }, "(none)") : h("code", {}, r.version);
      const text = [h("span", { class: "method" }, r.method), " ", h("span", { class: "path" }, r.path)];
      if (!service) return text;
      const to = { ...this.state, view: "endpoint", service, method: r.method, path: r.path, rule: "" };
      return h("a", { href: href(to), "data-internal": "" }, text);
    };
    return h(
      "div",
      { dataset: { spent: by } },
      h("h4", {}, title),
      table(
        title,
        [[by === "endpoint" ? "Endpoint" : "Version", "name"], ["Bad", "num"], ["Of the bad", "share"]],
        rows.map((r) =>
          h(
            "tr",
            {},
            h("th", { scope: "row", class: "name" }, name(r)),
            h("td", { class: "num" }, fmt.exactCount(r.bad)),
            h("td", { class: "share" }, h("meter", { min: 0, max: 1, value: r.share, "aria-hidden": "true" }), " ", fmt.percent(r.share)),
          ),
        ),
      ),
    );
  }

  restyle() {
    this.shown = "";
    this.app.reload();
  }

  destroy() {
    for (const chart of this.charts) chart.dispose();
    this.charts = [];
  }
}

/** An id-safe key of a series' labels. */
function labelKey(labels) {
  return Object.values(labels).map((v) => String(v).replace(/[^A-Za-z0-9_-]/g, "_")).join("-") || "all";
}
