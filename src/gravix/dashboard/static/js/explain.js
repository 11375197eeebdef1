// The "What changed" panel of the overview and the endpoint view: POST /api/v1/explain
// (docs/explain.md) for the view's scope (service, endpoint) over its range, or over the
// bucket clicked on a chart (charts.js sends "gravix:select"): see a spike, click it, read
// why. The baseline and the measure are chosen here; a click on the latency chart asks
// about latency. Every value from the answer (a route, a version) goes in as text.

import * as api from "./api.js";
import { h } from "./dom.js";
import * as fmt from "./format.js";
import { href } from "./state.js";

export const BASELINES = { "1d": "Day before", "7d": "Week before", previous: "Just before" };
// "Before the deploy": offered once an answer shows the API knows it (its `deploy` field).
const DEPLOY_BASELINE = { deploy: "Before the deploy" };
export const MEASURES = { errors: "Errors (5xx)", client_errors: "Client errors (4xx)", latency: "Slow requests" };
// The measure a click on each chart asks about.
const CHART_MEASURE = { "error-rate": "errors", latency: "latency", throughput: "errors" };
const DEPLOY_SPAN_MS = 30 * 60_000; // the deploy's view: half an hour either side of it
// How a finding's dimensions are said; any other is said as the API names it.
const NAMES = { service: "service", route: "route", env: "env", version: "version", status: "status" };

function options(select, choices, value) {
  select.replaceChildren(...Object.entries(choices).map(([v, label]) => h("option", { value: v }, label)));
  select.value = value;
}

/** The endpoint of a route element ("POST /pay"): {method, path}. */
function splitRoute(route) {
  const i = route.indexOf(" ");
  return i < 0 ? null : { method: route.slice(0, i), path: route.slice(i + 1) };
}

/** How an API error reads in the panel. */
function errorText(error) {
  if (error.kind === "network") return `The explanation could not be asked for: ${error.message}.`;
  if (error.kind === "http") {
    const field = error.field ? ` (field ${error.field})` : "";
    const id = error.requestId ? ` Request id ${error.requestId}.` : "";
    return `The Gravix API answered ${error.status}${error.code ? ` ${error.code}` : ""}: ${error.message}${field}.${id}`;
  }
  return `The explanation failed: ${error.message}.`;
}

export class ExplainPanel {
  /** app: the page (app.go); state: the view's state; range: its timeRange(). */
  constructor(app, state, range, filters) {
    this.app = app;
    this.state = state;
    this.range = range;
    this.filters = filters;
    this.baseline = "1d";
    this.measure = "errors";
    this.selection = null; // {chart, fromMs, toMs} of the bucket clicked, or null
    this.answered = ""; // the question of the answer shown (a fixed window is not asked again)
    this.deployOffered = false;
    this.shown = ""; // the answer on show, to leave the panel alone when a refresh brings the same
    this.deployAt = null; // baseline "deploy": the deploy the answer suspected (else the latest)
    this.generation = 0;
    this.baselineSelect = h("select", {
      id: "explain-baseline",
      onchange: (e) => this.choose({ baseline: e.target.value, deployAt: null }),
    });
    this.measureSelect = h("select", { id: "explain-measure", onchange: (e) => this.choose({ measure: e.target.value }) });
    options(this.baselineSelect, BASELINES, this.baseline);
    options(this.measureSelect, MEASURES, this.measure);
    this.windowLine = h("p", { class: "panel-hint explain-window", dataset: { explainWindow: "" } });
    this.slot = h("div", { class: "slot", "aria-live": "polite" }, h("p", { class: "loading" }, "Loading…"));
    this.el = h(
      "section",
      { class: "panel explain", "aria-labelledby": "explain-title", dataset: { panel: "explain" } },
      h(
        "div",
        { class: "panel-head" },
        h("h3", { id: "explain-title" }, "What changed"),
        h(
          "div",
          { class: "explain-controls" },
          h("label", { for: "explain-measure" }, "Measure"), this.measureSelect,
          h("label", { for: "explain-baseline" }, "Against"), this.baselineSelect,
        ),
      ),
      this.windowLine,
      this.slot,
    );
    this.showWindow();
  }

