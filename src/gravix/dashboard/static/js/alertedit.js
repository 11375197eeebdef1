// The rule editor (view=alerts&rule=new, or rule=<id>): a threshold, SLO or "went
// silent" rule as a form, with a backtest before it is saved (POST
// /api/v1/alerts/backtest: the metric over the last days, the threshold line, the times
// it would have fired shaded, and their list). Save is POST or PUT with the session's
// CSRF token (api.js); an error the API names a field of shows next to that field.
// The metrics and dimensions offered are the query model's (the API's OpenAPI document).
// Viewers get no form; a rule from the rule file is shown, backtested, not changed.
// The form is built once: the page does not refresh it while someone types.

import uPlot from "../../vendor/uplot/uPlot.esm.js";
import * as api from "./api.js";
import { canEdit, clearErrors, errorWords, fieldError, metricValue, ruleWords, seriesText, STATE_WORDS, unitOf } from "./alerts.js";
import { h } from "./dom.js";
import * as fmt from "./format.js";
import { href } from "./state.js";

const OPS = [">", ">=", "<", "<="];
const POLICIES = { ok: "counts as normal", alert: "alerts", keep: "keeps the last state" };
const SEVERITIES = ["page", "ticket", "info"];
const PERIODS = ["7d", "28d", "30d"];
const DAYS = [1, 3, 7, 14, 30];
const LINES = 5; // series drawn in the backtest chart; the list has them all
const HEIGHT = 220;
// When the API's document cannot be read: the query model's names as of this writing.
const FALLBACK_MODEL = {
  metrics: ["error_rate", "client_error_rate", "p50", "p95", "p99", "avg_latency", "max_latency", "throughput", "requests", "errors", "client_errors", "latency_count"],
  dimensions: ["service", "method", "path", "env", "version", "status"],
};
const UNIT_HINTS = {
  ratio: "A share from 0 to 1: 0.05 is 5%.",
  ms: "Milliseconds.",
  rate: "Requests per second.",
  count: "Requests in the window.",
  number: "",
};

let model = null;

/** The metrics and dimensions a rule may name: the query model's, from GET /api/v1/openapi.json. */
function queryModel() {
  if (!model) {
    model = api.openapi().then((doc) => {
      const q = doc.components.schemas.Query.properties;
      return { metrics: q.metrics.items.enum, dimensions: q.dimensions.items.enum };
    }).catch((e) => {
      model = null;
      if (e.kind === "auth") throw e;
      return FALLBACK_MODEL;
    });
  }
  return model;
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#777";
}

/**
 * A labelled control with its hint (text, or a node whose text changes) and its error
 * slot (`data-error`, for fieldError).
 */
function field(name, label, control, hint = "") {
  const errorId = `rule-${name}-error`;
  const hintId = `rule-${name}-hint`;
  control.id = `rule-${name}`;
  control.setAttribute("aria-describedby", hint ? `${hintId} ${errorId}` : errorId);
  const hintEl = hint instanceof Node ? hint : hint ? h("p", { class: "field-hint" }, hint) : null;
  if (hintEl) hintEl.id = hintId;
  return h("div", { class: "field", dataset: { field: name } },
    h("label", { for: control.id }, label),
    control,
    hintEl,
    h("p", { class: "field-error", id: errorId, dataset: { error: name } }));
}

/** Checkboxes under a legend, one per choice, with the group's error slot. */
function checkGroup(name, legend, choices, checked, hint = "") {
  const errorId = `rule-${name}-error`;
  const boxes = choices.map((value) => h("label", { class: "check" },
    h("input", { type: "checkbox", value, name, checked: checked.includes(value) ? true : null }), ` ${value}`));
  return h("fieldset", { class: "field checks", id: `rule-${name}`, "aria-describedby": errorId, dataset: { field: name } },
    h("legend", {}, legend),
    boxes.length ? boxes : null,
    hint ? h("p", { class: "field-hint" }, hint) : null,
    h("p", { class: "field-error", id: errorId, dataset: { error: name } }));
}

