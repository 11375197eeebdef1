// Service events (deploys, incidents, config changes, notes) and alert transitions
// (kind "alert", from alerts.js: firing red, resolved green) in a lane under a chart,
// not as lines across it: six hours of one service's deploys drawn over the plot made
// a barcode of it (issue #18). Markers closer than GAP_PX are one cluster, shown as
// its count; pointing at a cluster, focusing it, or tapping it lists its events, and
// the chart shades the time they span.
//
// Positions are CSS pixels from the lane's left edge, which is the plot's (the lane
// sits right under it): the x of a time is uPlot's valToPos plus the plotting area's
// offset. A marker's `left` is set through the CSSOM (element.style), which the CSP
// allows; it never writes a style attribute.

import { h } from "./dom.js";
import * as fmt from "./format.js";

export const GAP_PX = 24; // centres of two markers are at least this far apart (a tap target)
const LISTED = 50; // events listed for one cluster; the Events panel has them all

/** What a marker's event is called: "deploy", "alert firing". */
function kindName(ev) {
  return ev.kind === "alert" ? `alert ${ev.state}` : ev.kind;
}

export function eventText(ev) {
  if (ev.kind === "alert") return `alert ${ev.state} · ${ev.rule} · ${fmt.dateTime(ev.timestamp)} — ${ev.message}`;
  const version = ev.version ? ` ${ev.version}` : "";
  return `${ev.kind}${version} · ${ev.service} · ${fmt.dateTime(ev.timestamp)} — ${ev.message}`;
}

/**
 * Events as clusters {x, x0, x1, events}, left to right, whose centres `x` are at least
 * `gap` apart. First each cluster takes the events less than `gap` right of its first
 * one (so an even run of events gives a marker every `gap` pixels, not fewer); then a
 * cluster whose centre is still closer than `gap` to the one before joins it, centred
 * on their span (which only moves it right, away from the one before). `xOf(ev)` is the
 * event's x, or null when it is outside the plot.
 */
export function clusters(events, xOf, gap = GAP_PX) {
  const placed = [];
  for (const ev of events) {
    const x = xOf(ev);
    if (x !== null) placed.push({ x, ev });
  }
  placed.sort((a, b) => a.x - b.x || a.ev.timestamp - b.ev.timestamp);
  const windows = [];
  for (const { x, ev } of placed) {
    const last = windows[windows.length - 1];
    if (last && x - last.x0 < gap) {
      last.events.push(ev);
      last.x1 = x;
    } else {
      windows.push({ x0: x, x1: x, events: [ev] });
    }
  }
  const out = [];
  for (const w of windows) {
    out.push({ ...w, x: (w.x0 + w.x1) / 2 });
    while (out.length > 1 && out[out.length - 1].x - out[out.length - 2].x < gap) {
      const last = out.pop();
      const prev = out[out.length - 1];
      prev.events.push(...last.events);
      prev.x1 = last.x1;
      prev.x = (prev.x0 + prev.x1) / 2;
    }
  }
  return out;
}

/** The colour class of a cluster: an incident or a firing alert shows first, then a deploy or a resolved alert. */
export function kindOf(events) {
  const kinds = new Set(events.map((e) => (e.kind === "alert" ? `alert-${e.state}` : e.kind)));
  if (kinds.has("incident")) return "incident";
  if (kinds.has("alert-firing")) return "firing";
  if (kinds.has("deploy")) return "deploy";
  if (kinds.has("alert-resolved")) return "resolved";
  return "other";
}

function describe(cluster) {
  const n = cluster.events.length;
  const first = cluster.events[0];
  if (n === 1) return eventText(first);
  const counts = {};
  for (const e of cluster.events) counts[kindName(e)] = (counts[kindName(e)] || 0) + 1;
  const kinds = Object.entries(counts).map(([k, c]) => `${c} ${k}`).join(", ");
  const last = cluster.events[n - 1];
  return `${n} events, ${fmt.shortDateTime(first.timestamp)} to ${fmt.shortDateTime(last.timestamp)}: ${kinds}`;
}