  /** The question of the current choices. */
  question() {
    const q = { baseline: this.baseline, measure: this.measure, filters: this.filters, limit: 5 };
    if (this.baseline === "deploy" && this.deployAt !== null) q.deploy_at = this.deployAt;
    if (this.selection) return { ...q, from: this.selection.fromMs, to: this.selection.toMs };
    return { ...q, from: this.range.from, to: this.range.to };
  }

  showWindow() {
    const parts = [];
    if (this.selection) {
      const { fromMs, toMs } = this.selection;
      parts.push(`The bucket you clicked: ${fmt.dateTime(fromMs)} to ${fmt.clock(toMs)}. `);
      parts.push(h("button", { type: "button", class: "link-button", onclick: () => this.select(null) }, "Explain the whole range"));
    } else {
      parts.push("The whole range of the view; click a spike on a chart to explain its bucket.");
    }
    this.windowLine.replaceChildren(...parts);
    this.windowLine.dataset.explainWindow = this.selection ? `${this.selection.fromMs}-${this.selection.toMs}` : "range";
  }

  /** A chart bucket selected (detail of "gravix:select": {chart, time, grainMs}), or null: let go. */
  select(detail) {
    if (detail && detail.time !== null) {
      this.selection = { chart: detail.chart, fromMs: detail.time, toMs: detail.time + detail.grainMs };
      const measure = CHART_MEASURE[detail.chart];
      if (measure) {
        this.measure = measure;
        this.measureSelect.value = measure;
      }
    } else if (!detail || !this.selection || this.selection.chart === detail.chart) {
      this.selection = null;
    } else {
      return; // another chart let go of its bucket: this one's stays
    }
    this.showWindow();
    this.ask(true).catch(() => {}); // the panel says what failed
  }

  choose(change) {
    Object.assign(this, change);
    this.baselineSelect.value = this.baseline;
    this.ask(true).catch(() => {});
  }

  /** Ask again (the view refreshes); a fixed window already answered is not asked again. */
  refresh() {
    return this.ask(false);
  }

  async ask(changed) {
    const question = this.question();
    const key = JSON.stringify(question);
    const fixed = this.selection || this.range.fixed;
    if (!changed && fixed && key === this.answered) return;
    const generation = ++this.generation;
    if (changed) this.slot.replaceChildren(h("p", { class: "loading" }, "Loading…"));
    let answer;
    try {
      answer = await api.explain(question);
    } catch (error) {
      if (generation !== this.generation) return;
      if (error.kind === "auth") throw error; // the page signs in again
      this.answered = "";
      const text = errorText(error).replace(/ Request id .*$/, "");
      if (!changed && this.shown === `error: ${text}`) return; // the same refusal again
      this.shown = `error: ${text}`;
      this.slot.replaceChildren(h("p", { class: "form-error explain-error", role: "alert" }, errorText(error)));
      return;
    }
    if (generation !== this.generation) return;
    this.answered = key;
    // Only when it changed: the slot is a live region, said again each time it is replaced.
    const shown = JSON.stringify({ ...answer, freshness: null, question });
    if (!changed && shown === this.shown) return;
    this.shown = shown;
    this.slot.replaceChildren(this.render(answer));
  }

