// The dashboard's page: who is signed in, the controls, the views, navigation through
// the URL (pushState, so back works and every view can be bookmarked), auto-refresh
// with an honest label, and the error and stale-data banners.

import { RuleEditorView } from "./alertedit.js";
import { AlertsView } from "./alerts.js";
import * as api from "./api.js";
import { byId, h } from "./dom.js";
import { EndpointView } from "./endpoint.js";
import * as fmt from "./format.js";
import { OverviewView } from "./overview.js";
import { SloView } from "./slo.js";
import { COMPARES, href, PRESETS, readState, timeRange } from "./state.js";
import { StatusView } from "./status.js";

const VIEWS = { overview: OverviewView, endpoint: EndpointView, status: StatusView, alerts: AlertsView, slo: SloView };
// Views of the tenant as a whole: no service filter, range or comparison above them.
const UNSCOPED = ["status", "alerts", "slo"];
const RETRY_SECONDS = Math.min(5, api.refreshSeconds);

const app = {
  me: null,
  state: null,
  view: null,
  timer: null,
  generation: 0,
  lastOk: null, // when data last arrived (this browser's clock)
  newest: undefined, // newest fact's time (server clock), null: no data at all
  failing: null, // the error of the last refresh, or null
  hiddenRefresh: false,
  services: [],
  drawnMarked: false,
  flash: "", // a line for the next view to show ("Rule ... saved.")

  /** The service filter's choices, from GET /api/v1/services; a view awaits it. */
  setServices(promise) {
    return promise.then(({ services }) => {
      const names = services.map((s) => s.name);
      if (names.join("\n") !== app.services.join("\n")) {
        app.services = names;
        syncServiceSelect();
      }
    });
  },

  /** Called when every chart of `view` has been drawn (tests and the benchmark wait for it). */
  chartsDrawn(view) {
    if (view !== app.view) return;
    document.documentElement.dataset.chartsDrawn = "true";
    if (!app.drawnMarked) {
      app.drawnMarked = true;
      performance.mark("gravix:charts-drawn");
    }
  },

  /** Open the view of `state` (as a link does). */
  go(state) {
    navigate(state);
  },

  /** Refresh the view now (after a change made on it). */
  reload() {
    refresh();
  },

  /** Back to the overview this view was opened from (history.go), else to `fallback`. */
  back(fallback) {
    const steps = history.state && history.state.stepsToOverview;
    if (steps) history.go(-steps);
    else navigate(fallback);
  },
};

// --- banners and the refresh label -------------------------------------------------

function banner(id, kind, role, ...content) {
  let el = byId(id);
  if (!el) {
    el = h("div", { id, class: `banner banner-${kind}`, role });
    byId("banners").append(el);
  }
  el.replaceChildren(...content);
  return el;
}

function removeBanner(id) {
  const el = byId(id);
  if (el) el.remove();
}

function describe(error) {
  const retry = `Retrying every ${RETRY_SECONDS} s.`;
  const shown = app.lastOk ? ` The figures below are from ${fmt.clock(app.lastOk)}.` : "";
  if (error.kind === "network") {
    return `Cannot reach the Gravix API at ${api.apiOrigin()} (${error.message.replace(/^cannot reach the Gravix API \((.*)\)$/, "$1")}).${shown} ${retry}`;
  }
  if (error.kind === "http") {
    const code = error.code ? ` ${error.code}` : "";
    const id = error.requestId ? ` Request id ${error.requestId}.` : "";
    return `The Gravix API answered ${error.status}${code}: ${error.message}.${id}${shown} ${retry}`;
  }
  return `The dashboard failed to show this view: ${error.message}.${shown} ${retry}`;
}

function autoRefresh() {
  if (!app.state || (app.view && app.view.refreshes === false)) return false;
  const range = timeRange(app.state);
  return UNSCOPED.includes(app.state.view) || !range.fixed || range.to > Date.now() + api.clockSkewMs;
}

