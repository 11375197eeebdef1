// Building blocks of the views: tables, the events list, the empty state, notes.
// Every value from the API (service, path, version, message...) goes in as text.

import { apiOrigin, refreshSeconds } from "./api.js";
import { sparkline } from "./charts.js";
import { h } from "./dom.js";
import * as fmt from "./format.js";
import { eventText } from "./markers.js";
import { href } from "./state.js";

/** Rows of a query result as objects keyed by column name. */
export function records(result, rows = result.rows) {
  const names = result.columns.map((c) => c.name);
  return rows.map((row) => Object.fromEntries(names.map((name, i) => [name, row[i]])));
}

/** Compare rows keyed by the given dimensions, to match them with current rows. */
export function byKey(result, dims) {
  const map = new Map();
  if (!result.compare) return map;
  for (const r of records(result, result.compare.rows)) map.set(dims.map((d) => r[d]).join("\u0000"), r);
  return map;
}

/** The change of `now` against `before`; baseline: what `before` is, in words. */
export function delta(now, before, kind, higherIsWorse = true, baseline = undefined) {
  const c = fmt.change(now, before, kind, higherIsWorse, baseline);
  if (!c) return null;
  return h("span", { class: `delta delta-${c.trend}`, title: c.label }, c.text);
}

function cellWithDelta(value, deltaEl) {
  return [h("span", { class: "value" }, value), deltaEl ? " " : null, deltaEl];
}

export function table(caption, headers, bodyRows, className = "") {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: `data ${className}` },
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map(([text, cls]) => h("th", { scope: "col", class: cls }, text)))),
      h("tbody", {}, bodyRows),
    ),
  );
}

/** A panel's heading, with its downloads (exportButtons) beside it. */
export function panelHead(titleId, title, exports) {
  return h("div", { class: "panel-head" }, h("h3", { id: titleId }, title), exports);
}

export function note(text, cls = "note") {
  return h("p", { class: cls }, text);
}

/**
 * The services table: requests, error rate, p95 with their change against `baseline`
 * (in words), and an error-rate sparkline.
 */
export function servicesTable(result, spark, state, sparkGrainMs, baseline) {
  const rows = records(result);
  if (!rows.length) return note("No requests in this period.", "empty-note");
  const before = byKey(result, ["service"]);
  const lines = new Map();
  if (spark) {
    const { from, to } = spark.meta;
    const n = Math.max(1, Math.ceil((to - from) / sparkGrainMs));
    for (const r of records(spark)) {
      if (!lines.has(r.service)) lines.set(r.service, new Array(n).fill(0));
      const i = Math.round((r.time - from) / sparkGrainMs);
      if (i >= 0 && i < n) lines.get(r.service)[i] = r.error_rate;
    }
  }
  const body = rows.map((r) => {
    const prev = before.get(r.service) || {};
    const link = h("a", { href: href({ ...state, view: "overview", service: r.service }), "data-internal": "" }, r.service);
    const values = lines.get(r.service);
    const peak = values ? Math.max(...values) : null;
    const label = values ? `${r.service} error rate over the period, highest ${fmt.percent(peak)}` : "";
    return h(
      "tr",
      { "aria-current": state.service === r.service ? "true" : null },
      h("th", { scope: "row", class: "name" }, link),
      h("td", { class: "num" }, cellWithDelta(fmt.count(r.requests), delta(r.requests, prev.requests, "relative", false, baseline))),
      h("td", { class: "num" }, cellWithDelta(fmt.percent(r.error_rate), delta(r.error_rate, prev.error_rate, "points", true, baseline))),
      h("td", { class: "num" }, cellWithDelta(fmt.ms(r.p95), delta(r.p95, prev.p95, "relative", true, baseline))),
      h("td", { class: "col-trend" }, values ? sparkline(values, label) : null),
    );
  });
  return table(
    `Services, with the change against ${baseline}`,
    [["Service", "name"], ["Requests", "num"], ["Error rate", "num"], ["p95", "num"], ["Error rate trend", "col-trend"]],
    body,
    "services",
  );
}

/**
 * Top failing endpoints (by 5xx count), each a link to its endpoint view. `result` has the
 * counts of every endpoint and, in `result.p95`, a query result with the top ones' p95;
 * the changes are against `baseline` (in words).
 */
export function topEndpointsTable(result, state, limit, baseline) {
  const rows = records(result).filter((r) => r.errors > 0).slice(0, limit);
  if (!result.rows.length) return note("No requests in this period.", "empty-note");
  if (!rows.length) return note("No server errors (5xx) in this period.", "empty-note");
  const dims = ["service", "method", "path"];
  const before = byKey(result, dims);
  const latency = new Map();
  const latencyBefore = result.p95 ? byKey(result.p95, dims) : new Map();
  if (result.p95) for (const r of records(result.p95)) latency.set(dims.map((d) => r[d]).join("\u0000"), r.p95);
  const body = rows.map((r) => {
    const key = [r.service, r.method, r.path].join("\u0000");
    const prev = before.get(key) || {};
    r.p95 = latency.has(key) ? latency.get(key) : null;
    prev.p95 = (latencyBefore.get(key) || {}).p95;
    const target = { ...state, view: "endpoint", service: r.service, method: r.method, path: r.path };
    const link = h(
      "a",
      { href: href(target), "data-internal": "", class: "endpoint-link" },
      h("span", { class: "method" }, r.method),
      " ",
      h("span", { class: "path" }, r.path),
    );
    return h(
      "tr",
      {},
      h("th", { scope: "row", class: "name" }, link, h("span", { class: "service-tag" }, r.service)),
      h("td", { class: "num" }, fmt.count(r.errors)),
      h("td", { class: "num" }, cellWithDelta(fmt.percent(r.error_rate), delta(r.error_rate, prev.error_rate, "points", true, baseline))),
      h("td", { class: "num" }, cellWithDelta(fmt.ms(r.p95), delta(r.p95, prev.p95, "relative", true, baseline))),
    );
  });
  return table(
    `Endpoints with the most server errors, with the change against ${baseline}`,
    [["Endpoint", "name"], ["Errors", "num"], ["Error rate", "num"], ["p95", "num"]],
    body,
    "endpoints",
  );
}

