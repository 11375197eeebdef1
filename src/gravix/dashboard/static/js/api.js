// The query API, with the signed-in user's session cookie (sent by the browser) and the
// session's CSRF token (from /api/v1/me, kept in memory only). No credential is stored.

const config = window.GRAVIX_CONFIG || {};
export const apiBase = typeof config.apiBase === "string" ? config.apiBase : "";
export const refreshSeconds = Number(config.refreshSeconds) > 0 ? Number(config.refreshSeconds) : 10;
export const staleSeconds = Number(config.staleSeconds) > 0 ? Number(config.staleSeconds) : 300;
const REQUEST_TIMEOUT_MS = 30_000;
const crossOrigin = /^https?:\/\//.test(apiBase) && new URL(apiBase).origin !== location.origin;

let csrfToken = null;
// Server clock minus this browser's clock (from the Date header), so that "newest data
// 8 s ago" is right even when this computer's clock is off.
export let clockSkewMs = 0;

/** Where the API is, for people: the base URL the dashboard talks to. */
export function apiOrigin() {
  return new URL(apiBase || "/", location.origin).href.replace(/\/$/, "");
}

export class ApiError extends Error {
  /**
   * kind: "network" (no answer), "http" (an error answer) or "auth" (signed out);
   * field: the request field the error names (the error shape's `field`), or null.
   */
  constructor(kind, message, { status = 0, code = null, requestId = null, retryAfter = null, field = null } = {}) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
    this.field = field;
  }
}

export function loginUrl() {
  const next = location.pathname + location.search;
  return `login?next=${encodeURIComponent(next)}`;
}

/** A request to the API; the answer's JSON, or with `raw` the Response itself (when ok). */
async function call(method, path, body, { raw = false } = {}) {
  const headers = { Accept: raw ? "*/*" : "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
  let response;
  try {
    response = await fetch(apiBase + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: crossOrigin ? "include" : "same-origin",
      cache: "no-store",
      signal: abort.signal,
    });
  } catch (e) {
    const why = abort.signal.aborted ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : "network error";
    throw new ApiError("network", `cannot reach the Gravix API (${why})`);
  } finally {
    clearTimeout(timer);
  }
  const date = Date.parse(response.headers.get("date") || "");
  if (!Number.isNaN(date)) clockSkewMs = date + 500 - Date.now(); // Date has whole seconds
  if (raw && response.ok) return response;
  let data = null;
  try {
    data = response.status === 204 ? null : await response.json();
  } catch (e) {
    if (response.ok) throw new ApiError("http", `the API answered ${response.status} with no JSON`, { status: response.status });
  }
  if (response.ok) return data;
  const err = (data && data.error) || {};
  const retry = Number(response.headers.get("retry-after"));
  const options = {
    status: response.status,
    code: err.code || null,
    requestId: err.request_id || null,
    retryAfter: retry > 0 ? retry : null,
    field: err.field || null,
  };
  if (response.status === 401) {
    throw new ApiError("auth", err.message || "signed out", options);
  }
  throw new ApiError("http", err.message || `the API answered ${response.status}`, options);
}

async function fetchMe() {
  const who = await call("GET", "/api/v1/me");
  csrfToken = who.csrf_token;
  return who;
}

let startedMe = null; // GET /api/v1/me started by boot.js, handed to the first me()
const early = new Map(); // JSON body -> promise of queries started by boot.js

/** GET /api/v1/me (who is signed in, and the session's CSRF token). */
export function me() {
  const who = startedMe || fetchMe();
  startedMe = null;
  return who;
}

/** Ask /api/v1/me now; the next me() gets this answer instead of asking again. */
export function startMe() {
  startedMe = fetchMe();
  startedMe.catch(() => {}); // me() reports it
  return startedMe;
}

/** A change (POST, PUT, DELETE); a CSRF refusal (the session was replaced) fetches a new token once. */
async function write(method, path, body, options = {}) {
  try {
    return await call(method, path, body, options);
  } catch (e) {
    if (e.kind === "http" && e.code === "csrf_failed") {
      await fetchMe();
      return call(method, path, body, options);
    }
    throw e;
  }
}