/** One chart's lane of markers and the list of the cluster pointed at or tapped. */
export class MarkerLane {
  /** onShow(cluster or null): the cluster whose events are listed changed (to shade it). */
  constructor(id, onShow) {
    this.listId = `${id}-events`;
    this.onShow = onShow;
    this.el = h("div", { class: "marker-lane", role: "group", "aria-label": "Events on this chart" });
    this.list = h("div", { class: "marker-list", id: this.listId, "aria-live": "polite" });
    this.clusters = [];
    this.signature = "";
    this.shown = null; // the cluster whose events are listed
    this.pinned = false; // tapped or clicked: stays until tapped again
  }

  /** Place `events` on the plot `u` (called after every draw; the DOM changes only when they move). */
  update(u, events) {
    const lane = this.el.getBoundingClientRect();
    const offset = u.over.getBoundingClientRect().left - lane.left;
    const min = u.scales.x.min;
    const max = u.scales.x.max;
    // The plot ends at the start of the newest bucket: what happened since (an alert
    // that fired a few seconds ago) is marked at that edge, not left out.
    const xs = u.data[0];
    const end = max + (xs.length > 1 ? xs[xs.length - 1] - xs[xs.length - 2] : 0);
    const xOf = (ev) => {
      const t = ev.timestamp / 1000;
      return t < min || (t > max && t >= end) ? null : offset + u.valToPos(Math.min(t, max), "x");
    };
    const found = clusters(events, xOf);
    // A marker stays inside the lane (no sideways scroll on a phone) where the plot ends.
    const half = GAP_PX / 2;
    for (const c of found) c.left = Math.max(half, Math.min(lane.width - half, c.x));
    const members = found.map((c) => c.events.map((e) => e.event_id).join(",")).join(";");
    if (members === this.signature) {
      // The same clusters (a refresh moved the range on): move them, keep focus and list.
      found.forEach((c, i) => {
        const old = this.clusters[i];
        old.x = c.x;
        old.left = c.left;
        old.button.style.left = `${c.left.toFixed(1)}px`;
      });
      return;
    }
    this.signature = members;
    const shownIds = this.shown ? this.shown.events.map((e) => e.event_id).join(",") : null;
    this.clusters = found;
    this.el.replaceChildren(...found.map((c) => this.marker(c)));
    const again = found.find((c) => c.events.map((e) => e.event_id).join(",") === shownIds);
    if (again) this.show(again, this.pinned);
    else this.hide(true);
  }

  marker(cluster) {
    const n = cluster.events.length;
    const button = h(
      "button",
      {
        type: "button",
        class: `marker marker-${kindOf(cluster.events)}`,
        "aria-label": describe(cluster),
        "aria-expanded": "false",
        "aria-controls": this.listId,
        dataset: { count: String(n) },
      },
      n > 1 ? String(n) : "",
    );
    button.style.left = `${cluster.left.toFixed(1)}px`;
    cluster.button = button;
    button.addEventListener("pointerenter", () => {
      if (!this.pinned) this.show(cluster, false);
    });
    button.addEventListener("pointerleave", () => {
      if (!this.pinned) this.hide();
    });
    button.addEventListener("focus", () => {
      if (!this.pinned) this.show(cluster, false);
    });
    button.addEventListener("blur", () => {
      if (!this.pinned) this.hide();
    });
    button.addEventListener("click", () => {
      if (this.pinned && this.shown === cluster) this.hide(true);
      else this.show(cluster, true);
    });
    return button;
  }

  show(cluster, pinned) {
    if (this.shown && this.shown.button) this.shown.button.setAttribute("aria-expanded", "false");
    this.shown = cluster;
    this.pinned = pinned;
    cluster.button.setAttribute("aria-expanded", "true");
    const events = cluster.events.slice(0, LISTED);
    const rest = cluster.events.length - events.length;
    const items = h("ul", { class: "marker-events" }, events.map((ev) => h("li", { class: ev.kind === "alert" ? `event-alert event-alert-${ev.state}` : `event-${ev.kind}` }, eventText(ev))));
    const more = h("p", { class: "hint" }, `and ${rest} more: see Events below.`);
    this.list.replaceChildren(...(rest > 0 ? [items, more] : [items]));
    this.onShow(cluster);
  }

  hide(unpin = false) {
    if (unpin) this.pinned = false;
    if (this.shown && this.shown.button) this.shown.button.setAttribute("aria-expanded", "false");
    const had = this.shown !== null;
    this.shown = null;
    this.list.replaceChildren();
    if (had) this.onShow(null);
  }
}
