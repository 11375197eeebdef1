"""The SLO page in Chromium (issue 21): reached from the nav, it shows each objective of
the SLO rules with its error budget left, the burn-down chart and where the budget went.

One real ``gravix serve`` with the last hour of checkout's traffic, 20 requests a
minute, three of them 5xx in one minute, and two SLO rules made through the API:
checkout 99% available over 7 days, so 1,200 requests allow 12 bad ones and 3 leave
75%; and every service's requests 95% faster than 100 ms over 28 days.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Locator, expect

from tests.dashboard.conftest import (
    PASSWORD,
    USER,
    Dashboard,
    PageLog,
    new_context,
    screenshot,
    sign_in,
)
from tests.dashboard.conftest import start_dashboard as start
from tests.factories import fact

pytestmark = pytest.mark.slow

MINUTE = 60_000
RULE = {"kind": "slo", "name": "checkout availability", "objective": "availability",
        "target": 0.99, "period": "7d",
        "filters": [{"dimension": "service", "values": ["checkout"]}]}  # fmt: skip
LATENCY = {"kind": "slo", "name": "fast enough", "objective": "latency", "target": 0.95,
           "latency_ms": 100, "period": "28d"}  # fmt: skip
SEARCH = {"kind": "slo", "name": "search availability", "objective": "availability",
          "target": 0.999, "period": "30d",
          "filters": [{"dimension": "service", "values": ["search"]}]}  # fmt: skip


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    dashboard = start(tmp_path_factory.mktemp("slo"))
    try:
        now = int(time.time() * 1000)
        end = now - now % MINUTE
        items = [
            fact(event_id=f"slo-{m}-{i}", timestamp=end - m * MINUTE + i * 2_000,
                 version="v2" if i % 2 else "v1",
                 status=500 if m == 30 and i < 6 and i % 2 else 200)
            for m in range(1, 61)
            for i in range(20)
        ]  # fmt: skip
        dashboard.post("/api/v1/facts", items)
        with httpx.Client(base_url=dashboard.url, timeout=30) as client:
            reply = client.post("/api/v1/login", json={"name": USER, "password": PASSWORD})
            headers = {"X-CSRF-Token": reply.json()["csrf_token"]}
            for rule in (RULE, LATENCY, SEARCH):
                reply = client.post("/api/v1/alerts/rules", json=rule, headers=headers)
                assert reply.status_code == 201, reply.text
        yield dashboard
    finally:
        dashboard.server.__exit__()


def test_the_page_shows_the_objective_and_its_budget(browser: Browser, board: Dashboard) -> None:
    context = new_context(browser)
    page = context.new_page()
    log = PageLog(page)
    sign_in(page, board)
    page.get_by_role("navigation", name="Views").get_by_role("link", name="SLOs").click()
    expect(page).to_have_url(f"{board.url}/?view=slo")
    expect(page.locator("#controls")).to_be_hidden()

    card = page.locator("[data-slo='checkout availability']")
    expect(card.locator("h3")).to_contain_text("Service checkout")
    expect(card.locator("[data-objective]")).to_have_text(
        "99% of requests answered without a 5xx, over 7 days"
    )

    def figure(name: str) -> Locator:
        return card.locator(".figure").filter(has=page.get_by_text(name, exact=True))

    expect(figure("Error budget left")).to_contain_text("75.0%")
    expect(figure("Bad requests")).to_contain_text("3 of 1,200")
    expect(figure("Budget")).to_contain_text("12 bad requests")
    expect(card.locator(".slo-chart .u-over")).to_have_count(1)

    # Where it went: the one endpoint, the one version, each a link or a name.
    endpoint = card.locator("[data-spent=endpoint] tbody tr")
    expect(endpoint).to_have_count(1)
    expect(endpoint).to_contain_text("POST /cart/{id}/pay")
    expect(card.locator("[data-spent=version] tbody tr")).to_contain_text("v2")
    # A rule of every service: under "All services", none of its requests slow.
    latency = page.locator("[data-slo='fast enough']")
    expect(latency.locator("h3")).to_contain_text("All services")
    expect(latency.locator("[data-objective]")).to_have_text(
        "95% of requests faster than 100 ms, over 28 days"
    )
    expect(latency.locator(".figure").first).to_contain_text("100.0%")
    expect(latency.locator("[data-spent=endpoint]")).to_contain_text("No bad requests.")
    screenshot(page, "slo")
    endpoint.get_by_role("link").click()
    expect(page).to_have_url(
        f"{board.url}/?view=endpoint&service=checkout&method=POST&path=%2Fcart%2F%7Bid%7D%2Fpay"
    )
    assert log.problems() == []
    context.close()


def test_a_service_has_its_own_page(browser: Browser, board: Dashboard) -> None:
    """?view=slo&service=checkout: checkout's objectives and those of every service."""
    context = new_context(browser)
    page = context.new_page()
    log = PageLog(page)
    sign_in(page, board)
    page.goto(f"{board.url}/?view=slo")
    expect(page.locator("[data-slo]")).to_have_count(3)
    services = page.get_by_role("navigation", name="SLOs of a service")
    services.get_by_role("link", name="checkout").click()
    expect(page).to_have_url(f"{board.url}/?view=slo&service=checkout")
    expect(page.locator("#view-title")).to_have_text("SLOs of checkout")
    expect(page.locator("[data-slo='checkout availability']")).to_have_count(1)
    expect(page.locator("[data-slo='fast enough']")).to_have_count(1)
    expect(page.locator("[data-slo='search availability']")).to_have_count(0)
    expect(services.get_by_role("link", name="checkout")).to_have_attribute("aria-current", "page")
    services.get_by_role("link", name="All services").click()
    expect(page).to_have_url(f"{board.url}/?view=slo")
    expect(page.locator("[data-slo]")).to_have_count(3)
    page.goto(f"{board.url}/?view=slo&service=payments")
    expect(page.locator(".slo-list")).to_contain_text("No SLO of service payments alone.")
    expect(page.locator("[data-slo]")).to_have_count(1)  # the objective of every service
    assert log.problems() == []
    context.close()