function eventItems(events) {
  return events.map((ev) =>
      h(
        "li",
        { class: `event event-${ev.kind}` },
        h("span", { class: "event-kind" }, ev.kind),
        " ",
        h("time", { datetime: new Date(ev.timestamp).toISOString() }, fmt.shortDateTime(ev.timestamp)),
        " ",
        h("span", { class: "service-tag" }, ev.service),
        ev.version ? [" ", h("code", { class: "version" }, ev.version)] : null,
        h("span", { class: "event-message", title: eventText(ev) }, ev.message),
      ),
  );
}

/** Deploys, incidents, config changes and notes, newest first; the first `shown` open. */
export function eventsList(events, shown = 10) {
  if (!events.length) return note("No deploys, incidents or notes in this period.", "empty-note");
  const sorted = [...events].sort((a, b) => b.timestamp - a.timestamp);
  const first = h("ol", { class: "events" }, eventItems(sorted.slice(0, shown)));
  if (sorted.length <= shown) return first;
  const rest = sorted.slice(shown);
  return h(
    "div",
    {},
    first,
    h(
      "details",
      { class: "more-events" },
      h("summary", {}, `${rest.length} earlier ${rest.length === 1 ? "event" : "events"}`),
      h("ol", { class: "events" }, eventItems(rest)),
    ),
  );
}

/** A shell command that sends one fact to this server (its real address). */
export function curlExample() {
  const url = `${apiOrigin()}/api/v1/facts`;
  return [
    `curl -sS ${url} \\`,
    `  -H "Authorization: Bearer $GRAVIX_KEY" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d '{"event_id": "first-'"$(date +%s)"'", "timestamp": "'"$(date -u +%Y-%m-%dT%H:%M:%SZ)"'",`,
    `       "service": "checkout", "method": "POST", "path": "/cart/{id}/pay",`,
    `       "status": 200, "latency_ms": 42.5, "env": "prod", "version": "v1"}'`,
  ].join("\n");
}

function copyBlock(text, label) {
  const code = h("code", {}, text);
  const status = h("span", { class: "copy-status", role: "status" });
  const button = h(
    "button",
    {
      type: "button",
      class: "copy",
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(text);
          status.textContent = "Copied.";
        } catch (e) {
          // No clipboard (plain http on another host): select the text for Ctrl+C.
          const range = document.createRange();
          range.selectNodeContents(code);
          const sel = getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          status.textContent = "Selected: press Ctrl+C to copy.";
        }
      },
    },
    `Copy ${label}`,
  );
  return h("div", { class: "copy-block" }, h("pre", {}, code), button, status);
}

/** "No data yet": how to send the first fact, with this server's address. */
export function emptyState(tenant) {
  const keyCommand = `gravix keys create --tenant ${tenant} --label "first service"`;
  return h(
    "section",
    { class: "panel empty-state", "aria-labelledby": "empty-title" },
    h("h2", { id: "empty-title", tabindex: "-1" }, "No data yet"),
    h("p", {}, `Gravix has not received any facts for tenant ${tenant} yet. A fact is one HTTP request one of your services handled. Send the first one in two steps:`),
    h(
      "ol",
      { class: "steps" },
      h(
        "li",
        {},
        h("p", {}, "On the Gravix server, create an ingest key for this tenant (it is printed once; an admin runs this):"),
        copyBlock(keyCommand, "command"),
        h("p", { class: "hint" }, "In a source checkout the command is .venv/bin/gravix. Put the printed gvx_... key in GRAVIX_KEY."),
      ),
      h("li", {}, h("p", {}, "Send a fact to this server:"), copyBlock(curlExample(), "curl command")),
    ),
    h("p", {}, `An answer of 202 means Gravix has it on disk. This page looks again every ${refreshSeconds} s and shows the data within seconds. docs/facts.md lists every field.`),
  );
}

export function noDataForPeriod(rangeText) {
  return h(
    "div",
    { class: "no-data", role: "status" },
    h("p", { class: "no-data-title" }, "No data for this period."),
    h("p", {}, `No requests were recorded in ${rangeText}. Pick a longer range, or another service.`),
  );
}

/** Put `node` in `slot`, keeping open what the user opened (<details>) in the old content. */
export function replaceSlot(slot, node) {
  const open = [...slot.querySelectorAll("details")].map((d) => d.open);
  slot.replaceChildren(node);
  slot.querySelectorAll("details").forEach((d, i) => {
    if (open[i]) d.open = true;
  });
}
