// What the overview and endpoint views share: their element, the charts
// section they own, and the "No data yet" state.

import { h } from "./dom.js";
import { emptyState } from "./panels.js";

export class View {
  constructor(app, state, name) {
    this.app = app;
    this.state = state;
    this.mode = null;
    this.charts = null;
    this.el = h("div", { class: `view view-${name}` });
  }

  mountEmpty() {
    if (this.mode === "empty") return;
    this.destroy();
    this.mode = "empty";
    this.el.replaceChildren(emptyState(this.app.me.tenant));
  }

  destroy() {
    if (this.charts) this.charts.destroy();
    this.charts = null;
  }
}
