"""The "What changed" panel in Chromium (issue 21): it names the planted cause first,
a click on a chart's spike explains that bucket, and the answer's values are text.

One real ``gravix serve`` with two hours of traffic: the last hour and the same hour a
day earlier, 80 requests a minute (checkout on versions v1 and v2, search on s1). In
the last hour checkout's v2 answers 5xx for five minutes, and for three other minutes
half of search runs a version named like an HTML payload that answers 5xx, from a deploy marker
on (both put in the store directly: intake refuses such a version).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from gravix.storage.local import LocalObjectStore
from tests.dashboard.conftest import TENANT, Dashboard, PageLog, new_context, screenshot, sign_in
from tests.dashboard.conftest import start_dashboard as start
from tests.factories import event, fact
from tests.rollup.conftest import put_raw

pytestmark = pytest.mark.slow

MINUTE = 60_000
DAY = 24 * 60 * MINUTE
HOSTILE = "<img src=x onerror=alert(1)>"
V2_SPIKE = range(20, 25)  # minutes before the end of the range: checkout v2 answers 5xx
HOSTILE_SPIKE = range(45, 48)  # search on version HOSTILE answers 5xx
HOOKS = """
window.__ran = [];
for (const name of ["alert", "confirm", "prompt"]) {
  window[name] = (...args) => { window.__ran.push([name, ...args].join(" ")); };
}
"""


def _minute(start_ms: int, m: int, today: bool) -> list[dict[str, Any]]:
    """A minute's 80 requests; ``m``: minutes before the end of the range."""
    items = []
    for i in range(80):
        checkout = i < 40
        version = ("v2" if i % 2 else "v1") if checkout else "s1"
        if today and not checkout and i % 2 and m in HOSTILE_SPIKE:
            version = HOSTILE
        failing = version == HOSTILE or (today and version == "v2" and m in V2_SPIKE)
        failing = failing or (m * 80 + i) % 97 == 0  # about 1% in the background
        items.append(
            fact(
                event_id=f"{'now' if today else 'before'}-{m}-{i}",
                timestamp=start_ms + i * 750,
                service="checkout" if checkout else "search",
                method="POST" if checkout else "GET",
                path="/cart/{id}/pay" if checkout else "/search",
                version=version,
                status=500 if failing else 200,
            )
        )
    return items


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    dashboard = start(tmp_path_factory.mktemp("explain"))
    try:
        now = int(time.time() * 1000)
        end = now - now % MINUTE
        hostile = []
        for m in range(1, 61):
            items = _minute(end - m * MINUTE, m, today=True)
            hostile += [f for f in items if f["version"] == HOSTILE]
            dashboard.post("/api/v1/facts", [f for f in items if f["version"] != HOSTILE])
            dashboard.post("/api/v1/facts", _minute(end - m * MINUTE - DAY, m, today=False))
        # Intake refuses a version with spaces: the hostile one is put in the store as a
        # store written by an older or buggy version would hold it (as in test_xss.py).
        deploy = event(
            service="search", version=HOSTILE, message=f"deployed {HOSTILE}",
            timestamp=end - HOSTILE_SPIKE[-1] * MINUTE - 10_000,
        )  # fmt: skip
        store = LocalObjectStore(dashboard.data_dir / "store")
        put_raw(store, TENANT, hostile, [deploy], created_ms=now)
        assert dashboard.wait_for_events(1, service="search")
        dashboard.env["END_MS"] = str(end)
        yield dashboard
    finally:
        dashboard.server.__exit__()


def _range(board: Dashboard) -> tuple[int, int]:
    end = int(board.env["END_MS"])
    return end - 60 * MINUTE, end


def _when(board: Dashboard) -> str:
    """The range's query parameters as the page writes them (RFC 3339, colons escaped)."""
    iso = [time.strftime("%Y-%m-%dT%H%%3A%M%%3A%SZ", time.gmtime(t / 1000)) for t in _range(board)]
    return f"from={iso[0]}&to={iso[1]}"