function select(values, current, labels = {}) {
  return h("select", {}, values.map((v) => h("option", { value: v, selected: v === current ? true : null }, labels[v] || v)));
}

function input(value, props = {}) {
  const el = h("input", { type: "text", ...props });
  el.value = value === null || value === undefined ? "" : String(value);
  return el;
}

function numberOrNull(text) {
  const t = text.trim();
  if (!t) return null;
  const n = Number(t);
  return Number.isFinite(n) ? n : t; // not a number: the API names the field
}

function split(text) {
  return text.split(",").map((v) => v.trim()).filter((v) => v);
}

/** The filters the form shows (service and path, "in"); the rest are kept as they are. */
function splitFilters(filters) {
  const shown = { service: "", path: "" };
  const kept = [];
  for (const f of filters || []) {
    const op = f.op || "in";
    if (f.dimension in shown && !shown[f.dimension] && (op === "in" || op === "eq")) {
      shown[f.dimension] = f.values.map(String).join(", ");
    } else kept.push(f);
  }
  return { shown, kept };
}

const NEW_RULE = {
  kind: "threshold", name: "", description: "", severity: "page", enabled: true, filters: [], group_by: [], channels: [],
  metric: "error_rate", op: ">", threshold: 0.05, window: "5m", for: "1m", keep_firing_for: "0s",
  recover_threshold: null, min_requests: null, no_data: "ok", on_error: "keep",
  objective: "availability", target: 0.999, latency_ms: null, period: "30d", after: "10m",
};

export class RuleEditorView {
  constructor(app, state) {
    this.app = app;
    this.state = state;
    this.refreshes = false; // a form: not rebuilt under someone's typing
    this.isNew = state.rule === "new";
    this.title = this.isNew ? "New alert rule · Gravix" : "Alert rule · Gravix";
    this.loaded = false;
    this.chart = null;
    this.heading = h("h2", { class: "view-title", id: "view-title", tabindex: "-1" }, this.isNew ? "New alert rule" : "Alert rule");
    this.slot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.el = h("div", { class: "view view-rule" },
      h("p", { class: "crumbs" }, h("a", { class: "back", href: href({ ...state, rule: "" }), "data-internal": "" }, "← Alerts")),
      this.heading,
      this.slot);
  }

  async refresh() {
    if (this.loaded) return { newest: undefined };
    const editor = canEdit(this.app.me);
    const [found, channels, names] = await Promise.all([
      this.isNew ? null : api.alertRule(this.state.rule),
      editor ? api.alertChannels() : null,
      editor ? queryModel() : null,
    ]);
    this.loaded = true;
    if (found) {
      this.heading.textContent = `Alert rule ${found.name}`;
      document.title = `${found.name} · Gravix`;
    }
    if (!editor) {
      this.slot.replaceChildren(this.readOnly(found));
      return { newest: undefined };
    }
    this.slot.replaceChildren(this.form(found, channels.channels.map((c) => c.name), names));
    return { newest: undefined };
  }

  /** For viewers: the rule in words and its series now; no controls. */
  readOnly(found) {
    const note = h("p", { class: "panel-hint" }, "Only editors and admins change alert rules.");
    if (!found) return h("section", { class: "panel" }, note);
    return h("section", { class: "panel" }, note,
      h("p", { class: "condition" }, ruleWords(found)),
      statesLine(found.states || []));
  }

