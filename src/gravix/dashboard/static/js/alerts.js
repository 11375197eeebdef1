// The alerts view (view=alerts): what fires and is pending now, the rules, the silences,
// the history of transitions and the delivery log, under a line on the evaluator's last
// run and the rule file. Editors and admins (GET /api/v1/me's role, with a session) also
// get the controls: a new rule, edit, delete (confirmed), silence a firing alert, end a
// silence; viewers get none of them. Also what the other views show of alerts: the
// overview's notice of firing alerts (firingNotice) and the markers of transitions on the
// charts (alertMarks). Rule names, series values and messages go in as text (dom.js).

import * as api from "./api.js";
import { h } from "./dom.js";
import * as fmt from "./format.js";
import { href, PRESETS, presetMs } from "./state.js";

export const STATE_WORDS = {
  normal: "normal",
  pending: "pending",
  firing: "firing",
  recovering: "recovering",
  resolved: "resolved",
  nodata: "no data",
  error: "error",
};
// The order of "now": what needs someone first.
const STATE_ORDER = ["firing", "error", "nodata", "recovering", "pending"];
const HISTORY_SHOWN = 50;
const NOTICE_SHOWN = 3;
const SILENCE_HOURS = [1, 2, 4, 8, 24, 72, 168];

/** Whether `me` (GET /api/v1/me) may change rules and silences: an editor or admin, signed in. */
export function canEdit(me) {
  return Boolean(me) && me.via === "session" && (me.role === "editor" || me.role === "admin");
}

// How a metric's value reads: ratios as percentages, latencies in ms, rates per second.
const UNITS = {
  error_rate: "ratio", client_error_rate: "ratio",
  p50: "ms", p95: "ms", p99: "ms", avg_latency: "ms", max_latency: "ms",
  throughput: "rate",
  requests: "count", errors: "count", client_errors: "count", latency_count: "count",
};

export function unitOf(metric) {
  return UNITS[metric] || "number";
}

/** A value a rule measured: its metric's (threshold), a burn rate (SLO), else a number. */
export function ruleValue(rule, v) {
  if (rule && rule.kind === "slo" && v !== null && v !== undefined) return `${+Number(v).toFixed(1)}x burn rate`;
  return metricValue(rule && rule.kind === "threshold" ? rule.metric : null, v);
}

/** A value of `metric` as people read it (a ratio 0.052 as "5.20%"). */
export function metricValue(metric, v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const unit = unitOf(metric);
  if (unit === "ratio") return fmt.percent(v);
  if (unit === "ms") return fmt.ms(v);
  if (unit === "rate") return fmt.rate(v);
  if (unit === "count") return fmt.exactCount(v);
  return String(+Number(v).toPrecision(4));
}

/** A series' dimensions: "service=checkout, path=/pay"; "" for a rule without group_by. */
export function seriesText(series) {
  return Object.entries(series || {}).map(([k, v]) => `${k}=${v}`).join(", ");
}

function seriesOrAll(series) {
  return seriesText(series) || "all matching requests";
}

function filterText(f) {
  const values = (f.values || []).map(String);
  const op = f.op || "in";
  if (values.length === 1 && (op === "in" || op === "eq")) return `${f.dimension} = ${values[0]}`;
  if (values.length === 1 && (op === "not_in" || op === "neq")) return `${f.dimension} ≠ ${values[0]}`;
  return `${f.dimension} ${op === "in" || op === "eq" ? "in" : "not in"} ${values.join(", ")}`;
}

