"""Rejections and unknown latencies where people look, in Chromium (issue #18, follow-ups).

- The overview (the page an on-call engineer opens) says when intake refused
  facts, events or spans in the last hour: the count and the most frequent
  source and reason, with a link to the status page; nothing when none was.
- Requests without a latency (a stock nginx or Apache access log) count in
  requests, not in percentiles: beside the latency chart the overview and the
  endpoint view say how many of the period's requests had one, and say there
  is no latency instead of an empty plot when none had.

One server for the module holds three services over the last 20 minutes:
``mixed`` (2,000 requests, 1,234 of them with a latency), ``nginx`` (300,
none with a latency, as a stock access log), ``api`` (100, all with one),
and four refused facts (three of status 999, one without a path). Each test
runs at 1366 px and on a 375 px phone; screenshots go to
``test-artifacts/screenshots/followups-*`` (conftest.py).
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.dashboard.conftest import (
    WIDTHS,
    Dashboard,
    Screen,
    screenshot,
    sign_in,
    wait_for_refresh,
)
from tests.dashboard.conftest import start_dashboard as start
from tests.factories import fact

pytestmark = pytest.mark.slow

MINUTE = 60_000
MIXED, MIXED_KNOWN = 2000, 1234
NGINX = 300
API = 100
MIXED_ENDPOINT = "view=endpoint&service=mixed&method=GET&path=%2Forders%2F%7Bid%7D"
NGINX_ENDPOINT = "view=endpoint&service=nginx&method=GET&path=%2Fhome"
NO_LATENCY = "No latency recorded (access log without request time)"


def _facts(service: str, path: str, count: int, known: Any, end: int) -> list[dict[str, Any]]:
    """``count`` facts evenly over the 20 minutes before ``end``; ``known(i)``: has a latency."""
    step = 20 * MINUTE // count
    return [
        {"event_id": f"{service}-{i}", "timestamp": end - 20 * MINUTE + i * step,
         "service": service, "method": "GET", "path": path, "status": 500 if i % 50 == 0 else 200,
         "latency_ms": 20.0 + i % 7 if known(i) else None, "env": "prod"}
        for i in range(count)
    ]  # fmt: skip


def _refused(board: Dashboard, items: list[dict[str, Any]]) -> None:
    reply = httpx.post(
        f"{board.url}/api/v1/facts", json=items, headers={"Authorization": f"Bearer {board.key}"}
    )
    assert reply.status_code == 400, reply.text


def _query(board: Dashboard, body: dict[str, Any]) -> Any:
    reply = httpx.post(
        f"{board.url}/api/v1/query", json=body, headers={"Authorization": f"Bearer {board.token}"}
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def _wait_for_requests(board: Dashboard, count: int) -> None:
    """Until queries see ``count`` requests of the last hour."""
    body = {"metrics": ["requests"], "from": "now-1h", "grain": "all"}
    deadline = time.monotonic() + 30
    while True:
        rows = _query(board, body)["rows"]
        if (rows[0][0] if rows else 0) >= count or time.monotonic() > deadline:
            assert rows and rows[0][0] == count, rows
            return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    dashboard = start(tmp_path_factory.mktemp("followups"))
    try:
        now = int(time.time() * 1000)
        end = now - now % MINUTE
        # 1,234 of 2,000: 617 of every 1,000 requests have a latency.
        dashboard.post("/api/v1/facts", _facts("mixed", "/orders/{id}", MIXED,
                                               lambda i: i % 1000 < 617, end))  # fmt: skip
        dashboard.post("/api/v1/facts", _facts("nginx", "/home", NGINX, lambda i: False, end))
        dashboard.post("/api/v1/facts", _facts("api", "/ping", API, lambda i: True, end))
        _refused(dashboard, [fact(status=999), fact(status=999), fact(status=999)])
        pathless = fact()
        del pathless["path"]
        _refused(dashboard, [pathless])
        _wait_for_requests(dashboard, MIXED + NGINX + API)
        yield dashboard
    finally:
        dashboard.server.__exit__()


def latency(page: Page) -> Locator:
    return page.locator("[data-chart='latency']")


def legend_values(page: Page, chart_id: str) -> list[str]:
    rows = page.locator(f"[data-chart='{chart_id}'] .u-legend .u-series td")
    return [v.strip() for v in rows.all_inner_texts()]


# --- rejections on the overview --------------------------------------------------------


def test_the_overview_says_what_intake_rejected_in_the_last_hour(screen: Screen) -> None:
    page = screen.open("/")
    notice = page.locator("[data-notice='rejected']")
    expect(notice).to_be_visible()
    expect(notice).to_have_text(
        "4 facts, events or spans rejected in the last hour (most often invalid_status from "
        "POST /api/v1/facts: 3). See the status page."
    )
    # Above the charts, where the page is opened.
    box, charts = notice.bounding_box(), page.locator("section.charts").bounding_box()
    assert box and charts and box["y"] + box["height"] <= charts["y"], (box, charts)
    # Every service together: 1,334 of 2,400 requests had a latency.
    expect(latency(page).locator(".chart-note")).to_have_text(
        "Latency known for 1,334 of 2,400 requests (56%); the lines are of those."
    )
    screenshot(page, f"followups-overview-{screen.name}")
    screen.fits()

    link = notice.get_by_role("link", name="See the status page")
    expect(link).to_have_attribute("href", "./?view=status")
    link.click()
    expect(page).to_have_url(f"{screen.base}/?view=status")
    rows = page.locator("table.rejected tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first.locator("td")).to_have_text(
        ["invalid_status from POST /api/v1/factsstatus must be an integer between 100 and 599",
         "3"]
    )  # fmt: skip
    screen.fits()


def test_the_notice_is_hidden_until_something_is_rejected(
    browser: Browser, dashboard: Dashboard
) -> None:
    for width in WIDTHS.values():
        view = Screen(browser, None, dashboard.url, width)
        page = view.page
        sign_in(page, dashboard)
        expect(page.locator("#empty-title")).to_have_text("No data yet")
        wait_for_refresh(page)  # a refresh awaits the status answer too
        notice = page.locator("[data-notice='rejected']")
        expect(notice).to_be_hidden()
        expect(notice).to_have_text("")
        view.context.close()
        assert view.log.problems() == []

    # A sender whose every fact is refused: no data, and the overview says why.
    _refused(dashboard, [fact(status=999)])
    for width in WIDTHS.values():
        view = Screen(browser, None, dashboard.url, width)
        page = view.page
        sign_in(page, dashboard)
        notice = page.locator("[data-notice='rejected']")
        expect(notice).to_have_text(
            "1 fact, event or span rejected in the last hour (invalid_status from "
            "POST /api/v1/facts). See the status page."
        )
        expect(page.locator("#empty-title")).to_have_text("No data yet")
        screenshot(page, f"followups-empty-rejected-{view.name}")
        view.fits()
        view.context.close()
        assert view.log.problems() == []


# --- requests without a latency -----------------------------------------------------------


def test_the_latency_chart_says_how_many_requests_had_a_latency(
    screen: Screen, board: Dashboard
) -> None:
    note = "Latency known for 1,234 of 2,000 requests (62%); the lines are of those."
    for path in ("/?service=mixed", f"/?{MIXED_ENDPOINT}"):
        page = screen.open(path)
        chart = latency(page)
        expect(chart).to_have_attribute("data-latency", "partial")
        expect(chart.locator(".chart-note")).to_have_text(note)
        expect(chart.locator("canvas")).to_be_visible()
        expect(chart.locator(".chart-blank")).to_be_hidden()
        assert any(re.fullmatch(r"\d+(\.\d+)? ms", v) for v in legend_values(page, "latency"))
        screen.fits()
    screenshot(page, f"followups-latency-partial-{screen.name}")

    # The chart data's download has the count beside the percentiles.
    with page.expect_download() as download:
        page.locator("section.charts").get_by_role(
            "button", name="Download the chart data as CSV"
        ).click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert sum(int(r["requests"]) for r in rows) == MIXED
    assert sum(int(r["latency_count"]) for r in rows) == MIXED_KNOWN

    # Every request with a latency: nothing to say.
    page = screen.open("/?service=api")
    expect(latency(page)).to_have_attribute("data-latency", "all")
    expect(latency(page).locator(".chart-note")).to_be_hidden()
    expect(latency(page).locator("canvas")).to_be_visible()


def test_the_latency_chart_says_when_no_request_had_a_latency(screen: Screen) -> None:
    for name, path in (("overview", "/?service=nginx"), ("endpoint", f"/?{NGINX_ENDPOINT}")):
        page = screen.open(path)
        chart = latency(page)
        expect(chart).to_have_attribute("data-latency", "none")
        blank = chart.locator(".chart-blank")
        expect(blank).to_be_visible()
        expect(blank.locator(".chart-blank-title")).to_have_text(NO_LATENCY)
        expect(blank).to_contain_text("None of the 300 requests of this period came with a latency")
        # No empty plot, no axis switch for it, no legend of dashes.
        expect(chart.locator("canvas")).to_be_hidden()
        expect(chart.locator(".u-legend")).to_be_hidden()
        expect(chart.locator(".scale-switch")).to_be_hidden()
        expect(chart.locator(".chart-note")).to_be_hidden()
        # The other charts count these requests as usual.
        for other in ("error-rate", "throughput"):
            expect(page.locator(f"[data-chart='{other}'] canvas")).to_be_visible()
        assert legend_values(page, "throughput")[1] not in ("", "\u2013")
        screen.fits()
        screenshot(page, f"followups-no-latency-{name}-{screen.name}")