  form(found, channelNames, names) {
    const rule = { ...NEW_RULE, ...(found || {}) };
    const fromFile = Boolean(found) && found.source === "file";
    const { shown, kept } = splitFilters(rule.filters);
    this.kept = kept;
    const c = {}; // the controls, by the rule's field names
    c.kind = select(["threshold", "slo", "silent"], rule.kind, { threshold: "threshold", slo: "SLO (burn rates)", silent: "went silent" });
    c.name = input(rule.name, { maxlength: "200", required: true, autocomplete: "off" });
    c.description = h("textarea", { rows: "2", maxlength: "2000" });
    c.description.value = rule.description || "";
    c.severity = select(SEVERITIES, rule.severity);
    const metrics = names.metrics.includes(rule.metric) ? names.metrics : [rule.metric, ...names.metrics];
    c.metric = select(metrics, rule.metric);
    c.op = select(OPS, rule.op);
    c.threshold = input(rule.threshold, { inputmode: "decimal" });
    c.window = input(rule.window, { size: "6" });
    c.for = input(rule.for, { size: "6" });
    c.keep_firing_for = input(rule.keep_firing_for, { size: "6" });
    c.recover_threshold = input(rule.recover_threshold, { inputmode: "decimal" });
    c.min_requests = input(rule.min_requests, { inputmode: "numeric", placeholder: "server default" });
    c.no_data = select(Object.keys(POLICIES), rule.no_data, POLICIES);
    c.on_error = select(Object.keys(POLICIES), rule.on_error, POLICIES);
    c.objective = select(["availability", "latency"], rule.objective, { availability: "availability (no 5xx)", latency: "latency (under latency_ms)" });
    c.target = input(rule.target, { inputmode: "decimal" });
    c.latency_ms = input(rule.latency_ms, { inputmode: "decimal" });
    c.period = select(PERIODS, rule.period);
    c.after = input(rule.after, { size: "6" });
    c.service = input(shown.service, { autocomplete: "off" });
    c.path = input(shown.path, { autocomplete: "off" });
    c.enabled = h("input", { type: "checkbox", checked: rule.enabled !== false ? true : null });
    this.controls = c;
    // What the threshold's number means follows the metric (a ratio, milliseconds...).
    const thresholdHint = h("p", { class: "field-hint", "aria-live": "polite" });
    const setHint = () => {
      thresholdHint.textContent = UNIT_HINTS[unitOf(c.metric.value)];
    };
    setHint();
    c.metric.addEventListener("change", setHint);
    const kinds = {
      threshold: h("div", { class: "kind-fields", dataset: { kind: "threshold" } },
        field("metric", "Metric", c.metric),
        field("op", "Fires when the metric is", c.op),
        field("threshold", "Threshold", c.threshold, thresholdHint),
        field("window", "Over the last", c.window, "A duration: 5m, 1h (1m to 1d)."),
        field("for", "For", c.for, "Breaching this long before it fires (pending until then); 0s: at once."),
        field("keep_firing_for", "Keep firing for", c.keep_firing_for, "Good this long before it resolves; 0s: at once."),
        field("recover_threshold", "Recovers past", c.recover_threshold, "Optional: a second threshold on the good side, so a value near the first one does not flap."),
        field("min_requests", "At least", c.min_requests, "Requests a series needs in the window before a ratio or latency fires; empty: the server's default."),
        field("no_data", "With no data, the rule", c.no_data),
        field("on_error", "When its query fails, the rule", c.on_error)),
      slo: h("div", { class: "kind-fields", dataset: { kind: "slo" } },
        field("objective", "Objective", c.objective),
        field("target", "Target", c.target, "The share of good requests: 0.999 is 99.9%."),
        field("latency_ms", "Latency (ms)", c.latency_ms, "Latency objectives: a good request is faster than this."),
        field("period", "Over", c.period)),
      silent: h("div", { class: "kind-fields", dataset: { kind: "silent" } },
        field("after", "No facts for", c.after, "A duration: 10m (1m to 7d).")),
    };
    const showKind = () => {
      for (const [kind, el] of Object.entries(kinds)) el.hidden = kind !== c.kind.value;
      c.latency_ms.closest(".field").hidden = c.objective.value !== "latency";
    };
    c.kind.addEventListener("change", showKind);
    c.objective.addEventListener("change", showKind);
    showKind();
    for (const el of [c.service, c.path]) el.setAttribute("aria-describedby", "rule-filters-hint rule-filters-error");
    const filters = h("fieldset", { class: "field filters", dataset: { field: "filters" } },
      h("legend", {}, "Only requests of"),
      h("div", { class: "field" }, h("label", { for: "rule-service" }, "Service"), c.service),
      h("div", { class: "field" }, h("label", { for: "rule-path" }, "Path"), c.path),
      h("p", { class: "field-hint", id: "rule-filters-hint" }, "Empty: every one. Several: separate them with commas."),
      kept.length ? h("p", { class: "field-hint" }, `Also, kept as they are: ${kept.map((f) => `${f.dimension} ${f.op || "in"} ${f.values.join(", ")}`).join("; ")}.`) : null,
      h("p", { class: "field-error", id: "rule-filters-error", dataset: { error: "filters" } }));
    c.service.id = "rule-service";
    c.path.id = "rule-path";
    this.groupBy = checkGroup("group_by", "One alert per", names.dimensions, rule.group_by || [], "None: one alert for all the requests the rule watches.");
    const channelChoices = [...new Set([...channelNames, ...(rule.channels || [])])];
    this.channels = checkGroup("channels", "Notify", channelChoices, rule.channels || [],
      channelChoices.length ? "" : "No channels yet: add one with gravix alerts or PUT /api/v1/alerts/channels/{name} (docs/alerts.md). Alerts still show here.");
    this.fields = h("fieldset", { class: "rule-fields", disabled: fromFile ? true : null },
      h("legend", { class: "visually-hidden" }, "The rule"),
      h("div", { class: "form-grid" },
        field("kind", "Kind", c.kind, "Threshold: a metric against a value. SLO: an objective over a period. Went silent: no facts for a while."),
        field("name", "Name", c.name),
        field("severity", "Severity", c.severity),
        field("description", "Description", c.description)),
      h("div", { class: "form-grid" }, kinds.threshold, kinds.slo, kinds.silent),
      h("div", { class: "form-grid" }, filters, this.groupBy, this.channels),
      h("div", { class: "field" }, h("label", { class: "check" }, c.enabled, " Enabled (evaluated and notified)"),
        h("p", { class: "field-error", dataset: { error: "enabled" } })));
    this.days = select(DAYS.map(String), "7", Object.fromEntries(DAYS.map((d) => [String(d), d === 1 ? "1 day" : `${d} days`])));
    this.days.id = "backtest-days";
    this.days.setAttribute("aria-describedby", "rule-days-error");
    this.backtestResult = h("div", { class: "backtest-result", "aria-live": "polite" });
    const backtestButton = h("button", { type: "button", class: "secondary", id: "backtest" }, "Backtest");
    backtestButton.addEventListener("click", () => this.backtest(backtestButton));
    this.backtestPanel = h("section", { class: "backtest", "aria-labelledby": "backtest-title", dataset: { state: "idle" } },
      h("h3", { id: "backtest-title" }, "Backtest"),
      h("p", { class: "panel-hint" }, "When this rule would have fired over the stored history, before you save it."),
      h("div", { class: "backtest-controls" },
        h("label", { for: "backtest-days" }, "Run over the last"), this.days, backtestButton,
        h("p", { class: "field-error", id: "rule-days-error", dataset: { error: "days" } })),
      this.backtestResult);
    const actions = fromFile ? [] : [
      h("button", { type: "submit", class: "primary", id: "save-rule" }, this.isNew ? "Create rule" : "Save rule"),
      h("a", { href: href({ ...this.state, rule: "" }), "data-internal": "" }, "Cancel"),
    ];
    this.confirmSlot = h("div", { class: "action-slot" });
    if (found && !fromFile) {
      actions.push(h("button", { type: "button", class: "small-button danger", id: "delete-rule", onclick: () => this.confirmDelete(found) }, "Delete rule"));
    }
    this.formEl = h("form", { class: "rule-form panel", novalidate: true, "aria-labelledby": "view-title" },
      fromFile ? h("p", { class: "file-note" }, "This rule comes from the rule file (alert_rules_dir): change it there. You can backtest it here.") : null,
      found ? statesLine(found.states || []) : null,
      this.fields,
      this.backtestPanel,
      h("div", { class: "form-actions" }, actions),
      this.confirmSlot,
      h("p", { class: "form-error", role: "alert" }));
    this.formEl.addEventListener("submit", (e) => {
      e.preventDefault();
      this.save(found);
    });
    return this.formEl;
  }

