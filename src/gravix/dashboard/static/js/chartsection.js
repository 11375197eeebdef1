// The three charts of a scope (error rate, latency, throughput), with the comparison
// overlay, the event markers' lanes, the latency axis (log or linear, kept in the URL),
// the chart data's downloads, and words instead of blank charts when there is no data.

import { ChartPanel, CHART_SPECS, seriesData, serviceLines } from "./charts.js";
import { h } from "./dom.js";
import { exportButtons } from "./export.js";
import * as fmt from "./format.js";
import { noDataForPeriod } from "./panels.js";
import { COMPARES, href } from "./state.js";

/** "Axis: log | linear", two links that keep the choice in the URL (latency=linear). */
function scaleSwitch(state) {
  const link = (scale, text) =>
    h(
      "a",
      {
        href: href({ ...state, latency: scale }),
        class: "seg seg-link",
        "data-internal": "",
        "data-scale": scale,
        "aria-current": state.latency === scale ? "true" : null,
      },
      text,
    );
  return h(
    "div",
    { class: "scale-switch", role: "group", "aria-label": "Latency axis" },
    h("span", { class: "scale-label", "aria-hidden": "true" }, "Axis"),
    h("div", { class: "segmented" }, link("log", "log"), link("linear", "linear")),
  );
}

export class ChartsSection {
  /**
   * state: the view's state (its latency axis); kinds: the event kinds drawn as markers
   * (null: all of them); exports: [{what, label, body}] downloads of the chart data.
   */
  constructor(state, { kinds = null, exports = [] } = {}) {
    this.kinds = kinds;
    this.panels = CHART_SPECS.map((spec) =>
      new ChartPanel(spec, spec.id === "latency" ? { log: state.latency !== "linear", tools: scaleSwitch(state) } : {}),
    );
    this.compareNote = h("p", { class: "compare-note", role: "status", hidden: true });
    this.noData = h("div", { class: "no-data-slot" });
    this.grid = h("div", { class: "chart-grid" }, this.panels.map((p) => p.el));
    // Alert transitions (alerts.js) share the lanes: firing red, resolved green, filled.
    const alertKeys = [" ", h("span", { class: "key key-firing" }, "alert firing"), " ", h("span", { class: "key key-resolved" }, "resolved")];
    const keys = kinds
      ? [h("span", { class: "key key-incident" }, "incidents"), alertKeys, " (pick a service to see its deploys)"]
      : [
        h("span", { class: "key key-deploy" }, "deploy"),
        " ",
        h("span", { class: "key key-incident" }, "incident"),
        " ",
        h("span", { class: "key key-other" }, "config or note"),
        alertKeys,
      ];
    this.key = h(
      "div",
      { class: "chart-foot" },
      h(
        "p",
        { class: "marker-key" },
        "Events in the lane under each chart: ",
        keys,
        "; a number is that many close together, point at it or tap it for the list. ",
        `Values: the newest bucket, or the one you point at or tap (tap again to let go). Times in ${fmt.timeZone()}.`,
      ),
      exports.map(({ what, label, body }) => exportButtons(what, body, label)),
    );
    this.el = h("section", { class: "charts", "aria-label": "Charts" }, this.compareNote, this.noData, this.grid, this.key);
    this.drawn = false;
  }

  /**
   * Draw a time-series result (and, for the overview of all services, `perService`:
   * requests and errors by service on the same buckets); false when the period has no
   * data (said in words).
   */
  update(result, perService, grainMs, newestMs, compare, rangeText) {
    const data = seriesData(result, grainMs, newestMs);
    if (data.empty) {
      this.noData.replaceChildren(noDataForPeriod(rangeText));
      this.grid.hidden = true;
      this.key.hidden = true;
      this.compareNote.hidden = true;
      return false;
    }
    if (perService) serviceLines(perService, data);
    this.noData.replaceChildren();
    this.grid.hidden = false;
    this.key.hidden = false;
    const label = compare ? COMPARES[compare] : "";
    for (const panel of this.panels) panel.update(data, label);
    if (compare && data.compareEmpty) {
      this.compareNote.textContent = `No data ${label} to compare with: the comparison period had no requests, so there are no dashed lines.`;
      this.compareNote.hidden = false;
    } else if (compare) {
      const services = perService ? " (the error rate: of all services together)" : "";
      this.compareNote.textContent = `Dashed lines: the same period ${label}${services}. The tables compare with it too.`;
      this.compareNote.hidden = false;
    } else {
      this.compareNote.hidden = true;
    }
    this.drawn = true;
    return true;
  }

  /** Resolves once uPlot has drawn every chart of the last update. */
  whenDrawn() {
    return Promise.all(this.panels.map((p) => p.drawn));
  }

  setEvents(events) {
    const shown = this.kinds ? events.filter((e) => this.kinds.includes(e.kind)) : events;
    for (const panel of this.panels) panel.setEvents(shown);
  }

  restyle() {
    for (const panel of this.panels) panel.restyle();
  }

  destroy() {
    for (const panel of this.panels) panel.dispose();
  }
}
