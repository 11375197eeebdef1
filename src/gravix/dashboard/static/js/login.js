// The sign-in page: POST /api/v1/login (or the SSO link to /auth/oidc/login), then back to
// the page that sent us here.

import * as api from "./api.js";
import { byId } from "./dom.js";

/** Where to go after signing in: a path on this server only (never another site). */
function nextUrl() {
  const next = new URLSearchParams(location.search).get("next") || "";
  if (next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\")) {
    const url = new URL(next, location.origin);
    if (url.origin === location.origin) return url.pathname + url.search;
  }
  return "./";
}

function say(text) {
  const el = byId("login-error");
  el.textContent = text;
  el.hidden = !text;
}

async function submit(event) {
  event.preventDefault();
  const name = byId("name").value.trim();
  const password = byId("password").value;
  if (!name || !password) {
    say("Enter your user name and password.");
    return;
  }
  const button = byId("sign-in");
  button.disabled = true;
  say("");
  try {
    await api.login(name, password);
    location.replace(nextUrl());
  } catch (e) {
    if (e.status === 401) say("Wrong user name or password.");
    else if (e.status === 429) say(`Too many failed sign-ins. Try again in ${e.retryAfter || 60} s.`);
    else if (e.kind === "network") say(`Cannot reach Gravix at ${api.apiOrigin()}. Is the server running?`);
    else say(`Sign-in failed: ${e.message}`);
    byId("password").select();
  } finally {
    button.disabled = false;
  }
}

/** Offer "Sign in with SSO" when the server has an identity provider (GET /auth/oidc/config). */
async function offerSso() {
  try {
    const response = await fetch(`${api.apiBase}/auth/oidc/config`, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok || !(await response.json()).sso) return;
  } catch (e) {
    return; // no answer: the password form stays, and submitting says what is wrong
  }
  // Back here after the provider: the same page a password sign-in would go to.
  const next = new URL(nextUrl(), location.href);
  const link = byId("sso-link");
  link.href = `${api.apiBase}/auth/oidc/login?next=${encodeURIComponent(next.pathname + next.search)}`;
  byId("sso").hidden = false;
}

async function start() {
  byId("login-form").addEventListener("submit", submit);
  offerSso();
  try {
    await api.me(); // already signed in: straight on
    location.replace(nextUrl());
  } catch (e) {
    // Not signed in (or the server is away; submitting will say so).
  }
}

start();