  /** The rule the form describes, as the API takes it. */
  rule() {
    const c = this.controls;
    const filters = [...this.kept];
    for (const dim of ["service", "path"]) {
      const values = split(c[dim].value);
      if (values.length) filters.push({ dimension: dim, values, op: "in" });
    }
    const checked = (group) => [...group.querySelectorAll("input:checked")].map((b) => b.value);
    const common = {
      kind: c.kind.value, name: c.name.value.trim(), description: c.description.value, severity: c.severity.value,
      enabled: c.enabled.checked, filters, group_by: checked(this.groupBy), channels: checked(this.channels),
    };
    if (common.kind === "threshold") {
      return {
        ...common, metric: c.metric.value, op: c.op.value, threshold: numberOrNull(c.threshold.value),
        window: c.window.value.trim(), for: c.for.value.trim(), keep_firing_for: c.keep_firing_for.value.trim(),
        recover_threshold: numberOrNull(c.recover_threshold.value), min_requests: numberOrNull(c.min_requests.value),
        no_data: c.no_data.value, on_error: c.on_error.value,
      };
    }
    if (common.kind === "slo") {
      return {
        ...common, objective: c.objective.value, target: numberOrNull(c.target.value),
        latency_ms: c.objective.value === "latency" ? numberOrNull(c.latency_ms.value) : null, period: c.period.value,
      };
    }
    return { ...common, after: c.after.value.trim() };
  }