def _open(browser: Browser, board: Dashboard, path: str) -> tuple[Page, PageLog]:
    context = new_context(browser)
    context.add_init_script(HOOKS)
    page = context.new_page()
    log = PageLog(page)
    sign_in(page, board, path)
    expect(page.locator("html")).to_have_attribute("data-charts-drawn", "true")
    return page, log


def _click_bucket(page: Page, board: Dashboard, chart: str, minutes_before_end: int) -> int:
    """Click the bucket of the chart ``chart`` that starts ``minutes_before_end`` minutes
    before the end of the range; its start (epoch ms). The x axis runs from the first
    bucket's start to the last one's (60 one-minute buckets)."""
    start_ms, end_ms = _range(board)
    bucket = end_ms - minutes_before_end * MINUTE
    over = page.locator(f"[data-chart={chart}] .u-over")
    box = over.bounding_box()
    assert box is not None
    x = box["x"] + box["width"] * (bucket - start_ms) / (59 * MINUTE)
    page.mouse.move(x, box["y"] + box["height"] / 2)
    page.mouse.click(x, box["y"] + box["height"] / 2)
    expect(page.locator(f"[data-chart={chart}]")).to_have_attribute("data-selected", str(bucket))
    return bucket


ENDPOINT = "view=endpoint&service=checkout&method=POST&path=%2Fcart%2F%7Bid%7D%2Fpay"


def test_the_panel_names_the_planted_version_first(browser: Browser, board: Dashboard) -> None:
    page, log = _open(browser, board, f"/?{ENDPOINT}&{_when(board)}")
    panel = page.locator("[data-panel=explain]")
    first = panel.locator("[data-finding]").first
    expect(first.locator(".finding-element")).to_have_text("version v2")
    expect(panel.locator("[data-summary]")).to_contain_text("version v2 accounts for")
    expect(panel.locator(".explain-baseline")).to_contain_text("the same window a day earlier")
    expect(first).to_contain_text("% of the change")
    expect(first).to_contain_text("rate ")
    screenshot(page, "explain-endpoint")

    # Another baseline, another measure.
    panel.get_by_label("Against").select_option("previous")
    expect(panel.locator(".explain-baseline")).to_contain_text("the window just before, as long")
    panel.get_by_label("Measure").select_option("client_errors")
    expect(panel.locator("[data-summary]")).to_contain_text("no extra 4xx")
    assert log.problems() == []
    page.context.close()


def test_the_overview_names_both_causes_and_values_are_text(
    browser: Browser, board: Dashboard
) -> None:
    page, log = _open(browser, board, f"/?{_when(board)}")
    panel = page.locator("[data-panel=explain]")
    findings = panel.locator("[data-finding]")
    expect(findings.filter(has_text="version v2")).not_to_have_count(0)
    expect(findings.filter(has_text=f"version {HOSTILE}")).not_to_have_count(0)
    expect(panel.locator("img")).to_have_count(0)
    screenshot(page, "explain-overview")

    # A finding leads to the view of its element (here: its service's).
    link = findings.filter(has_text="version v2").first.locator("a.finding-element")
    expect(link).to_contain_text("checkout")
    link.click()
    expect(page).to_have_url(re.compile(r"[?&]service=checkout(&|$)"))
    expect(page.locator("#view-title")).to_contain_text("checkout")
    assert page.evaluate("window.__ran") == []
    assert log.problems() == []
    page.context.close()


