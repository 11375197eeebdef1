"""The dashboard's states in Chromium: no data yet, the API away and back, a session ending."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from gravix.ingest.keys import KeyStore
from tests.dashboard.conftest import (
    Dashboard,
    PageLog,
    new_context,
    screenshot,
    sign_in,
    start_dashboard,
)
from tests.factories import fact

pytestmark = pytest.mark.slow


def test_no_data_yet_shows_a_curl_that_works(browser: Browser, dashboard: Dashboard) -> None:
    context = new_context(browser)
    page = context.new_page()
    log = PageLog(page)
    sign_in(page, dashboard)
    expect(page.get_by_role("heading", name="No data yet")).to_be_visible()
    expect(page.locator("#refresh-label")).to_have_text("refreshes every 1 s · no data yet")
    expect(page.locator(".chart-panel")).to_have_count(0)
    blocks = page.locator(".empty-state pre")
    expect(blocks.nth(0)).to_have_text('gravix keys create --tenant acme --label "first service"')
    curl = blocks.nth(1).inner_text()
    assert curl.startswith(f"curl -sS {dashboard.url}/api/v1/facts \\")  # this server's address
    assert "GRAVIX_KEY" in curl and dashboard.key not in page.content()  # no secret in the page
    screenshot(page, "empty-state")
    if shutil.which("curl") is None:  # make test installs it (APT_PACKAGES)
        if os.environ.get("CI") == "true":
            pytest.fail("curl is not installed")
        pytest.skip("curl is not installed")
    out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30,
                         env={"GRAVIX_KEY": dashboard.key, "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["accepted"] == 1
    # The page looks again by itself and leaves the empty state.
    expect(page.locator("#view-title")).to_have_text("All services")
    expect(page.locator("table.services tbody th")).to_have_text(["checkout"])
    context.close()
    assert log.problems() == []


def test_an_unreachable_api_shows_a_banner_until_it_is_back(
    browser: Browser, dashboard: Dashboard
) -> None:
    dashboard.post("/api/v1/facts", [fact(status=500), fact(), fact(service="search")])
    context = new_context(browser)
    page = context.new_page()
    log = PageLog(page)
    sign_in(page, dashboard)
    expect(page.locator("table.services tbody th")).to_have_count(2)
    banner = page.locator("#error-banner")
    expect(banner).to_have_count(0)

    assert dashboard.server.terminate() == 0, dashboard.server.log_tail()
    expect(banner).to_be_visible()
    expect(banner).to_have_attribute("role", "alert")
    expect(banner).to_contain_text(f"Cannot reach the Gravix API at {dashboard.url}")
    expect(banner).to_contain_text("Retrying every 1 s.")
    expect(page.locator("#refresh-label")).to_contain_text("retrying every 1 s")
    # What was shown stays, marked by the banner as from before the outage.
    expect(page.locator("table.services tbody th")).to_have_count(2)
    screenshot(page, "error-banner")

    dashboard.restart()
    expect(banner).to_have_count(0)
    expect(page.locator("#refresh-label")).to_have_text(
        re.compile(r"^refreshes every 1 s · newest data ")
    )
    expect(page.locator("table.services tbody th")).to_have_count(2)
    context.close()
    assert log.problems() == [], log.console


def test_an_error_answer_is_shown_with_its_request_id(
    browser: Browser, dashboard: Dashboard
) -> None:
    dashboard.post("/api/v1/facts", [fact()])
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, dashboard)
    expect(page.locator("#view-title")).to_have_text("All services")
    # A range the API refuses: the banner says what it answered, with the request id.
    page.goto(f"{dashboard.url}/?from=0&to=63072000000000")
    banner = page.locator("#error-banner")
    expect(banner).to_contain_text("The Gravix API answered 400 bad_request: ")
    expect(banner).to_contain_text(re.compile(r"Request id [0-9a-f]{32}\."))
    page.goto(f"{dashboard.url}/?range=15m")
    expect(page.locator("#view-title")).to_have_text("All services")
    expect(banner).to_have_count(0)
    context.close()


def test_an_ended_session_goes_back_to_sign_in(browser: Browser, dashboard: Dashboard) -> None:
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, dashboard, "/?range=6h")
    expect(page.get_by_role("heading", name="No data yet")).to_be_visible()
    from gravix.api.users import UserStore

    UserStore(dashboard.data_dir / "users.db").set_password("ana", "another long passphrase")
    # The next refresh gets a 401 and the page sends the user to sign in, to come back here.
    expect(page).to_have_url(f"{dashboard.url}/login?next=%2F%3Frange%3D6h")
    page.get_by_label("User name").fill("ana")
    page.get_by_label("Password").fill("a wrong passphrase")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    page.get_by_label("Password").fill("another long passphrase")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{dashboard.url}/?range=6h")
    context.close()


def test_old_data_gets_a_stale_warning(browser: Browser, tmp_path: Path) -> None:
    board = start_dashboard(tmp_path, GRAVIX_DASHBOARD_STALE_SECONDS="30")
    try:
        board.post("/api/v1/facts", [fact(timestamp=int(time.time() * 1000) - 120_000)])
        context = new_context(browser)
        page = context.new_page()
        sign_in(page, board)
        stale = page.locator("#stale-banner")
        expect(stale).to_contain_text(re.compile(r"^Stale data\. The newest fact is 2 min old "))
        expect(stale).to_contain_text("see the Status page.")
        expect(page.locator("#refresh-label")).to_contain_text("newest data 2 min ago")
        screenshot(page, "stale-warning")
        board.post("/api/v1/facts", [fact()])  # fresh data: the warning goes
        expect(stale).to_have_count(0)
        context.close()
    finally:
        board.server.__exit__()


def test_a_user_sees_only_their_tenant(browser: Browser, dashboard: Dashboard) -> None:
    other = KeyStore(dashboard.data_dir / "keys.db").create("globex", "other tenant")[1]
    dashboard.post("/api/v1/facts", [fact(service="checkout")])
    reply = httpx.post(f"{dashboard.url}/api/v1/facts", json=[fact(service="secret-svc")],
                       headers={"Authorization": f"Bearer {other}"})  # fmt: skip
    assert reply.status_code == 202
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, dashboard, "/?range=15m")
    expect(page.locator("table.services tbody th")).to_have_text(["checkout"])
    expect(page.get_by_label("Service", exact=True).locator("option")).to_have_text(
        ["All services", "checkout"]
    )
    assert "secret-svc" not in page.content()
    context.close()