/** A rule's condition in words: "error_rate > 5.00% over 5m, for 1m, per path; service = checkout". */
export function ruleWords(rule) {
  const parts = [];
  if (rule.kind === "threshold") {
    let text = `${rule.metric} ${rule.op || ">"} ${metricValue(rule.metric, rule.threshold)} over ${rule.window || "5m"}`;
    if (rule.for && rule.for !== "0s") text += `, for ${rule.for}`;
    if (rule.recover_threshold !== null && rule.recover_threshold !== undefined) {
      text += `, recovers past ${metricValue(rule.metric, rule.recover_threshold)}`;
    }
    if (rule.keep_firing_for && rule.keep_firing_for !== "0s") text += `, keeps firing ${rule.keep_firing_for}`;
    parts.push(text);
    if (rule.min_requests !== null && rule.min_requests !== undefined) parts.push(`at least ${fmt.exactCount(rule.min_requests)} requests`);
  } else if (rule.kind === "slo") {
    const target = `${+(rule.target * 100).toFixed(4)}%`; // 0.9995: "99.95%", never rounded to 100%
    parts.push(rule.objective === "latency"
      ? `${target} of requests under ${fmt.ms(rule.latency_ms)} over ${rule.period}, burn-rate alerts`
      : `${target} of requests without a 5xx over ${rule.period}, burn-rate alerts`);
  } else if (rule.kind === "silent") {
    parts.push(`no facts for ${rule.after}`);
  } else {
    parts.push(rule.kind);
  }
  if (rule.group_by && rule.group_by.length) parts[0] += `, per ${rule.group_by.join(", ")}`;
  const filters = (rule.filters || []).map(filterText);
  if (filters.length) parts.push(`where ${filters.join(" and ")}`);
  return parts.join("; ");
}

function stateBadge(state) {
  return h("span", { class: `state state-${state}` }, STATE_WORDS[state] || state);
}

/** The overview or endpoint view of a series around `sinceMs`, on a live range that covers it. */
export function seriesHref(series, sinceMs) {
  const age = Date.now() + api.clockSkewMs - sinceMs;
  const range = PRESETS.find((p) => presetMs(p) >= age + 10 * 60_000);
  const when = range
    ? { range, from: null, to: null }
    : { range: "", from: sinceMs - 3_600_000, to: Date.now() + api.clockSkewMs };
  const base = { view: "overview", service: series.service || "", method: "", path: "", compare: "", latency: "log", ...when };
  if (series.service && series.method && series.path) {
    return href({ ...base, view: "endpoint", method: series.method, path: series.path });
  }
  return href(base);
}

// --- the overview's notice and the charts' markers ----------------------------------

/**
 * The overview's notice of alerts firing now (null when none): how many, the first few
 * (rule and series), how many are pending, and a link to the alerts view (`alertsHref`).
 */
export function firingNotice(answer, alertsHref) {
  const alerts = (answer && answer.alerts) || [];
  const firing = alerts.filter((a) => a.state === "firing").sort((a, b) => a.since - b.since);
  if (!firing.length) return null;
  const pending = alerts.filter((a) => a.state === "pending").length;
  const items = firing.slice(0, NOTICE_SHOWN).map((a, i) => [
    i ? "; " : "",
    h("strong", { class: "alert-rule" }, a.rule),
    seriesText(a.series) ? ` (${seriesText(a.series)})` : "",
    ` since ${fmt.clock(a.since)}`,
  ]);
  const more = firing.length > NOTICE_SHOWN ? `; and ${firing.length - NOTICE_SHOWN} more` : "";
  const pendingText = pending ? ` ${pending} more pending.` : "";
  const n = firing.length;
  return h("p", { class: "alerts-notice" },
    h("strong", {}, `${n} ${n === 1 ? "alert" : "alerts"} firing: `), items, `${more}.${pendingText} `,
    h("a", { href: alertsHref, "data-internal": "" }, "See the alerts"), ".");
}

// A transition shows on a chart when it is one of these (firing red, resolved green).
const MARKED = ["firing", "resolved", "nodata", "error"];

function names(rule, dimension) {
  const out = new Set();
  for (const f of (rule && rule.filters) || []) {
    if (f.dimension === dimension && (f.op === "in" || f.op === "eq" || !f.op)) for (const v of f.values) out.add(String(v));
  }
  return out;
}

