// The status page: pipeline health from GET /api/v1/status (intake, spool and upload
// backlog, damaged segments in quarantine for admins, rollup, unreadable objects,
// retention, facts and spans refused in the last hour), and the freshness queries see;
// also the overview's one-line notice of what was refused.

import * as api from "./api.js";
import { h } from "./dom.js";
import * as fmt from "./format.js";

function row(label, value, state = "") {
  return h("div", { class: `figure ${state ? `figure-${state}` : ""}` }, h("dt", {}, label), h("dd", {}, value));
}

function age(tMs) {
  if (tMs === null || tMs === undefined) return "never";
  const seconds = (Date.now() + api.clockSkewMs - tMs) / 1000;
  return `${fmt.dateTime(tMs)} (${fmt.ago(seconds)} ago)`;
}

function days(n) {
  return n === 0 ? "kept forever" : `${n} days`;
}

// Where refused items came from (gravix.ingest.rejections.source_of).
const SOURCES = {
  otlp: "OpenTelemetry (/v1/traces)",
  facts: "POST /api/v1/facts",
  events: "POST /api/v1/events",
  "access-log": "import-logs / tail-logs",
  "python-client": "Python middleware",
};

function sourceName(source) {
  return SOURCES[source] || source;
}

// Who counted: each worker process counts what it received.
function workersNote(rejected) {
  return rejected.workers > 1
    ? ` Counted by the worker process that answered, one of ${rejected.workers}: each counts its own.`
    : "";
}

// The tenant's refused facts, events and spans, by source and reason, with the latest message.
function rejectedPanel(rejected) {
  const title = `Rejected in the last ${rejected.minutes === 60 ? "hour" : `${rejected.minutes} minutes`}`;
  const body = rejected.total === 0
    ? h("p", { class: "empty-note" }, "None: every fact, event and span received was accepted.")
    : h("div", { class: "table-wrap" },
      // Two columns, the message under its reason: it reads on a 375 px phone too.
      h("table", { class: "data rejected" },
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Reason, source and latest message"),
          h("th", { scope: "col", class: "num" }, "Count"))),
        h("tbody", {}, rejected.reasons.map((r) => h("tr", {},
          h("td", {},
            h("code", {}, r.reason), ` from ${sourceName(r.source)}`,
            r.example ? h("br") : null, r.example || ""),
          h("td", { class: "num" }, fmt.exactCount(r.count)))))));
  return h("section", { class: "panel", "aria-labelledby": "rejected-title" },
    h("h3", { id: "rejected-title" }, title),
    h("p", { class: "panel-hint" },
      "Items intake refused for what they hold; the rest of their batch was kept (OTLP) or "
      + "refused with a 400 (the sender may send it again). OpenTelemetry exporters do not "
      + "show why, so look here." + workersNote(rejected)),
    rejected.total === 0 ? null : h("dl", { class: "figures" },
      row("Facts, events and spans rejected", fmt.exactCount(rejected.total), "bad")),
    body);
}

/**
 * The overview's notice when intake refused anything in the last hour (null when not):
 * the count, the most frequent source and reason, and a link to this page (`statusHref`).
 */
export function rejectedNotice(rejected, statusHref) {
  if (!rejected || !rejected.total) return null;
  const n = rejected.total;
  const top = rejected.reasons[0];
  const span = rejected.minutes === 60 ? "hour" : `${rejected.minutes} minutes`;
  const what = n === 1 ? "fact, event or span" : "facts, events or spans";
  const from = ` from ${sourceName(top.source)}`;
  // With several workers the figure is the answering one's (see workersNote).
  const workers = rejected.workers > 1 ? `; counted by one of ${rejected.workers} worker processes` : "";
  const detail = n === 1 ? ["(", h("code", {}, top.reason), from, workers, ")"]
    : top.count === n ? ["(all ", h("code", {}, top.reason), from, workers, ")"]
      : ["(most often ", h("code", {}, top.reason), from, `: ${fmt.exactCount(top.count)}`, workers, ")"];
  return h("p", { class: "rejected-notice" },
    h("strong", {}, `${fmt.exactCount(n)} ${what} rejected in the last ${span}`), " ", detail, ". ",
    h("a", { href: statusHref, "data-internal": "" }, "See the status page"), ".");
}

// The node's figure, all tenants: a count per source and reason, no messages.
function nodeRejected(rejected) {
  const list = rejected.reasons.map((r) => `${sourceName(r.source)} ${r.reason}: ${fmt.exactCount(r.count)}`);
  return row("Rejected in the last hour, all tenants",
    rejected.total === 0 ? "none" : `${fmt.exactCount(rejected.total)} (${list.join("; ")})`,
    rejected.total === 0 ? "" : "bad");
}