def test_a_click_on_the_spike_explains_its_bucket(browser: Browser, board: Dashboard) -> None:
    page, log = _open(browser, board, f"/?{_when(board)}")
    panel = page.locator("[data-panel=explain]")
    window = panel.locator("[data-explain-window]")
    first = panel.locator("[data-finding]").first
    expect(window).to_have_attribute("data-explain-window", "range")
    expect(first).to_be_visible()

    bucket = _click_bucket(page, board, "error-rate", 46)
    expect(window).to_have_attribute("data-explain-window", f"{bucket}-{bucket + MINUTE}")
    expect(first.locator(".finding-element")).to_contain_text("search")
    expect(panel).to_contain_text(f"version {HOSTILE}")
    expect(panel.locator("img")).to_have_count(0)

    bucket = _click_bucket(page, board, "error-rate", 22)
    expect(window).to_have_attribute("data-explain-window", f"{bucket}-{bucket + MINUTE}")
    expect(first.locator(".finding-element")).to_contain_text("checkout")
    expect(panel.locator("[data-finding]").filter(has_text="version v2")).not_to_have_count(0)
    screenshot(page, "explain-click")
    assert page.evaluate("window.__ran") == []
    assert log.problems() == []
    page.context.close()

    # The endpoint's view: the minute's cause is its version alone.
    page, log = _open(browser, board, f"/?{ENDPOINT}&{_when(board)}")
    panel = page.locator("[data-panel=explain]")
    window = panel.locator("[data-explain-window]")
    expect(panel.locator("[data-finding]").first).to_be_visible()
    bucket = _click_bucket(page, board, "error-rate", 22)
    expect(window).to_have_attribute("data-explain-window", f"{bucket}-{bucket + MINUTE}")
    summary = panel.locator("[data-summary]")
    expect(summary).to_contain_text("version v2 accounts for 100% of the extra 5xx (20 of 20)")

    # A click on the latency chart asks about slow requests; "whole range" lets go.
    _click_bucket(page, board, "latency", 22)
    expect(panel.get_by_label("Measure")).to_have_value("latency")
    expect(panel.locator(".explain-baseline")).to_contain_text("slow: over")
    panel.get_by_role("button", name="Explain the whole range").click()
    expect(window).to_have_attribute("data-explain-window", "range")
    assert log.problems() == []
    page.context.close()


def test_an_error_from_the_api_is_said_in_words(browser: Browser, board: Dashboard) -> None:
    # The page asks only what the API takes; a measure it does not know stands for any
    # refusal (a 400 naming its field), put in the select from outside.
    page, log = _open(browser, board, f"/?{_when(board)}")
    panel = page.locator("[data-panel=explain]")
    expect(panel.locator("[data-finding]").first).to_be_visible()
    page.evaluate(
        """() => {
          const select = document.getElementById("explain-measure");
          select.append(new Option("bogus", "bogus"));
          select.value = "bogus";
          select.dispatchEvent(new Event("change"));
        }"""
    )
    error = panel.locator(".explain-error")
    expect(error).to_contain_text("The Gravix API answered 400")
    expect(error).to_contain_text("measure")
    expect(error).to_contain_text("Request id")
    assert [p for p in log.problems() if "400" not in p] == []
    page.context.close()


def test_a_suspected_faulty_deploy_links_its_marker(browser: Browser, board: Dashboard) -> None:
    page, log = _open(browser, board, f"/?service=search&{_when(board)}")
    panel = page.locator("[data-panel=explain]")
    _click_bucket(page, board, "error-rate", 46)
    note = panel.locator("[data-deploy]")
    expect(note).to_contain_text(f"Suspected faulty deploy: search {HOSTILE}")
    expect(panel.locator("img")).to_have_count(0)

    # Against the time before that deploy, then to its marker.
    note.get_by_role("button", name="Compare with the time before it").click()
    expect(panel.get_by_label("Against")).to_have_value("deploy")
    expect(panel.locator(".explain-baseline")).to_contain_text("before the deploy of search")
    note.get_by_role("link", name="Show its deploy marker").click()
    expect(page).to_have_url(re.compile(r"[?&]service=search&from="))
    expect(page.locator("html")).to_have_attribute("data-charts-drawn", "true")
    expect(page.locator(".marker-deploy")).not_to_have_count(0)
    assert page.evaluate("window.__ran") == []
    assert log.problems() == []
    page.context.close()
