"""The dashboard over the demo's traffic, in Chromium: what an on-call engineer does with it.

One server for the module holds two hours of the demo's synthetic traffic
(the same model, seed, 5xx spikes and bad deploys as ``make demo``, at a
lower rate) and a slice of yesterday's, so that the day-over-day overlay has
something to show and the week-over-week one does not.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from gravix.demo import DEMO_REGRESSIONS, DEMO_SEED, DEMO_SPIKES
from gravix.loadgen.history import send_history
from gravix.loadgen.traffic import TrafficModel
from tests.dashboard.conftest import (
    Dashboard,
    PageLog,
    new_context,
    screenshot,
    sign_in,
    signed_in_state,
    start_dashboard,
)

pytestmark = pytest.mark.slow

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    board = start_dashboard(tmp_path_factory.mktemp("demo"))
    try:
        now = int(time.time() * 1000)
        model = TrafficModel(
            rate=8, seed=DEMO_SEED, spikes=DEMO_SPIKES, regressions=DEMO_REGRESSIONS
        )
        send_history(board.url, board.key, model, now - 2 * HOUR, now)
        yesterday = TrafficModel(rate=3, seed=DEMO_SEED, spikes=DEMO_SPIKES)
        send_history(board.url, board.key, yesterday, now - DAY - 70 * MINUTE, now - DAY + MINUTE)
        # Service events are served once rolled up: wait for this hour's deploys.
        assert board.wait_for_events(count=10, **{"from": "now-1h"})
        yield board
    finally:
        board.server.__exit__()


@pytest.fixture(scope="module")
def auth_state(browser: Browser, demo: Dashboard) -> dict[str, Any]:
    return signed_in_state(browser, demo)


@dataclass
class Tab:
    page: Page
    log: PageLog
    base: str

    def open(self, path: str = "/") -> None:
        self.page.goto(self.base + path)
        expect(self.page.locator("html")).to_have_attribute("data-refreshed", re.compile(r"\d"))

    def params(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.page.url).query)


@pytest.fixture
def tab(browser: Browser, demo: Dashboard, auth_state: dict[str, Any]) -> Iterator[Tab]:
    context = new_context(browser, storage_state=auth_state)
    page = context.new_page()
    log = PageLog(page)
    yield Tab(page, log, demo.url)
    context.close()
    assert log.problems() == []


def title(page: Page) -> Any:
    return page.locator("#view-title")


def top_endpoints(page: Page) -> Any:
    return page.locator("table.endpoints tbody tr")


def test_sign_in_opens_the_overview_with_the_demo_incidents(
    browser: Browser, demo: Dashboard
) -> None:
    context = new_context(browser)
    page = context.new_page()
    log = PageLog(page)
    sign_in(page, demo)
    expect(title(page)).to_have_text("All services")
    expect(page.locator("html")).to_have_attribute("data-charts-drawn", "true")
    expect(page.locator(".chart-panel canvas")).to_have_count(3)
    services = page.locator("table.services tbody th")
    expect(services).to_have_count(5)
    for name in ("users", "search", "checkout", "inventory", "payments"):
        expect(services.filter(has_text=re.compile(f"^{name}$"))).to_have_count(1)
    # The demo's 5xx spikes are on POST /checkout and POST /payments: they lead the list.
    expect(top_endpoints(page).first).to_be_visible()
    first_two = {top_endpoints(page).nth(i).locator(".endpoint-link").inner_text() for i in (0, 1)}
    assert first_two == {"POST /checkout", "POST /payments"}
    expect(page.locator("#refresh-label")).to_have_text(
        re.compile(r"^refreshes every 1 s · newest data (just now|\d+ s ago)$")
    )
    expect(page.locator("#error-banner")).to_have_count(0)
    expect(page.locator("#stale-banner")).to_have_count(0)
    screenshot(page, "overview")
    context.close()
    assert log.problems() == []


def test_filter_by_service_then_back(tab: Tab) -> None:
    tab.open("/")
    page = tab.page
    page.get_by_label("Service", exact=True).select_option("search")
    expect(page).to_have_url(f"{tab.base}/?service=search")
    expect(title(page)).to_have_text("Service search")
    expect(page.locator("table.services tr[aria-current='true'] th")).to_have_text("search")
    expect(top_endpoints(page).first).to_be_visible()
    for tag in top_endpoints(page).locator(".service-tag").all_inner_texts():
        assert tag == "search"
    page.go_back()
    expect(page).to_have_url(f"{tab.base}/")
    expect(title(page)).to_have_text("All services")
    expect(page.get_by_label("Service", exact=True)).to_have_value("")


def test_range_presets_and_a_custom_range(tab: Tab) -> None:
    tab.open("/")
    page = tab.page
    page.get_by_role("button", name="6h", exact=True).click()
    expect(page).to_have_url(f"{tab.base}/?range=6h")
    expect(page.get_by_role("button", name="6h", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(page.get_by_role("button", name="1h", exact=True)).to_have_attribute(
        "aria-pressed", "false"
    )
    page.get_by_text("Custom range").click()
    page.get_by_label("From", exact=True).fill("2026-01-02T10:00")
    page.get_by_label("To", exact=True).fill("2026-01-02T09:00")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#custom-error")).to_have_text("The start must be before the end.")
    start = datetime.fromtimestamp(time.time() - 3 * 3600, UTC)
    end = datetime.fromtimestamp(time.time() - 600, UTC)
    page.get_by_label("From", exact=True).fill(start.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("To", exact=True).fill(end.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"\?from=.*&to="))
    assert tab.params()["from"] == [start.strftime("%Y-%m-%dT%H:%M:00Z")]
    assert tab.params()["to"] == [end.strftime("%Y-%m-%dT%H:%M:00Z")]
    expect(page.locator("html")).to_have_attribute("data-charts-drawn", "true")
    expect(page.locator("#refresh-label")).to_contain_text("fixed range, not refreshing")
    for preset in ("15m", "1h", "6h", "24h", "7d", "30d"):
        button = page.get_by_role("button", name=preset, exact=True)
        expect(button).to_have_attribute("aria-pressed", "false")


def test_day_over_day_and_week_over_week_overlays(tab: Tab) -> None:
    tab.open("/")
    page = tab.page
    note = page.locator(".compare-note")
    page.get_by_role("button", name="Day before").click()
    expect(page).to_have_url(f"{tab.base}/?compare=1d")
    expect(note).to_have_text(
        "Dashed lines: the same period a day earlier (the error rate: of all services together)."
        " The tables compare with it too."
    )
    legend = page.locator("[data-chart='error-rate'] .u-legend")
    expect(legend).to_contain_text("all services, a day earlier")
    expect(page.locator("[data-chart='latency'] .u-legend")).to_contain_text("p95, a day earlier")
    screenshot(page, "overview-day-over-day")
    page.get_by_role("button", name="Week before").click()
    expect(page).to_have_url(f"{tab.base}/?compare=7d")
    expect(note).to_have_text(
        "No data a week earlier to compare with: the comparison period had no requests, "
        "so there are no dashed lines."
    )
    page.get_by_role("button", name="Off").click()
    expect(page).to_have_url(f"{tab.base}/")
    expect(note).to_be_hidden()
    expect(legend).not_to_contain_text("earlier")


def test_drill_into_the_failing_endpoint_and_back(tab: Tab) -> None:
    tab.open("/?range=6h")
    page = tab.page
    page.locator("table.endpoints").get_by_role("link", name="POST /checkout").click()
    expect(page).to_have_url(re.compile(r"view=endpoint"))
    assert tab.params() == {"view": ["endpoint"], "service": ["checkout"], "method": ["POST"],
                            "path": ["/checkout"], "range": ["6h"]}  # fmt: skip
    expect(title(page)).to_have_text("POST /checkout checkout")
    statuses = page.locator("table.statuses tbody th")
    expect(statuses.filter(has_text="500")).to_have_count(1)
    expect(statuses.filter(has_text="201")).to_have_count(1)
    expect(page.locator(".figures")).to_contain_text("Errors (5xx)")
    expect(page.locator("html")).to_have_attribute("data-charts-drawn", "true")
    screenshot(page, "endpoint")
    page.get_by_role("button", name="24h", exact=True).click()  # looking around in the view
    expect(page).to_have_url(re.compile(r"view=endpoint.*range=24h"))
    page.get_by_role("link", name="← Back").click()  # still back to the overview it came from
    expect(page).to_have_url(f"{tab.base}/?range=6h")
    expect(title(page)).to_have_text("All services")
    # The browser's own back and forward buttons walk the same history.
    page.go_forward()
    expect(title(page)).to_have_text("POST /checkout checkout")
    expect(page).to_have_url(re.compile(r"view=endpoint.*range=6h"))
    page.go_back()
    expect(title(page)).to_have_text("All services")


def test_charts_follow_the_window_size(tab: Tab) -> None:
    tab.open("/")
    page = tab.page
    expect(page.locator("html")).to_have_attribute("data-charts-drawn", "true")
    canvas = page.locator("[data-chart='latency'] canvas")
    panel = page.locator("[data-chart='latency']")
    for width in (700, 1280):  # one column of charts, then three again
        page.set_viewport_size({"width": width, "height": 900})
        for _ in range(50):  # the plot follows on the next animation frames
            box, room = canvas.bounding_box(), panel.bounding_box()
            assert box is not None and room is not None
            fits = box["x"] + box["width"] <= room["x"] + room["width"]
            if fits and box["width"] > 0.8 * room["width"]:
                break
            page.wait_for_timeout(100)
        else:
            raise AssertionError(f"at {width} px the chart is {box}, its panel {room}")


def test_a_bad_deploy_shows_on_the_right_endpoint(tab: Tab, demo: Dashboard) -> None:
    tab.open("/?view=endpoint&service=search&method=GET&path=%2Fsearch&range=6h")
    page = tab.page
    events = page.locator("#main .event")
    expect(events.filter(has_text="deployed search").first).to_be_visible()
    incident = page.locator(".event-incident").filter(has_text="GET /search latency up").first
    expect(incident).to_be_visible()
    bad = incident.locator(".version").inner_text()
    expect(page.locator("table.versions tbody th").filter(has_text=bad)).to_have_count(1)
    # The numbers behind the page: the bad version's p95 is several times its predecessor's.
    body = {"metrics": ["p95"], "dimensions": ["version"], "from": "now-6h", "grain": "all",
            "filters": [{"dimension": "path", "values": ["/search"]},
                        {"dimension": "env", "values": ["prod"]}]}  # fmt: skip
    reply = httpx.post(f"{demo.url}/api/v1/query", json=body,
                       headers={"Authorization": f"Bearer {demo.token}"})  # fmt: skip
    p95 = dict(map(tuple, reply.json()["rows"]))
    before = f"v{100 + (int(bad[1:]) - 101) % 50}"  # versions cycle through v100-v149
    assert p95[bad] > 2.5 * p95[before], p95


def test_hover_shows_exact_values_and_event_details(tab: Tab) -> None:
    tab.open("/?view=endpoint&service=search&method=GET&path=%2Fsearch")
    page = tab.page
    expect(page.locator("html")).to_have_attribute("data-charts-drawn", "true")
    plot = page.locator("[data-chart='latency'] .u-over")
    box = plot.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    value = page.locator("[data-chart='latency'] .u-legend .u-series").nth(2).locator(".u-value")
    expect(value).to_have_text(re.compile(r"^\d+(\.\d+)? m?s$"))
    # The events are markers in the lane under the plot: pointing at one lists its events.
    page.locator("[data-chart='latency'] .marker-lane .marker").first.hover()
    listed = page.locator("[data-chart='latency'] .marker-list li").first
    expect(listed).to_have_text(re.compile(r"^(deploy|incident|config|note)\b.* · search · "))


def test_a_bookmarked_view_reloads_to_the_same_view(tab: Tab) -> None:
    path = "/?view=endpoint&service=payments&method=POST&path=%2Fpayments&range=24h&compare=1d"
    tab.open(path)
    page = tab.page
    expect(title(page)).to_have_text("POST /payments payments")
    page.reload()
    expect(page).to_have_url(tab.base + path)
    expect(title(page)).to_have_text("POST /payments payments")
    expect(page.get_by_role("button", name="24h")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("button", name="Day before")).to_have_attribute("aria-pressed", "true")
    expect(page.locator(".compare-note")).to_be_visible()


def test_keyboard_only(tab: Tab) -> None:
    tab.open("/")
    page = tab.page
    expect(top_endpoints(page).first).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to content")

    def tab_to(text: str) -> None:
        for _ in range(60):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.textContent.trim()") == text:
                return
        raise AssertionError(f"Tab never reached {text!r}")

    tab_to("24h")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{tab.base}/?range=24h")
    expect(top_endpoints(page).first).to_be_visible()
    tab_to("POST /checkout")
    page.keyboard.press("Enter")
    expect(title(page)).to_have_text("POST /checkout checkout")
    tab_to("← Back")
    page.keyboard.press("Enter")
    expect(title(page)).to_have_text("All services")


def test_status_page(tab: Tab) -> None:
    tab.open("/")
    page = tab.page
    page.get_by_role("navigation", name="Views").get_by_role("link", name="Status").click()
    expect(page).to_have_url(f"{tab.base}/?view=status")
    expect(title(page)).to_have_text("Pipeline status")
    figures = page.locator(".view-status")
    expect(figures).to_contain_text("Last rollup")
    expect(figures).to_contain_text("Segments waiting for upload")
    expect(figures.locator(".figure").filter(has_text="Raw facts")).to_contain_text("30 days")
    expect(figures).to_contain_text("None: every stored object could be read.")
    # The demo user is an admin: the node's quarantine of damaged spool segments shows.
    quarantine = figures.locator(".figure").filter(has_text="Damaged segments in quarantine")
    expect(quarantine).to_contain_text("none")
    expect(page.locator("#controls")).to_be_hidden()
    screenshot(page, "status")


def test_a_period_without_data_says_so(tab: Tab) -> None:
    start = int(time.time() * 1000) - 3 * DAY
    tab.open(f"/?from={start}&to={start + HOUR}")
    page = tab.page
    expect(page.locator(".no-data")).to_contain_text("No data for this period.")
    expect(page.locator(".chart-grid")).to_be_hidden()
    expect(page.locator("table.services")).to_have_count(0)
    expect(page.get_by_text("No requests in this period.")).to_have_count(2)
    screenshot(page, "no-data-for-period")


PHONE_VIEWS = {
    "overview": "/",
    "endpoint": "/?view=endpoint&service=checkout&method=POST&path=%2Fcheckout",
    "status": "/?view=status",
}


@pytest.mark.parametrize("name", PHONE_VIEWS)
def test_a_phone_never_scrolls_sideways(
    browser: Browser, demo: Dashboard, auth_state: dict[str, Any], name: str
) -> None:
    path = PHONE_VIEWS[name]
    context = new_context(browser, storage_state=auth_state, viewport={"width": 375, "height": 812},
                          is_mobile=True, has_touch=True)  # fmt: skip
    page = context.new_page()
    page.goto(demo.url + path)
    expect(page.locator("html")).to_have_attribute("data-refreshed", re.compile(r"\d"))
    expect(page.locator("#main .loading")).to_have_count(0)
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    screenshot(page, f"phone-{name}")
    context.close()


def test_the_login_page_fits_a_phone(browser: Browser, demo: Dashboard) -> None:
    context = new_context(browser, viewport={"width": 375, "height": 812}, is_mobile=True)
    page = context.new_page()
    page.goto(demo.url + "/login")
    expect(page.get_by_label("User name")).to_be_focused()
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    screenshot(page, "phone-login")
    context.close()


CONTRAST = """() => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
    }
    return rgb(getComputedStyle(document.documentElement).backgroundColor);
  };
  const worst = [];
  const selector = ["#main h2", "#main h3", "#main td", "#main th", "#main a", ".panel-hint",
    ".refresh-label", ".delta", ".seg", ".marker-key", ".u-legend th", ".u-legend td",
    ".event-message", ".service-tag", ".marker", ".export-button", ".export-label",
    ".scale-label"].join(", ");
  for (const el of document.querySelectorAll(selector)) {
    if (!el.textContent.trim() || !el.offsetParent) continue;
    const fg = lum(rgb(getComputedStyle(el).color)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    if (ratio < 4.5) worst.push(`${el.className || el.tagName}: ${ratio.toFixed(2)}`);
  }
  return worst;
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_light_and_dark_are_readable(
    browser: Browser, demo: Dashboard, auth_state: dict[str, Any], scheme: str
) -> None:
    context = new_context(browser, storage_state=auth_state, color_scheme=scheme)
    page = context.new_page()
    page.goto(demo.url + "/?compare=1d")
    expect(page.locator("table.endpoints")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("data-charts-drawn", "true")
    background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert (background == "rgb(14, 17, 22)") == (scheme == "dark"), background
    assert page.evaluate(CONTRAST) == []  # WCAG AA: 4.5:1 for text
    screenshot(page, f"overview-{scheme}")
    context.close()


def test_sign_out(browser: Browser, demo: Dashboard) -> None:
    context = new_context(browser)  # its own session: signing out ends it for everyone
    page = context.new_page()
    sign_in(page, demo, "/?range=7d")
    expect(page.locator("#who")).to_have_text("ana · acme")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{demo.url}/login")
    page.goto(demo.url + "/?range=7d")
    expect(page).to_have_url(f"{demo.url}/login?next=%2F%3Frange%3D7d")
    # The page shell is public, the data is not: the API refuses without the session.
    assert page.request.get(f"{demo.url}/api/v1/services").status == 401
    context.close()
