"""Hostile strings from traffic are shown as text and never run; the CSP holds and reports.

Service names are checked at intake (lower-case letters, digits, ``._-``), so
the hostile service name is put straight into the object store, as a raw
object the query layer reads like any other (a store written by an older or
buggy version, or by someone with access to it). Paths, versions and event
messages reach the page through the intake, as a real service would send them.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from gravix.storage.local import LocalObjectStore
from tests.dashboard.conftest import Dashboard, PageLog, new_context, screenshot, sign_in
from tests.factories import event, fact
from tests.rollup.conftest import put_raw

pytestmark = pytest.mark.slow

SERVICE = "<img src=x onerror=alert('service')>"
PATH = "/<img/src=x/onerror=alert('path')>"
VERSION = '"><svg/onload=alert("version")>'
MESSAGE = "<script>alert('message')</script><img src=x onerror=alert('message')> & <b>bold</b>"

# Before any page script: record what an injected payload would do, if it ever ran.
HOOKS = """
window.__ran = [];
for (const name of ["alert", "confirm", "prompt"]) {
  window[name] = (...args) => { window.__ran.push([name, ...args].join(" ")); };
}
"""


@pytest.fixture
def hostile(dashboard: Dashboard) -> Dashboard:
    now = int(time.time() * 1000)
    dashboard.post(
        "/api/v1/facts",
        [fact(service="checkout", path=PATH, version=VERSION, status=500) for _ in range(3)],
    )
    dashboard.post("/api/v1/events", [event(service="checkout", message=MESSAGE, version=VERSION)])
    stored: dict[str, Any] = {
        "event_id": "hostile-1", "timestamp": now - 60_000, "service": SERVICE, "method": "GET",
        "path": "/health", "status": 503, "latency_ms": 5.0, "env": "prod", "version": "v1",
    }  # fmt: skip
    put_raw(LocalObjectStore(dashboard.data_dir / "store"), "acme", [stored], created_ms=now)
    assert dashboard.wait_for_events(1)  # events are served once rolled up
    return dashboard


def test_hostile_strings_are_text_and_never_run(browser: Browser, hostile: Dashboard) -> None:
    context = new_context(browser)
    context.add_init_script(HOOKS)
    page = context.new_page()
    log = PageLog(page)
    sign_in(page, hostile)
    main = page.locator("#main")
    expect(main.locator("table.services tbody th").filter(has_text=SERVICE)).to_have_count(1)
    expect(main.locator("table.endpoints .path").filter(has_text=PATH)).to_have_count(1)
    expect(main.locator(".event-message")).to_have_text([MESSAGE])
    expect(main.locator(".event .version")).to_have_text([VERSION])
    screenshot(page, "hostile-strings")

    # Into the hostile service's scope, then the hostile endpoint's view.
    main.get_by_role("link", name=SERVICE).click()
    expect(page.locator("#view-title")).to_have_text(f"Service {SERVICE}")
    expect(page.get_by_label("Service", exact=True)).to_have_value(SERVICE)
    page.go_back()
    main.locator("table.endpoints a").filter(has_text=PATH).click()
    expect(page.locator("#view-title")).to_have_text(f"POST {PATH} checkout")
    expect(main.locator("table.versions tbody th")).to_have_text([VERSION])
    expect(page).to_have_title(f"POST {PATH} · checkout · Gravix")

    # Nothing ran, and no markup came out of the data.
    assert page.evaluate("window.__ran") == []
    assert page.locator("#main img, #main script, #main svg:not(.spark)").count() == 0
    assert page.evaluate("document.querySelectorAll('[onerror], [onload]').length") == 0
    context.close()
    assert log.dialogs == []
    assert log.problems() == []


def test_the_csp_is_sent_enforced_and_reported(browser: Browser, dashboard: Dashboard) -> None:
    context = new_context(browser)
    page = context.new_page()
    log = PageLog(page)
    sign_in(page, dashboard)
    response = page.goto(dashboard.url + "/")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "object-src 'none'" in csp
    assert "base-uri 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "require-trusted-types-for 'script'" in csp and "unsafe" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    expect(page.locator("#view-title, #empty-title")).to_be_visible()
    outcome = page.evaluate(
        """() => {
        const seen = [];
        const note = (e) => seen.push(e.effectiveDirective);
        document.addEventListener("securitypolicyviolation", note);
        const refused = {};
        const attempt = (name, fn) => {
          try { fn(); refused[name] = false; } catch (e) { refused[name] = e.name; }
        };
        attempt("handler", () => {  // an inline event handler
          const button = document.createElement("button");
          button.setAttribute("onclick", "window.__ran = true");
          document.body.append(button);
          button.click();
        });
        attempt("html", () => document.body.insertAdjacentHTML("beforeend", "<b>x</b>"));
        attempt("script", () => {  // an inline script
          const script = document.createElement("script");
          script.textContent = "window.__ran = true";
          document.body.append(script);
        });
        new Image().src = "http://127.0.0.2:9/pixel.png";  // another origin: blocked, not fetched
        return new Promise((resolve) => setTimeout(
          () => resolve({seen, refused, ran: window.__ran === true}), 300));
    }"""
    )
    assert outcome["ran"] is False
    assert outcome["refused"] == {
        "handler": "TypeError",
        "html": "TypeError",
        "script": "TypeError",
    }
    assert "require-trusted-types-for" in outcome["seen"] and "img-src" in outcome["seen"]
    # The page logs every violation it sees, so one in the field shows in the console.
    reported = [m for m in log.console if "Content-Security-Policy blocked" in m]
    assert any("127.0.0.2:9/pixel.png (img-src)" in m for m in reported), log.console
    context.close()
