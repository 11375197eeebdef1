// The three charts of a scope (error rate, latency, throughput), with the comparison
// overlay, event markers, and words instead of blank charts when there is no data.

import { ChartPanel, CHART_SPECS, seriesData } from "./charts.js";
import { h } from "./dom.js";
import * as fmt from "./format.js";
import { noDataForPeriod } from "./panels.js";
import { COMPARES } from "./state.js";

export class ChartsSection {
  /** kinds: the event kinds drawn as markers (all of them, or incidents only). */
  constructor(kinds = null) {
    this.kinds = kinds;
    this.panels = CHART_SPECS.map((spec) => new ChartPanel(spec));
    this.compareNote = h("p", { class: "compare-note", role: "status", hidden: true });
    this.noData = h("div", { class: "no-data-slot" });
    this.grid = h("div", { class: "chart-grid" }, this.panels.map((p) => p.el));
    const keys = kinds
      ? [h("span", { class: "key key-incident" }, "incidents"), " (pick a service to see its deploys)"]
      : [
        h("span", { class: "key key-deploy" }, "deploy"),
        " ",
        h("span", { class: "key key-incident" }, "incident"),
        " ",
        h("span", { class: "key key-other" }, "config or note"),
      ];
    this.key = h(
      "p",
      { class: "marker-key" },
      "Markers: ",
      keys,
      ` · times in ${fmt.timeZone()} · point at a chart for exact values and events`,
    );
    this.el = h("section", { class: "charts", "aria-label": "Charts" }, this.compareNote, this.noData, this.grid, this.key);
    this.drawn = false;
  }

  /** Draw a time-series result; false when the period has no data (said in words). */
  update(result, grainMs, newestMs, compare, rangeText) {
    const data = seriesData(result, grainMs, newestMs);
    if (data.empty) {
      this.noData.replaceChildren(noDataForPeriod(rangeText));
      this.grid.hidden = true;
      this.key.hidden = true;
      this.compareNote.hidden = true;
      return false;
    }
    this.noData.replaceChildren();
    this.grid.hidden = false;
    this.key.hidden = false;
    const label = compare ? COMPARES[compare] : "";
    for (const panel of this.panels) panel.update(data, label);
    if (compare && data.compareEmpty) {
      this.compareNote.textContent = `No data ${label} to compare with: the comparison period had no requests, so there are no dashed lines.`;
      this.compareNote.hidden = false;
    } else if (compare) {
      this.compareNote.textContent = `Dashed lines: the same period ${label}.`;
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