/**
 * Whether a transition belongs on the charts of `scope` ({service, method, path}, "" for
 * any): its series or its rule's filters name the scope's service, and nothing of it
 * names another method or path.
 */
function inScope(t, rule, scope) {
  for (const dim of ["service", "method", "path"]) {
    const want = scope[dim];
    if (!want) continue;
    const named = t.series && dim in t.series ? new Set([String(t.series[dim])]) : names(rule, dim);
    if (named.size ? !named.has(want) : dim === "service") return false;
  }
  return true;
}

/**
 * The transitions of a history answer as the charts' markers (markers.js: kind "alert"),
 * those to firing, resolved, no data and error, in `scope`. `rules`: GET
 * /api/v1/alerts/rules, for the metric of a value and the filters of a rule.
 */
export function alertMarks(history, rules, scope) {
  const byId = new Map(((rules && rules.rules) || []).map((r) => [r.id, r]));
  const out = [];
  for (const t of (history && history.transitions) || []) {
    if (!MARKED.includes(t.to)) continue;
    const rule = byId.get(t.rule_id);
    if (!inScope(t, rule, scope)) continue;
    const facts = [seriesOrAll(t.series)];
    if (t.value !== null && t.value !== undefined) {
      const against = t.threshold === null || t.threshold === undefined ? "" : ` against ${ruleValue(rule, t.threshold)}`;
      facts.push(`${ruleValue(rule, t.value)}${against}`);
    }
    if (t.detail) facts.push(t.detail);
    out.push({
      event_id: `alert-${t.id}`, kind: "alert", state: t.to, rule: t.rule, timestamp: t.at,
      service: (t.series && t.series.service) || "", message: facts.join(" · "),
    });
  }
  return out;
}

/** The alert markers of a chart's range and scope; [] when the alerts API cannot say. */
export async function chartAlerts(from, to, scope) {
  try {
    const [history, rules] = await Promise.all([api.alertHistory(from, to), api.alertRules()]);
    return alertMarks(history, rules, scope);
  } catch (e) {
    if (e.kind === "auth") throw e;
    return []; // the charts and events stand without them; the alerts view says what failed
  }
}

// --- the alerts view ------------------------------------------------------------------

async function all(promises) {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw failed.reason;
  return results.map((r) => r.value);
}

function since(tMs) {
  const seconds = (Date.now() + api.clockSkewMs - tMs) / 1000;
  return `${fmt.dateTime(tMs)} (${fmt.ago(seconds)} ago)`;
}