export class StatusView {
  constructor(app, state) {
    this.app = app;
    this.state = state;
    this.title = "Status · Gravix";
    this.slot = h("div", { class: "slot" }, h("p", { class: "loading" }, "Loading…"));
    this.el = h(
      "div",
      { class: "view view-status" },
      h("h2", { class: "view-title", id: "view-title", tabindex: "-1" }, "Pipeline status"),
      this.slot,
    );
  }

  async refresh() {
    const [st, fresh] = await Promise.all([
      api.status(),
      api.query({ metrics: ["requests"], from: "now-5m", grain: "all" }),
    ]);
    const newest = fresh.meta.freshness.newest_fact_ms;
    const rollup = st.rollup;
    const backlog = st.backlog;
    const nowMs = Date.now() + api.clockSkewMs;
    const rollupLate = rollup.last_success_ms !== null && nowMs - rollup.last_success_ms > 3 * rollup.interval_seconds * 1000;
    const stale = newest !== null && nowMs - newest > api.staleSeconds * 1000;
    const unreadable = rollup.unreadable_objects || [];
    const oldestUpload = backlog.upload_oldest_pending_age_seconds;
    // Intake, the spool and the quarantine are the node's (all tenants): admins only.
    const node = st.intake !== undefined;
    const nodeRows = node
      ? [
        row("Facts accepted per second", st.intake.facts_per_second.toFixed(1)),
        row("Facts accepted since start", fmt.exactCount(st.intake.facts_total)),
        nodeRejected(st.intake.rejected),
        row("Spool on disk", fmt.bytes(backlog.spool_bytes)),
        row("Segments waiting for upload", fmt.exactCount(backlog.upload_pending_segments),
          backlog.upload_pending_segments > 10 ? "bad" : ""),
        row("Oldest waiting segment", oldestUpload === null ? "none" : `${fmt.ago(oldestUpload)} old`),
      ]
      : [];
    this.slot.replaceChildren(
      h("p", { class: "panel-hint" }, node
        ? `Tenant ${st.tenant}. Intake, spool and quarantine are this server's, all tenants together; the rest is the tenant's.`
        : `Tenant ${st.tenant}. Freshness, rollup and retention are the tenant's; the server's intake and spool are shown to admins.`),
      h(
        "div",
        { class: "columns" },
        h("section", { class: "panel", "aria-labelledby": "fresh-title" },
          h("h3", { id: "fresh-title" }, "Freshness"),
          h("dl", { class: "figures" },
            row("Newest fact (queries see it)", age(newest), stale ? "bad" : ""),
            row("Newest fact rolled up", age(rollup.newest_fact_ms)),
            row("Last rollup", age(rollup.last_success_ms), rollupLate ? "bad" : ""),
            row("Rollup runs every", `${rollup.interval_seconds} s`),
          )),
        h("section", { class: "panel", "aria-labelledby": "intake-title" },
          h("h3", { id: "intake-title" }, node ? "Intake and backlog" : "Backlog"),
          h("dl", { class: "figures" },
            ...nodeRows,
            row("Objects waiting for the rollup", fmt.exactCount(backlog.rollup_pending_objects)),
            // Admins only (node-level): damaged spool segments an operator should look at.
            st.spool_quarantine
              ? row("Damaged segments in quarantine",
                st.spool_quarantine.segments
                  ? `${fmt.exactCount(st.spool_quarantine.segments)} (${fmt.bytes(st.spool_quarantine.bytes)}): see "Damaged segments" in docs/ingest.md`
                  : "none",
                st.spool_quarantine.segments ? "bad" : "")
              : null,
          )),
      ),
      rejectedPanel(st.rejected),
      h(
        "div",
        { class: "columns" },
        h("section", { class: "panel", "aria-labelledby": "retention-title" },
          h("h3", { id: "retention-title" }, "Retention"),
          h("dl", { class: "figures" },
            row("Raw facts", days(st.retention_days.raw)),
            row("Minute metrics and events", days(st.retention_days.minute)),
            row("Hourly metrics", days(st.retention_days.hour)),
            row("Daily metrics", days(st.retention_days.day)),
          )),
        h("section", { class: "panel", "aria-labelledby": "unreadable-title" },
          h("h3", { id: "unreadable-title" }, "Unreadable objects"),
          unreadable.length
            ? h("ul", { class: "unreadable" }, unreadable.map((o) => h("li", {}, h("code", {}, typeof o === "string" ? o : JSON.stringify(o)))))
            : h("p", { class: "empty-note" }, "None: every stored object could be read.")),
      ),
    );
    return { newest, charts: false };
  }

  restyle() {}

  destroy() {}
}