  render(answer) {
    if ("deploy" in answer && !this.deployOffered) {
      this.deployOffered = true;
      options(this.baselineSelect, { ...BASELINES, ...DEPLOY_BASELINE }, this.baseline);
    }
    const noun = answer.measure === "latency" ? "slow requests" : answer.measure === "client_errors" ? "4xx" : "5xx";
    const parts = [h("p", { class: "explain-summary", dataset: { summary: "" } }, answer.summary)];
    if (answer.deploy) parts.push(this.deployNote(answer.deploy));
    if (answer.findings.length) {
      parts.push(h("ol", { class: "findings" }, answer.findings.map((f) => this.finding(f, noun))));
    }
    const slow = answer.slow_ms === null || answer.slow_ms === undefined ? "" : `; slow: over ${fmt.ms(answer.slow_ms)}, the baseline's p95`;
    parts.push(
      h(
        "p",
        { class: "panel-hint explain-baseline" },
        `Against ${answer.baseline.description}: ${fmt.exactCount(answer.actual)} ${noun} in ${fmt.exactCount(answer.requests.window)} requests, `,
        `${fmt.count(Math.round(answer.expected))} expected at this traffic (${fmt.exactCount(answer.requests.baseline)} requests then)${slow}.`,
      ),
    );
    return h("div", { class: "explain-answer" }, parts);
  }

  /** A suspected faulty deploy: what it was, and its marker (the service's view around it). */
  deployNote(deploy) {
    const around = {
      ...this.state, view: "overview", service: deploy.service, method: "", path: "",
      from: deploy.timestamp - DEPLOY_SPAN_MS, to: deploy.timestamp + DEPLOY_SPAN_MS, range: "",
    };
    return h(
      "p",
      { class: "explain-deploy", dataset: { deploy: "" } },
      h("strong", {}, "Suspected faulty deploy: "),
      `${deploy.service} ${deploy.version || ""} at ${fmt.dateTime(deploy.timestamp)}`,
      deploy.message ? ` (${deploy.message})` : "",
      ". ",
      h("a", { href: href(around), "data-internal": "" }, "Show its deploy marker"),
      this.deployOffered && !(this.baseline === "deploy" && this.deployAt === deploy.timestamp)
        ? [" · ", h("button", {
          type: "button",
          class: "link-button",
          onclick: () => this.choose({ baseline: "deploy", deployAt: deploy.timestamp }),
        }, "Compare with the time before it")]
        : null,
    );
  }

  /** Where a finding's element leads: its service's overview or its endpoint's view; null: nowhere. */
  target(element) {
    const service = element.service || this.state.service;
    const route = element.route ? splitRoute(element.route) : null;
    const keep = { ...this.state, method: "", path: "" };
    if (route && service) return { ...keep, view: "endpoint", service, ...route };
    if (element.service && element.service !== this.state.service) return { ...keep, view: "overview", service };
    return null;
  }

  finding(f, noun) {
    const names = Object.entries(f.element).map(([dim, value], i) => [
      i ? " · " : "",
      h("span", { class: "muted" }, `${NAMES[dim] || dim} `),
      h("code", {}, value === null ? "(none)" : String(value)),
    ]);
    const to = this.target(f.element);
    const element = to
      ? h("a", { href: href(to), "data-internal": "", class: "finding-element" }, names)
      : h("span", { class: "finding-element" }, names);
    const share = Math.max(0, Math.min(1, f.share));
    const before = f.baseline.rate === null ? "no requests" : fmt.percent(f.baseline.rate);
    const extra = f.extra >= 0 ? `+${fmt.count(Math.round(f.extra))}` : `−${fmt.count(Math.round(-f.extra))}`;
    return h(
      "li",
      { class: "finding", dataset: { finding: "" } },
      h("div", { class: "finding-head" }, element, f.new ? h("span", { class: "finding-new" }, "new in the window") : null),
      h(
        "div",
        { class: "finding-figures" },
        h(
          "span",
          { class: "share", title: `${fmt.percent(f.share)} of the change` },
          h("meter", { min: 0, max: 1, value: share, "aria-hidden": "true" }),
          ` ${fmt.percent(f.share)} of the change`,
        ),
        h("span", {}, `rate ${before} → ${fmt.percent(f.window.rate)}`),
        h("span", {}, `${extra} ${noun} (${fmt.exactCount(f.window.value)} of ${fmt.exactCount(f.window.requests)} requests)`),
      ),
      h("p", { class: "finding-text" }, f.text),
    );
  }
}
