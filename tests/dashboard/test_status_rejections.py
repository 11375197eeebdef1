"""The status page shows what intake refused in the last hour, in Chromium (issue 18).

OpenTelemetry exporters drop the partial-success answer, so a span Gravix
rejects is lost without a word on the sender's side: the status page is where
it shows, by source and reason, on a desktop and on a phone.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.dashboard.conftest import Dashboard, PageLog, new_context, screenshot, sign_in
from tests.factories import fact

pytestmark = pytest.mark.slow


def _pathless_span() -> bytes:
    now = time.time_ns()
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "name": "GET", "kind": 2,
        "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 12_500_000),
        "attributes": [
            {"key": "http.request.method", "value": {"stringValue": "GET"}},
            {"key": "http.response.status_code", "value": {"intValue": 200}},
        ],
    }  # fmt: skip
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def _send_rejected(board: Dashboard) -> None:
    auth = {"Authorization": f"Bearer {board.key}"}
    r = httpx.post(f"{board.url}/v1/traces", content=_pathless_span(),
                   headers={**auth, "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 200 and r.json()["partialSuccess"]["rejectedSpans"] == "1"
    r = httpx.post(f"{board.url}/api/v1/facts", json=[fact(), fact(status=999)], headers=auth)
    assert r.status_code == 400


@pytest.mark.parametrize("width", [1366, 375])
def test_the_status_page_lists_rejections_by_source_and_reason(
    browser: Browser, dashboard: Dashboard, width: int
) -> None:
    context = new_context(browser, viewport={"width": width, "height": 900},
                          is_mobile=width < 600, has_touch=width < 600)  # fmt: skip
    page = context.new_page()
    log = PageLog(page)
    sign_in(page, dashboard, "/?view=status")
    panel = page.locator("section").filter(has=page.locator("#rejected-title"))
    expect(panel.locator("h3")).to_have_text("Rejected in the last hour")
    expect(panel.locator(".empty-note")).to_have_text(
        "None: every fact, event and span received was accepted."
    )
    _send_rejected(dashboard)
    rows = panel.locator("table.rejected tbody tr")
    expect(rows).to_have_count(2)  # the page refreshes by itself
    otlp = rows.filter(has_text="OpenTelemetry (/v1/traces)").locator("td")
    expect(otlp).to_have_text(
        ["missing_path from OpenTelemetry (/v1/traces)path is required: the span has no "
         "http.route, url.path, http.target, url.full or http.url attribute and its name holds "
         "no path (such as 'GET /users/{id}'); set http.route, or have the server pass RAW_URI "
         "/ REQUEST_URI to the WSGI instrumentation", "1"]
    )  # fmt: skip
    facts = rows.filter(has_text="POST /api/v1/facts").locator("td")
    expect(facts).to_have_text(
        ["invalid_status from POST /api/v1/factsstatus must be an integer between 100 and 599",
         "1"]
    )  # fmt: skip
    total = panel.locator(".figure").filter(has_text="Facts, events and spans rejected")
    expect(total.locator("dd")).to_have_text("2")
    # The test admin runs the node: the node's figure, all tenants, shows too.
    node = page.locator(".figure").filter(has_text="Rejected in the last hour, all tenants")
    expect(node.locator("dd")).to_contain_text("2 (")
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    screenshot(page, f"status-rejections-{width}")
    context.close()
    assert log.problems() == []