  async save(found) {
    const button = this.formEl.querySelector("#save-rule");
    if (!button) return; // a rule file's rule: nothing to save
    clearErrors(this.formEl);
    button.disabled = true;
    let saved;
    try {
      saved = await api.saveRule(this.rule(), found ? found.id : null);
    } catch (e) {
      button.disabled = false;
      if (e.kind === "auth") location.replace(api.loginUrl());
      else fieldError(this.formEl, e);
      return;
    }
    this.app.flash = `Rule “${saved.name}” ${found ? "saved" : "created"}.`;
    this.app.go({ ...this.state, rule: "" });
  }

  confirmDelete(found) {
    const yes = h("button", { type: "button", class: "primary danger" }, "Delete rule");
    const error = h("p", { class: "form-error", role: "alert" });
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      try {
        await api.deleteRule(found.id);
      } catch (e) {
        if (e.kind === "auth") location.replace(api.loginUrl());
        yes.disabled = false;
        error.textContent = errorWords(e);
        return;
      }
      this.app.flash = `Rule “${found.name}” deleted.`;
      this.app.go({ ...this.state, rule: "" });
    });
    this.confirmSlot.replaceChildren(h("div", { class: "action-form confirm", role: "group", "aria-label": "Confirm the deletion" },
      h("p", { class: "action-title" }, "Delete the rule ", h("strong", {}, found.name), "? Its series stop being evaluated; its history stays."),
      h("div", { class: "form-actions" }, yes, h("button", { type: "button", class: "link-button", onclick: () => this.confirmSlot.replaceChildren() }, "Cancel")),
      error));
    yes.focus();
  }

  async backtest(button) {
    const rule = this.rule();
    const days = Number(this.days.value);
    clearErrors(this.formEl);
    button.disabled = true;
    this.backtestPanel.dataset.state = "running";
    this.backtestResult.replaceChildren(h("p", { class: "loading" }, `Running the rule over the last ${days === 1 ? "day" : `${days} days`}…`));
    let result;
    try {
      result = await api.backtest(rule, days);
    } catch (e) {
      button.disabled = false;
      this.backtestPanel.dataset.state = "failed";
      this.backtestResult.replaceChildren();
      if (e.kind === "auth") location.replace(api.loginUrl());
      else fieldError(this.formEl, e);
      return;
    }
    button.disabled = false;
    this.showBacktest(rule, days, result);
    this.backtestPanel.dataset.state = "done";
  }

  showBacktest(rule, days, result) {
    const metric = rule.kind === "threshold" ? rule.metric : null;
    const firing = [...result.firing].sort((a, b) => b.start - a.start);
    const seriesCount = new Set(firing.map((f) => seriesText(f.series))).size;
    const span = days === 1 ? "day" : `${days} days`;
    const summary = firing.length
      ? `Over the last ${span} this rule would have fired ${firing.length} ${firing.length === 1 ? "time" : "times"}`
        + `${seriesCount > 1 ? ` on ${seriesCount} series` : ""} and sent ${fmt.exactCount(result.notifications)} ${result.notifications === 1 ? "notification" : "notifications"}.`
      : `Over the last ${span} this rule would not have fired.`;
    if (this.chart) this.chart.destroy();
    this.chart = new BacktestChart(result, metric);
    const list = firing.length
      ? h("div", { class: "table-wrap" }, h("table", { class: "data backtest-list" },
        h("caption", { class: "visually-hidden" }, "When the rule would have fired"),
        h("thead", {}, h("tr", {}, ["Series", "From", "To", "For"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, firing.map((f) => h("tr", {},
          h("th", { scope: "row", class: "name" }, seriesText(f.series) || "all matching requests"),
          h("td", {}, fmt.dateTime(f.start)),
          h("td", {}, f.end === null ? "still firing at the end" : fmt.dateTime(f.end)),
          h("td", {}, fmt.ago(((f.end === null ? result.to : f.end) - f.start) / 1000)))))))
      : null;
    this.backtestResult.replaceChildren(
      h("p", { class: "backtest-summary" }, summary),
      result.note ? h("p", { class: "field-hint" }, result.note) : null,
      this.chart.el,
      list);
    this.chart.draw();
  }

  restyle() {
    if (this.chart) this.chart.draw();
  }

  destroy() {
    if (this.chart) this.chart.destroy();
    this.chart = null;
  }
}

function statesLine(states) {
  const counts = {};
  for (const s of states) counts[s.state] = (counts[s.state] || 0) + 1;
  const parts = Object.entries(counts).map(([state, n]) => h("span", { class: `state state-${state}` }, `${n} ${STATE_WORDS[state] || state}`));
  return h("p", { class: "states-line" }, "Its series now: ", parts.length ? parts : "none evaluated yet", ".");
}

/**
 * The backtest's chart (uPlot): the metric of the series that fired longest (at most
 * LINES), the threshold as a dashed line, and the times it would have fired shaded.
 */
class BacktestChart {
  constructor(result, metric) {
    this.result = result;
    this.metric = metric;
    this.plot = null;
    this.el = h("div", { class: "chart-panel backtest-chart" });
    this.plotEl = h("div", { class: "chart", role: "img" });
    this.legendEl = h("div", { class: "chart-legend" });
    this.noteEl = h("p", { class: "chart-note" });
    this.el.append(this.plotEl, this.legendEl, this.noteEl);
    this.resizer = new ResizeObserver(() => {
      if (this.plot && this.plotEl.clientWidth && this.plotEl.clientWidth !== this.width) {
        this.width = this.plotEl.clientWidth;
        this.plot.setSize({ width: this.width, height: HEIGHT });
      }
    });
    this.resizer.observe(this.plotEl);
  }

  /** [{label, values}] of the series drawn, and the x values (s). */
  columns() {
    const { from, to, step_ms: step } = this.result;
    const n = Math.max(1, Math.ceil((to - from) / step));
    const xs = Array.from({ length: n }, (_, i) => (from + i * step) / 1000);
    const firingMs = new Map();
    for (const f of this.result.firing) {
      const key = seriesText(f.series);
      firingMs.set(key, (firingMs.get(key) || 0) + ((f.end === null ? to : f.end) - f.start));
    }
    const lines = this.result.series.map((s) => {
      const values = new Array(n).fill(null);
      for (const [t, v] of s.points) {
        const i = Math.round((t - from) / step);
        if (i >= 0 && i < n) values[i] = v;
      }
      const key = seriesText(s.series);
      const peak = Math.max(-Infinity, ...values.filter((v) => v !== null));
      return { label: key || "all matching requests", values, firing: firingMs.get(key) || 0, peak };
    });
    lines.sort((a, b) => b.firing - a.firing || b.peak - a.peak);
    return { xs, lines, hidden: Math.max(0, lines.length - LINES), drawn: lines.slice(0, LINES) };
  }

  draw() {
    if (this.plot) this.plot.destroy();
    const { xs, drawn, hidden } = this.columns();
    const threshold = this.result.threshold;
    const value = (v) => metricValue(this.metric, v);
    const colours = ["--s-1", "--s-2", "--s-3", "--s-4", "--s-5"];
    const series = [{ label: "Time", value: (u, v) => (v === null ? "–" : fmt.dateTime(v * 1000)) }];
    const data = [xs];
    drawn.forEach((line, i) => {
      series.push({ label: line.label, stroke: cssVar(colours[i]), width: 1.5, value: (u, v) => value(v) });
      data.push(line.values);
    });
    if (threshold !== null && threshold !== undefined) {
      series.push({ label: "threshold", stroke: cssVar("--c-err"), width: 1.25, dash: [6, 4], value: () => value(threshold), points: { show: false } });
      data.push(xs.map(() => threshold));
    }
    const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid"), width: 1 }, ticks: { stroke: cssVar("--grid"), width: 1 }, font: "11px system-ui, sans-serif" };
    const firing = this.result.firing;
    const to = this.result.to;
    this.width = Math.max(200, this.plotEl.clientWidth || 300);
    this.plot = new uPlot({
      width: this.width,
      height: HEIGHT,
      series,
      scales: { y: { range: (u, min, max) => [Math.min(0, min), Math.max(max, threshold || 0) * 1.1 || 1] } },
      axes: [axis, { ...axis, size: 60, values: (u, ticks) => ticks.map((v) => value(v)) }],
      legend: { live: true, mount: (u, el) => this.legendEl.replaceChildren(el) },
      cursor: { y: false },
      hooks: {
        // The times the rule would have fired, shaded under the lines.
        drawClear: [(u) => {
          const { ctx } = u;
          const { top, height } = u.bbox;
          ctx.save();
          ctx.fillStyle = cssVar("--c-err");
          ctx.globalAlpha = 0.15;
          for (const f of firing) {
            const x0 = u.valToPos(f.start / 1000, "x", true);
            const x1 = u.valToPos((f.end === null ? to : f.end) / 1000, "x", true);
            ctx.fillRect(x0, top, Math.max(2, x1 - x0), height);
          }
          ctx.restore();
        }],
      },
    }, data, this.plotEl);
    const what = this.metric || "the rule's measure";
    this.plotEl.setAttribute("aria-label", `${what} over the backtest's period${threshold === null || threshold === undefined ? "" : `, threshold ${value(threshold)}`}; `
      + `${firing.length} ${firing.length === 1 ? "time" : "times"} it would have fired, shaded (listed below)`);
    this.noteEl.textContent = [
      firing.length ? "Shaded: when it would have fired." : "",
      hidden ? `${hidden} more series not drawn (the ${LINES} that fired longest are).` : "",
      drawn.length ? "" : "No data in this period.",
    ].filter((t) => t).join(" ");
    this.el.dataset.drawn = "true";
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.resizer.disconnect();
  }
}