function updateLabel() {
  const label = byId("refresh-label");
  const parts = [];
  if (app.failing) parts.push(`retrying every ${RETRY_SECONDS} s`);
  else if (app.view && app.view.refreshes === false) parts.push("not refreshing while you edit");
  else if (autoRefresh()) parts.push(`refreshes every ${api.refreshSeconds} s`);
  else parts.push("fixed range, not refreshing");
  let age = null;
  if (app.newest === null) parts.push("no data yet");
  else if (app.newest !== undefined) {
    age = (Date.now() + api.clockSkewMs - app.newest) / 1000;
    parts.push(age < 1.5 ? "newest data just now" : `newest data ${fmt.ago(age)} ago`);
  }
  if (app.failing && app.lastOk) parts.push(`last update ${fmt.clock(app.lastOk)}`);
  const text = parts.join(" · ");
  if (label.textContent !== text) label.textContent = text;

  if (age !== null && age > api.staleSeconds) {
    const link = h("a", { href: href({ ...app.state, view: "status" }), "data-internal": "" }, "Status page");
    banner(
      "stale-banner", "warn", "status",
      h("strong", {}, "Stale data. "),
      `The newest fact is ${fmt.ago(age)} old (${fmt.dateTime(app.newest)}). Your services may have stopped sending, or intake may be down: see the `,
      link,
      ".",
    );
  } else {
    removeBanner("stale-banner");
  }
}

// --- refresh ------------------------------------------------------------------------

function rememberFocus() {
  const el = document.activeElement;
  if (!el || !byId("main").contains(el) || el.tagName !== "A") return null;
  return el.getAttribute("href");
}

function restoreFocus(target) {
  if (!target || (document.activeElement && document.activeElement !== document.body)) return;
  for (const a of byId("main").querySelectorAll("a[href]")) {
    if (a.getAttribute("href") === target) {
      a.focus();
      return;
    }
  }
}

function schedule() {
  clearTimeout(app.timer);
  if (!app.failing && !autoRefresh()) return;
  const seconds = app.failing ? RETRY_SECONDS : api.refreshSeconds;
  app.timer = setTimeout(() => {
    if (document.hidden) app.hiddenRefresh = true; // looked at again when visible
    else refresh();
  }, seconds * 1000);
}

async function refresh() {
  clearTimeout(app.timer);
  const generation = ++app.generation;
  const view = app.view;
  const focus = rememberFocus();
  try {
    const { newest } = await view.refresh();
    if (generation !== app.generation) return;
    app.newest = newest;
    app.lastOk = Date.now();
    app.failing = null;
    removeBanner("error-banner");
    restoreFocus(focus);
    if (!performance.getEntriesByName("gravix:refreshed").length) performance.mark("gravix:refreshed");
  } catch (error) {
    if (generation !== app.generation) return;
    if (error.kind === "auth") {
      location.replace(api.loginUrl());
      return;
    }
    if (!(error instanceof api.ApiError)) console.error(error);
    app.failing = error;
    banner("error-banner", "error", "alert", describe(error));
  } finally {
    if (generation === app.generation) {
      document.documentElement.dataset.refreshed = String(generation);
      schedule();
      updateLabel();
    }
  }
}

// --- navigation ---------------------------------------------------------------------

function show(state, { scrollY = 0, focus = false } = {}) {
  const changedView = !app.state || app.state.view !== state.view || app.state.rule !== state.rule;
  delete document.documentElement.dataset.chartsDrawn;
  if (app.view) app.view.destroy();
  app.state = state;
  const View = state.view === "alerts" && state.rule ? RuleEditorView : VIEWS[state.view];
  app.view = new View(app, state);
  byId("main").replaceChildren(app.view.el);
  document.title = app.view.title;
  syncControls();
  refresh().then(() => {
    if (scrollY) window.scrollTo(0, scrollY);
  });
  if (focus && changedView) byId("main").focus({ preventScroll: false });
}

function navigate(state) {
  // How many steps back the overview an endpoint view was opened from is, for its Back link.
  let stepsToOverview;
  if (state.view === "endpoint" && app.state.view === "overview") stepsToOverview = 1;
  else if (state.view === "endpoint" && history.state && history.state.stepsToOverview) {
    stepsToOverview = history.state.stepsToOverview + 1;
  }
  history.replaceState({ ...(history.state || {}), scrollY: window.scrollY }, "");
  history.pushState({ inApp: true, scrollY: 0, stepsToOverview }, "", href(state));
  show(state, { focus: true });
}