/** Show an API error next to the form's field it names (`field`), else under the form. */
export function fieldError(form, error) {
  clearErrors(form);
  // "rule.window" (a backtest's body) and "channels[1]" name the form's "window", "channels".
  const base = (error.field || "").replace(/^rule\./, "").split(/[.[]/)[0];
  const slot = base ? form.querySelector(`[data-error="${CSS.escape(base)}"]`) : null;
  if (!slot) {
    form.querySelector(".form-error").textContent = errorWords(error);
    return;
  }
  slot.textContent = errorWords(error);
  const control = form.querySelector(`[aria-describedby~="${CSS.escape(slot.id)}"]`);
  if (control) {
    control.setAttribute("aria-invalid", "true");
    // A group of checkboxes: its first box takes the focus.
    const target = control.tagName === "FIELDSET" ? control.querySelector("input, select") : control;
    if (target && !target.disabled) target.focus();
  }
}

export function clearErrors(form) {
  for (const el of form.querySelectorAll(".field-error, .form-error")) el.textContent = "";
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

export function errorWords(error) {
  const id = error.requestId ? ` (request id ${error.requestId})` : "";
  return `${error.message}${id}`;
}

export class AlertsView {
  constructor(app, state) {
    this.app = app;
    this.state = state;
    this.title = "Alerts · Gravix";
    this.editor = canEdit(app.me);
    this.shown = new Map(); // slot -> the data it shows, to re-render only what changed
    this.rules = new Map(); // id -> rule JSON
    this.flash = h("p", { class: "flash", role: "status" }, app.flash || "");
    app.flash = "";
    this.flash.hidden = !this.flash.textContent;
    this.evaluation = h("div", { class: "alerts-evaluation", dataset: { panel: "evaluation" } });
    this.slots = {};
    for (const name of ["now", "rules", "silences", "history", "deliveries"]) {
      this.slots[name] = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    }
    // Forms the refresh leaves alone: silencing an alert, deleting a rule.
    this.nowAction = h("div", { class: "action-slot" });
    this.rulesAction = h("div", { class: "action-slot" });
    const panel = (id, title, hint, ...content) => h("section", { class: "panel", "aria-labelledby": `${id}-title`, dataset: { panel: id } },
      h("h3", { id: `${id}-title` }, title), hint ? h("p", { class: "panel-hint" }, hint) : null, ...content);
    const newRule = this.editor
      ? h("a", { href: href({ ...state, rule: "new" }), "data-internal": "", class: "button-link", id: "new-rule" }, "New rule")
      : null;
    this.el = h(
      "div",
      { class: "view view-alerts" },
      h("div", { class: "view-head" }, h("h2", { class: "view-title", id: "view-title", tabindex: "-1" }, "Alerts"), newRule),
      this.flash,
      this.evaluation,
      panel("now", "Firing and pending now", "Every series of a rule that is not normal, what needs someone first; open one for its charts at that time.",
        this.nowAction, this.slots.now),
      panel("rules", "Rules", this.editor ? "Open a rule to change it and backtest it. Rules from the rule file are changed in the file." : "Editors and admins change rules.",
        this.rulesAction, this.slots.rules),
      panel("silences", "Silences", "No notifications for matching series while a silence lasts; the history keeps every transition.", this.slots.silences),
      panel("history", "History", "Every change of state in the last 7 days, newest first.", this.slots.history),
      panel("deliveries", "Deliveries", "Notifications sent to channels, newest first, with their tries.", this.slots.deliveries),
    );
  }

  async refresh() {
    const [now, rules, silences, history, deliveries] = await all([
      api.alerts(), api.alertRules(), api.silences(), api.alertHistory(), api.deliveries(),
    ]);
    this.rules = new Map(rules.rules.map((r) => [r.id, r]));
    this.put("evaluation", this.evaluation, [now.evaluation, now.file, Math.floor(Date.now() / 60_000)], () => this.evaluationLine(now));
    const alerts = now.alerts.map(({ evaluated, ...rest }) => rest); // re-render on change, not on every evaluation
    this.put("now", this.slots.now, [alerts, Math.floor(Date.now() / 60_000)], () => this.nowTable(now.alerts));
    const states = now.alerts.map((a) => [a.rule_id, a.state]);
    this.put("rules", this.slots.rules, [rules.rules, states], () => this.rulesTable(rules.rules, now.alerts));
    // Again when one starts or ends, by this page's clock.
    const nowMs = Date.now() + api.clockSkewMs;
    const phases = silences.silences.map((s) => [s.starts > nowMs, s.ends > nowMs]);
    this.put("silences", this.slots.silences, [silences.silences, phases], () => this.silencesList(silences.silences));
    this.put("history", this.slots.history, history.transitions, () => this.historyTable(history.transitions));
    this.put("deliveries", this.slots.deliveries, deliveries.deliveries, () => this.deliveriesTable(deliveries.deliveries));
    return { newest: undefined };
  }

  /** Replace `slot`'s content with build() when `data` changed, keeping the focus and what was open. */
  put(name, slot, data, build) {
    const key = JSON.stringify(data);
    if (this.shown.get(name) === key) return;
    this.shown.set(name, key);
    const active = document.activeElement;
    const focusKey = active && slot.contains(active) ? active.dataset.key : null;
    const open = [...slot.querySelectorAll("details")].map((d) => d.open);
    slot.replaceChildren(build());
    slot.querySelectorAll("details").forEach((d, i) => {
      if (open[i]) d.open = true;
    });
    if (focusKey) {
      const again = [...slot.querySelectorAll("[data-key]")].find((el) => el.dataset.key === focusKey);
      if (again) again.focus();
    }
  }

  say(text) {
    this.flash.textContent = text;
    this.flash.hidden = !text;
  }

  evaluationLine({ evaluation, file }) {
    const lines = [];
    if (!evaluation) {
      lines.push(h("p", {}, "The rules have not been evaluated yet: gravix serve evaluates them every alert_interval_seconds (10 s by default) once there is a rule."));
    } else {
      const age = (Date.now() + api.clockSkewMs - evaluation.at) / 1000;
      const late = age > 300;
      lines.push(h("p", { class: late ? "bad" : "" },
        `Last evaluation ${since(evaluation.at)}: ${fmt.exactCount(evaluation.rules)} ${evaluation.rules === 1 ? "rule" : "rules"} in ${fmt.exactCount(evaluation.duration_ms)} ms; `,
        `data complete up to ${fmt.dateTime(evaluation.watermark)} (the watermark). `,
        late ? "The evaluator has not run for over 5 minutes: see the status page. " : "",
        evaluation.errors ? h("strong", { class: "bad" }, `${evaluation.errors} ${evaluation.errors === 1 ? "rule" : "rules"} failed`) : "No rule failed.",
        evaluation.errors && evaluation.detail ? [": ", h("span", { class: "detail" }, evaluation.detail)] : ""));
    }
    if (file) {
      const applied = file.applied ? `applied ${fmt.dateTime(file.applied)}` : "never applied";
      lines.push(h("p", {}, "Rule file ", h("code", {}, file.path), `: ${applied}.`));
      if (file.error) {
        lines.push(h("p", { class: "file-error", role: "alert" },
          h("strong", {}, "The rule file's newest version was refused: "), file.error,
          " Nothing of that version was applied; fix the file and it is read again."));
      }
    }
    return h("div", {}, lines);
  }

  nowTable(alerts) {
    if (!alerts.length) return h("p", { class: "empty-note" }, "Nothing is firing or pending: every series of every rule is normal.");
    const order = (s) => (STATE_ORDER.includes(s) ? STATE_ORDER.indexOf(s) : STATE_ORDER.length);
    const sorted = [...alerts].sort((a, b) => order(a.state) - order(b.state) || a.since - b.since);
    const rows = sorted.map((a) => {
      const rule = this.rules.get(a.rule_id);
      const key = `${a.rule_id}:${seriesText(a.series)}`;
      return h("tr", { dataset: { state: a.state } },
        h("td", {}, stateBadge(a.state)),
        h("th", { scope: "row", class: "name" }, h("span", { class: "alert-rule" }, a.rule), h("span", { class: "service-tag" }, `${a.kind} · ${a.severity}`)),
        h("td", { class: "series" }, h("a", { href: seriesHref(a.series, a.since), "data-internal": "", dataset: { key: `open:${key}` } }, seriesOrAll(a.series))),
        h("td", {}, since(a.since)),
        h("td", { class: "num" }, ruleValue(rule, a.value)),
        this.editor ? h("td", {}, h("button", {
          type: "button", class: "small-button", dataset: { key: `silence:${key}` },
          onclick: () => this.silenceForm(a),
        }, "Silence")) : null);
    });
    const headers = [["State"], ["Rule", "name"], ["Series"], ["Since"], ["Value", "num"]];
    if (this.editor) headers.push(["Silence"]);
    return dataTable("Alert series not normal now", headers, rows, "alerts-now");
  }

  rulesTable(rules, alerts) {
    if (!rules.length) {
      return h("p", { class: "empty-note" }, this.editor
        ? "No rules yet. Make one with New rule, gravix alerts, or a rule file (docs/alerts.md)."
        : "No rules yet. Editors and admins make them (docs/alerts.md).");
    }
    const counts = new Map();
    for (const a of alerts) {
      const c = counts.get(a.rule_id) || {};
      c[a.state] = (c[a.state] || 0) + 1;
      counts.set(a.rule_id, c);
    }
    const rows = rules.map((r) => {
      const c = counts.get(r.id);
      const states = c
        ? STATE_ORDER.filter((s) => c[s]).map((s) => h("span", { class: `state state-${s}` }, `${c[s]} ${STATE_WORDS[s]}`))
        : [h("span", { class: "muted" }, r.enabled === false ? "disabled" : "all normal")];
      const editHref = href({ ...this.state, rule: String(r.id) });
      const name = this.editor
        ? h("a", { href: editHref, "data-internal": "", dataset: { key: `rule:${r.id}` } }, r.name)
        : h("span", {}, r.name);
      const actions = [];
      if (this.editor && r.source !== "file") {
        actions.push(h("button", {
          type: "button", class: "small-button danger", dataset: { key: `delete:${r.id}` },
          "aria-label": `Delete rule ${r.name}`, onclick: () => this.deleteForm(r),
        }, "Delete"));
      }
      return h("tr", { dataset: { rule: String(r.id) } },
        h("th", { scope: "row", class: "name" }, name, r.description ? h("span", { class: "service-tag" }, r.description) : null),
        h("td", {}, r.kind),
        h("td", { class: "condition" }, ruleWords(r), r.channels && r.channels.length ? h("span", { class: "service-tag" }, `to ${r.channels.join(", ")}`) : null),
        h("td", { class: "states" }, states),
        h("td", {}, r.source === "file" ? "rule file" : "API"),
        this.editor ? h("td", {}, actions) : null);
    });
    const headers = [["Rule", "name"], ["Kind"], ["Condition"], ["Now"], ["Source"]];
    if (this.editor) headers.push(["Delete"]);
    return dataTable("Alert rules", headers, rows, "alert-rules");
  }

  silencesList(silences) {
    if (!silences.length) return h("p", { class: "empty-note" }, "No silences or maintenance windows.");
    const nowMs = Date.now() + api.clockSkewMs;
    const sorted = [...silences].sort((a, b) => b.id - a.id);
    const rows = sorted.map((s) => {
      const matchers = (s.matchers || []).map(filterText).join(" and ");
      let when;
      let active = false;
      if (s.kind === "maintenance") {
        const days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        when = `every ${(s.weekdays || []).map((d) => days[d]).join(", ")} from ${s.start} UTC for ${s.duration}`;
      } else {
        active = s.ends > nowMs && (s.starts || 0) <= nowMs;
        const ended = s.ends <= nowMs;
        when = `${ended ? "ended" : "until"} ${fmt.dateTime(s.ends)}${s.starts > nowMs ? ` (from ${fmt.dateTime(s.starts)})` : ""}`;
      }
      const who = s.created_by ? `${s.created_by}, ${fmt.dateTime(s.created)}` : "";
      const end = this.editor && active
        ? h("button", { type: "button", class: "small-button", dataset: { key: `expire:${s.id}` }, onclick: () => this.expire(s) }, "End now")
        : null;
      return h("tr", { dataset: { silence: String(s.id), active: String(active) } },
        h("th", { scope: "row", class: "name" }, s.kind === "maintenance" ? `maintenance ${s.name}` : matchers,
          s.kind === "maintenance" ? h("span", { class: "service-tag" }, matchers) : null),
        h("td", {}, when),
        h("td", {}, s.comment || "", who ? h("span", { class: "service-tag" }, who) : null),
        this.editor ? h("td", {}, end) : null);
    });
    const headers = [["Matches", "name"], ["When"], ["Why, who"]];
    if (this.editor) headers.push(["End"]);
    return dataTable("Silences and maintenance windows", headers, rows, "silences");
  }

  historyTable(transitions) {
    if (!transitions.length) return h("p", { class: "empty-note" }, "No transitions in the last 7 days.");
    const row = (t) => {
      const rule = this.rules.get(t.rule_id);
      const value = t.value === null || t.value === undefined ? ""
        : `${ruleValue(rule, t.value)}${t.threshold === null || t.threshold === undefined ? "" : ` against ${ruleValue(rule, t.threshold)}`}`;
      const requests = t.requests === null || t.requests === undefined ? "" : `${fmt.exactCount(t.requests)} requests`;
      return h("tr", { dataset: { to: t.to } },
        h("td", {}, h("time", { datetime: new Date(t.at).toISOString() }, fmt.dateTime(t.at))),
        h("th", { scope: "row", class: "name" }, h("span", { class: "alert-rule" }, t.rule)),
        h("td", { class: "series" }, seriesOrAll(t.series)),
        h("td", {}, stateBadge(t.from), " → ", stateBadge(t.to)),
        h("td", {}, value, requests ? h("span", { class: "service-tag" }, requests) : null, t.detail ? h("span", { class: "service-tag" }, t.detail) : null));
    };
    const headers = [["Time"], ["Rule", "name"], ["Series"], ["Change"], ["Value"]];
    const first = dataTable("Alert transitions, newest first", headers, transitions.slice(0, HISTORY_SHOWN).map(row), "history");
    if (transitions.length <= HISTORY_SHOWN) return first;
    const rest = transitions.slice(HISTORY_SHOWN);
    return h("div", {}, first, h("details", { class: "more-events" },
      h("summary", {}, `${rest.length} earlier ${rest.length === 1 ? "transition" : "transitions"}`),
      dataTable("Earlier alert transitions", headers, rest.map(row), "history")));
  }

  deliveriesTable(deliveries) {
    if (!deliveries.length) return h("p", { class: "empty-note" }, "No notifications yet.");
    const rows = deliveries.map((d) => {
      const n = d.notification;
      const what = n ? `${n.status} · ${n.rule}${n.service ? ` · ${n.service}` : ""}${n.repeat ? ` (repeat ${n.repeat})` : ""}` : "(unreadable)";
      const created = d.created_ms ?? d.created;
      const tries = d.tries || [];
      const last = tries.length ? tries[tries.length - 1] : null;
      const code = last && last.status_code ? ` (last answer ${last.status_code})` : "";
      return h("tr", { dataset: { status: d.status } },
        h("td", {}, fmt.dateTime(created)),
        h("th", { scope: "row", class: "name" }, d.channel),
        h("td", {}, what),
        h("td", {}, h("span", { class: `delivery delivery-${d.status}` }, d.status), code),
        h("td", { class: "num" }, fmt.exactCount(d.attempts)),
        h("td", { class: "last-error" }, d.last_error || ""));
    });
    return dataTable("Notifications and their delivery", [["Created"], ["Channel", "name"], ["Notification"], ["Status"], ["Tries", "num"], ["Last error"]], rows, "deliveries");
  }

  // --- actions (editors and admins) ----------------------------------------------

  /** A form to silence a firing alert: matchers from its rule and series, a duration, why. */
  silenceForm(alert) {
    const matchers = [["rule", alert.rule], ...Object.entries(alert.series || {})];
    const boxes = matchers.map(([dim, value], i) => h("label", { class: "check" },
      h("input", { type: "checkbox", checked: true, dataset: { dimension: dim, index: String(i) } }), ` ${dim} = `, h("code", {}, String(value))));
    const hours = h("select", { id: "silence-hours", "aria-describedby": "silence-hours-error" },
      SILENCE_HOURS.map((n) => h("option", { value: String(n), selected: n === 2 ? true : null }, n < 24 ? `${n} h` : `${n / 24} d`)));
    const comment = h("input", { type: "text", id: "silence-comment", maxlength: "2000", "aria-describedby": "silence-comment-error" });
    const form = h("form", { class: "action-form", "aria-label": "Silence an alert" },
      h("p", { class: "action-title" }, "Silence ", h("strong", {}, alert.rule), ` for ${seriesOrAll(alert.series)}`),
      h("fieldset", { "aria-describedby": "silence-matchers-error" }, h("legend", {}, "Matching"), boxes,
        h("p", { class: "field-error", id: "silence-matchers-error", dataset: { error: "matchers" } })),
      h("div", { class: "field" }, h("label", { for: "silence-hours" }, "For"), hours,
        h("p", { class: "field-error", id: "silence-hours-error", dataset: { error: "ends" } })),
      h("div", { class: "field" }, h("label", { for: "silence-comment" }, "Why"), comment,
        h("p", { class: "field-error", id: "silence-comment-error", dataset: { error: "comment" } })),
      h("div", { class: "form-actions" },
        h("button", { type: "submit", class: "primary" }, "Silence"),
        h("button", { type: "button", class: "link-button", onclick: () => this.nowAction.replaceChildren() }, "Cancel")),
      h("p", { class: "form-error", role: "alert" }));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const chosen = [...form.querySelectorAll("input[type=checkbox]")].filter((b) => b.checked)
        .map((b) => ({ dimension: b.dataset.dimension, values: [String(matchers[Number(b.dataset.index)][1])], op: "in" }));
      const ends = Date.now() + api.clockSkewMs + Number(hours.value) * 3_600_000;
      try {
        await api.addSilence({ matchers: chosen, ends, comment: comment.value });
      } catch (error) {
        if (error.kind === "auth") location.replace(api.loginUrl());
        fieldError(form, error);
        return;
      }
      this.nowAction.replaceChildren();
      this.say(`Silenced until ${fmt.dateTime(ends)}: ${chosen.map(filterText).join(" and ") || "everything"}.`);
      this.app.reload();
    });
    this.nowAction.replaceChildren(form);
    form.querySelector("input").focus();
  }

  /** Ask before deleting a rule. */
  deleteForm(rule) {
    const yes = h("button", { type: "button", class: "primary danger" }, "Delete rule");
    const error = h("p", { class: "form-error", role: "alert" });
    const box = h("div", { class: "action-form confirm", role: "group", "aria-label": "Confirm the deletion" },
      h("p", { class: "action-title" }, "Delete the rule ", h("strong", {}, rule.name), "? Its series stop being evaluated; its history stays."),
      h("div", { class: "form-actions" }, yes,
        h("button", { type: "button", class: "link-button", onclick: () => this.rulesAction.replaceChildren() }, "Cancel")),
      error);
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      try {
        await api.deleteRule(rule.id);
      } catch (e) {
        if (e.kind === "auth") location.replace(api.loginUrl());
        yes.disabled = false;
        error.textContent = errorWords(e);
        return;
      }
      this.rulesAction.replaceChildren();
      this.say(`Rule “${rule.name}” deleted.`);
      this.app.reload();
    });
    this.rulesAction.replaceChildren(box);
    yes.focus();
  }

  async expire(silence) {
    try {
      await api.expireSilence(silence.id);
    } catch (e) {
      if (e.kind === "auth") location.replace(api.loginUrl());
      this.say(`The silence was not ended: ${errorWords(e)}`);
      return;
    }
    this.say("The silence has ended.");
    this.app.reload();
  }

  restyle() {}

  destroy() {}
}

/** A table; each cell is labelled with its column (data-label), for the phone's layout of one row a block. */
function dataTable(caption, headers, rows, className) {
  for (const row of rows) {
    [...row.children].forEach((cell, i) => {
      if (headers[i]) cell.dataset.label = headers[i][0];
    });
  }
  return h("div", { class: "table-wrap" },
    h("table", { class: `data ${className}` },
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map(([text, cls]) => h("th", { scope: "col", class: cls || null }, text)))),
      h("tbody", {}, rows)));
}