function send(body, path = "/api/v1/query", options = {}) {
  return write("POST", path, body, options);
}

/** Start a query now, for the first query() with the same body to pick up. */
export function prefetch(body) {
  const answer = send(body);
  answer.catch(() => {}); // query() reports it
  early.set(JSON.stringify(body), answer);
}

/** POST /api/v1/query; a CSRF refusal (the session was replaced) fetches a new token once. */
export function query(body) {
  const key = JSON.stringify(body);
  const started = early.get(key);
  if (started) {
    early.delete(key);
    return started;
  }
  return send(body);
}

/**
 * POST /api/v1/query?format=csv|parquet: {blob, filename}, the file name the API gives
 * in Content-Disposition (gravix-query-<from>-<to>.<ext>).
 */
export async function download(body, format) {
  const response = await send(body, `/api/v1/query?format=${encodeURIComponent(format)}`, { raw: true });
  const disposition = response.headers.get("content-disposition") || "";
  const named = /filename="([^"]+)"/.exec(disposition);
  const blob = await response.blob();
  return { blob, filename: named ? named[1] : `gravix-query.${format}` };
}

function params(values) {
  const p = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) {
    if (value !== null && value !== undefined && value !== "") p.set(key, String(value));
  }
  const text = p.toString();
  return text ? `?${text}` : "";
}

/** POST /api/v1/explain: what changed in a window against a baseline (docs/explain.md). */
export function explain(question) {
  return send(question, "/api/v1/explain");
}

export function events(from, to, service) {
  return call("GET", `/api/v1/events${params({ from, to, service })}`);
}

export function services(from, to) {
  return call("GET", `/api/v1/services${params({ from, to })}`);
}

export function status() {
  return call("GET", "/api/v1/status");
}

export async function login(name, password) {
  const who = await call("POST", "/api/v1/login", { name, password });
  csrfToken = who.csrf_token;
  return who;
}

export async function logout() {
  await call("POST", "/api/v1/logout");
  csrfToken = null;
}

// --- alerts (docs/alerts.md): reads for anyone, changes for editors and admins -----------

/** GET /api/v1/openapi.json: the query model's metrics and dimensions are named there. */
export function openapi() {
  return call("GET", "/api/v1/openapi.json");
}

/** Every series not normal now, the last evaluation and the rule file's state. */
export function alerts() {
  return call("GET", "/api/v1/alerts");
}

export function alertRules() {
  return call("GET", "/api/v1/alerts/rules");
}

/** A rule with the states of all its series. */
export function alertRule(id) {
  return call("GET", `/api/v1/alerts/rules/${encodeURIComponent(id)}`);
}

/** Create (`id` null) or replace a rule; the saved rule's JSON. */
export function saveRule(rule, id = null) {
  if (id === null) return write("POST", "/api/v1/alerts/rules", rule);
  return write("PUT", `/api/v1/alerts/rules/${encodeURIComponent(id)}`, rule);
}

export function deleteRule(id) {
  return write("DELETE", `/api/v1/alerts/rules/${encodeURIComponent(id)}`);
}

/** When `rule` would have fired over the last `days` days (nothing is saved). */
export function backtest(rule, days) {
  return write("POST", "/api/v1/alerts/backtest", { rule, days });
}

/** Transitions, newest first (at most 1000); ruleId optional. */
export function alertHistory(from, to, ruleId = null) {
  return call("GET", `/api/v1/alerts/history${params({ from, to, rule_id: ruleId })}`);
}

export function alertChannels() {
  return call("GET", "/api/v1/alerts/channels");
}

export function silences() {
  return call("GET", "/api/v1/alerts/silences");
}

export function addSilence(silence) {
  return write("POST", "/api/v1/alerts/silences", silence);
}

/** End a silence now (it stays listed). */
export function expireSilence(id) {
  return write("DELETE", `/api/v1/alerts/silences/${encodeURIComponent(id)}`);
}

/** GET /api/v1/slo: the SLO rules' error budgets, burn-down and where each went (docs/slo.md). */
export function slo() {
  return call("GET", "/api/v1/slo");
}

export function deliveries(limit = 50) {
  return call("GET", `/api/v1/alerts/deliveries${params({ limit })}`);
}