function internalLink(event) {
  const a = event.target.closest("a[data-internal]");
  if (!a || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigate(readState(new URL(a.href).search));
}

// --- controls -----------------------------------------------------------------------

function syncServiceSelect() {
  const select = byId("service");
  const current = app.state ? app.state.service : "";
  const names = [...new Set([...app.services, ...(current ? [current] : [])])].sort();
  const options = [h("option", { value: "" }, "All services"), ...names.map((n) => h("option", { value: n }, n))];
  select.replaceChildren(...options);
  select.value = current;
}

function toLocalInput(tMs) {
  const d = new Date(tMs - new Date(tMs).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}

function syncControls() {
  const s = app.state;
  byId("controls").hidden = UNSCOPED.includes(s.view);
  syncServiceSelect();
  for (const button of document.querySelectorAll("[data-range]")) {
    button.setAttribute("aria-pressed", String(s.from === null && s.range === button.dataset.range));
  }
  for (const button of document.querySelectorAll("[data-compare]")) {
    button.setAttribute("aria-pressed", String(s.compare === button.dataset.compare));
  }
  const custom = byId("custom");
  if (s.from !== null) {
    byId("from").value = toLocalInput(s.from);
    byId("to").value = toLocalInput(s.to);
    custom.open = true;
  }
  byId("custom-error").textContent = "";
  for (const a of document.querySelectorAll("[data-nav]")) {
    const current = a.dataset.nav === (s.view === "endpoint" ? "overview" : s.view);
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
    a.setAttribute("href", href({ ...s, view: a.dataset.nav, method: "", path: "", rule: "" }));
  }
}

function bindControls() {
  byId("service").addEventListener("change", (e) => {
    navigate({ ...app.state, view: "overview", service: e.target.value, method: "", path: "" });
  });
  for (const button of document.querySelectorAll("[data-range]")) {
    button.addEventListener("click", () => {
      navigate({ ...app.state, range: button.dataset.range, from: null, to: null });
    });
  }
  for (const button of document.querySelectorAll("[data-compare]")) {
    button.addEventListener("click", () => navigate({ ...app.state, compare: button.dataset.compare }));
  }
  byId("custom").addEventListener("submit", (e) => {
    e.preventDefault();
    const from = new Date(byId("from").value).getTime();
    const to = new Date(byId("to").value).getTime();
    if (Number.isNaN(from) || Number.isNaN(to)) {
      byId("custom-error").textContent = "Give both a start and an end.";
    } else if (from >= to) {
      byId("custom-error").textContent = "The start must be before the end.";
    } else if (to - from > 400 * 86_400_000) {
      byId("custom-error").textContent = "A range is at most 400 days long.";
    } else {
      navigate({ ...app.state, from, to, range: "" });
    }
  });
  byId("logout").addEventListener("click", async () => {
    // No more refreshes, and none in flight counts: their 401 would race this redirect.
    clearTimeout(app.timer);
    app.generation += 1;
    try {
      await api.logout();
    } catch (e) {
      // Signed out already, or the server is away: the login page says which.
    }
    location.replace("login");
  });
  document.addEventListener("click", internalLink);
  window.addEventListener("popstate", (e) => {
    show(readState(location.search), { scrollY: (e.state && e.state.scrollY) || 0, focus: true });
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && app.hiddenRefresh) {
      app.hiddenRefresh = false;
      refresh();
    }
  });
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => app.view && app.view.restyle());
}

function buildControls() {
  byId("presets").append(
    ...PRESETS.map((p) => h("button", { type: "button", class: "seg", "data-range": p, "aria-pressed": "false" }, p)),
  );
  byId("compares").append(
    h("button", { type: "button", class: "seg", "data-compare": "", "aria-pressed": "false" }, "Off"),
    ...Object.entries(COMPARES).map(([value, label]) =>
      h("button", { type: "button", class: "seg", "data-compare": value, "aria-pressed": "false", title: `Dashed lines: ${label}` },
        value === "1d" ? "Day before" : "Week before"),
    ),
  );
}

// --- start --------------------------------------------------------------------------

async function start() {
  const state = readState(location.search);
  history.replaceState({ inApp: false, ...(history.state || {}) }, "", href(state));
  try {
    app.me = await api.me();
  } catch (error) {
    if (error.kind === "auth") {
      location.replace(api.loginUrl());
      return;
    }
    app.failing = error;
    banner("error-banner", "error", "alert", describe(error));
    setTimeout(start, RETRY_SECONDS * 1000);
    return;
  }
  app.failing = null;
  removeBanner("error-banner");
  byId("who").textContent = `${app.me.name} · ${app.me.tenant}`;
  byId("session").hidden = false;
  show(state);
  setInterval(updateLabel, 1000);
}

document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`Content-Security-Policy blocked ${e.blockedURI || "inline code"} (${e.violatedDirective})`);
});
buildControls();
bindControls();
start();
