"""The dashboard's alerts in Chromium (issue 19): the rule editor with its backtest,
the Alerts view, the overview's notice and the charts' markers, who sees which
controls, and rule names shown as text.

One real ``gravix serve`` evaluating every second, with an hour of stored traffic
that had a 5xx spike (for the backtest), a webhook channel on a real receiver on
loopback, and live traffic whose 5xx spike the rule made in the form catches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from gravix.api.users import UserStore
from tests.alerts.receivers import Receiver
from tests.dashboard.conftest import TENANT, Dashboard, PageLog, new_context, screenshot
from tests.dashboard.conftest import start_dashboard as start
from tests.factories import fact

pytestmark = pytest.mark.slow

MINUTE = 60_000
EDITOR, VIEWER, PASSWORD = "eddie", "vic", "another long passphrase"
RULE = "checkout errors"
HOSTILE = "<img src=x onerror=alert(1)>"
PATH = "/cart/{id}/pay"
# The stored hour: 20 requests a minute, 10 of them 5xx from 30 to 25 minutes ago.
SPIKE_MINUTES = range(25, 30)


class Traffic:
    """Live traffic of checkout: 20 facts every 0.2 s, ``errors`` of them 5xx."""

    def __init__(self, board: Dashboard) -> None:
        self.board, self.errors = board, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        auth = {"Authorization": f"Bearer {self.board.key}"}
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(0.2):
                facts = [fact(status=500 if i < self.errors else 200) for i in range(20)]
                client.post(f"{self.board.url}/api/v1/facts", json=facts, headers=auth)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _history(end: int) -> list[dict[str, Any]]:
    items = []
    for m in range(1, 61):
        start_ms = end - m * MINUTE
        errors = 10 if m in SPIKE_MINUTES else 0
        items += [
            fact(event_id=f"past-{m}-{i}", timestamp=start_ms + i * 3_000,
                 status=500 if i < errors else 200)
            for i in range(20)
        ]  # fmt: skip
    return items


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Dashboard]:
    dashboard = start(tmp_path_factory.mktemp("alerts"), GRAVIX_ALERT_INTERVAL_SECONDS="1")
    try:
        users = UserStore(dashboard.data_dir / "users.db")
        users.create(EDITOR, TENANT, "editor", PASSWORD)
        users.create(VIEWER, TENANT, "viewer", PASSWORD)
        now = int(time.time() * 1000)
        dashboard.post("/api/v1/facts", _history(now - now % MINUTE))
        with Session(dashboard, EDITOR) as editor:
            editor.write("PUT", "/api/v1/alerts/channels/hook",
                         {"kind": "webhook", "name": "hook", "url": receiver.url})  # fmt: skip
        yield dashboard
    finally:
        dashboard.server.__exit__()


class Session:
    """A user's session over HTTP (cookie and CSRF token), as the dashboard holds one."""

    def __init__(self, board: Dashboard, name: str) -> None:
        self.client = httpx.Client(base_url=board.url, timeout=30)
        reply = self.client.post("/api/v1/login", json={"name": name, "password": PASSWORD})
        assert reply.status_code == 200, reply.text
        self.csrf = reply.json()["csrf_token"]

    def write(self, method: str, path: str, body: Any) -> Any:
        reply = self.client.request(method, path, json=body, headers={"X-CSRF-Token": self.csrf})
        assert reply.status_code in (200, 201), reply.text
        return reply.json()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()


def signed_in(
    browser: Browser, board: Dashboard, name: str, path: str, width: int = 1280
) -> tuple[BrowserContext, Page, PageLog]:
    phone = width < 600
    context = new_context(
        browser, viewport={"width": width, "height": 900}, is_mobile=phone, has_touch=phone
    )
    page = context.new_page()
    log = PageLog(page)
    page.goto(board.url + path)
    expect(page).to_have_url(f"{board.url}/login?next={quote(path, safe='')}")
    page.get_by_label("User name", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(board.url + path)
    return context, page, log


def test_an_editor_backtests_saves_and_sees_the_rule_fire(
    browser: Browser, board: Dashboard, receiver: Receiver
) -> None:
    context, page, log = signed_in(browser, board, EDITOR, "/")
    page.get_by_role("navigation", name="Views").get_by_role("link", name="Alerts").click()
    expect(page).to_have_url(f"{board.url}/?view=alerts")
    expect(page.locator("[data-panel=now] .empty-note")).to_contain_text("Nothing is firing")
    page.get_by_role("link", name="New rule").click()
    expect(page).to_have_url(f"{board.url}/?view=alerts&rule=new")

    page.get_by_label("Name", exact=True).fill(RULE)
    page.get_by_label("Metric", exact=True).select_option("error_rate")
    expect(page.locator("#rule-threshold-hint")).to_have_text("A share from 0 to 1: 0.05 is 5%.")
    page.get_by_label("Threshold", exact=True).fill("0.2")
    page.get_by_label("Over the last", exact=True).fill("1m")
    page.get_by_label("For", exact=True).fill("0s")
    page.get_by_label("At least", exact=True).fill("10")
    page.locator("#rule-service").fill("checkout")
    page.get_by_role("checkbox", name="hook").check()
    page.locator("#backtest-days").select_option("1")
    page.get_by_role("button", name="Backtest").click()

    backtest = page.locator("section.backtest")
    expect(backtest).to_have_attribute("data-state", "done")
    expect(backtest.locator(".backtest-summary")).to_contain_text(
        "Over the last day this rule would have fired 1 time and sent"
    )
    expect(backtest.locator(".backtest-chart canvas")).to_be_visible()
    expect(backtest.locator(".backtest-chart .u-legend")).to_contain_text("threshold")
    rows = backtest.locator("table.backtest-list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.locator("th")).to_have_text("all matching requests")
    screenshot(page, "alerts-editor-backtest")

    page.get_by_role("button", name="Create rule").click()
    expect(page).to_have_url(f"{board.url}/?view=alerts")
    expect(page.locator(".flash")).to_have_text(f"Rule “{RULE}” created.")
    rule_row = page.locator("table.alert-rules tbody tr").filter(has_text=RULE)
    expect(rule_row.locator("td.condition")).to_contain_text(
        "error_rate > 20.0% over 1m; at least 10 requests; where service = checkout"
    )
    expect(rule_row).to_contain_text("API")

    traffic = Traffic(board)
    try:
        traffic.errors = 12
        firing = page.locator("table.alerts-now tbody tr[data-state=firing]")
        expect(firing).to_have_count(1, timeout=60_000)
        expect(firing.locator("th")).to_contain_text(RULE)
        expect(firing.locator("td.num")).to_contain_text("%")
        expect(rule_row.locator("td.states")).to_have_text("1 firing")
        expect(page.locator("table.history tbody tr[data-to=firing]").first).to_contain_text(RULE)
        sent = page.locator("table.deliveries tbody tr[data-status=sent]")
        expect(sent.first).to_contain_text("hook")
        expect(page.locator("[data-panel=evaluation]")).to_contain_text("No rule failed.")
        screenshot(page, "alerts-view-firing")

        # Silence it from the firing row, then end the silence.
        firing.get_by_role("button", name="Silence").click()
        form = page.get_by_role("form", name="Silence an alert")
        # Only the rule to match: a rule without group_by has one series, of no dimension.
        expect(form.get_by_role("checkbox")).to_have_count(1)
        form.get_by_label("Why", exact=True).fill("deploying a fix")
        form.get_by_role("button", name="Silence").click()
        silence = page.locator("table.silences tbody tr[data-active=true]")
        expect(silence).to_contain_text(f"rule = {RULE}")
        expect(silence).to_contain_text("deploying a fix")
        expect(page.locator(".flash")).to_contain_text("Silenced until")
        silence.get_by_role("button", name="End now").click()
        expect(page.locator("table.silences tbody tr[data-active=false]")).to_contain_text("ended")

        # The overview: the notice of what fires, and the transition on the error-rate chart.
        page.get_by_role("navigation", name="Views").get_by_role("link", name="Overview").click()
        notice = page.locator("[data-notice=alerts]")
        expect(notice).to_contain_text(f"1 alert firing: {RULE} since")
        marker = page.locator("[data-chart=error-rate] .marker-lane .marker-firing")
        expect(marker.first).to_be_visible()
        marker.first.click()
        listed = page.locator("[data-chart=error-rate] .marker-list li.event-alert-firing")
        expect(listed.first).to_contain_text(f"alert firing · {RULE} ·")
        expect(page.locator("#main .loading")).to_have_count(0)
        screenshot(page, "alerts-overview-firing")
        notice.get_by_role("link", name="See the alerts").click()
        expect(page).to_have_url(f"{board.url}/?view=alerts")
    finally:
        traffic.stop()
    context.close()
    assert log.problems() == []


def test_an_api_error_shows_next_to_the_field_it_names(browser: Browser, board: Dashboard) -> None:
    context, page, log = signed_in(browser, board, EDITOR, "/?view=alerts&rule=new")
    page.get_by_label("Name", exact=True).fill("needs a real window")
    window = page.get_by_label("Over the last", exact=True)
    window.fill("5 minutes")
    page.get_by_role("button", name="Create rule").click()
    error = page.locator("[data-field=window] .field-error")
    expect(error).to_contain_text("'5 minutes' is not a duration")
    expect(error).to_contain_text("request id")
    expect(window).to_have_attribute("aria-invalid", "true")
    expect(window).to_be_focused()
    expect(page.locator(".rule-form > .form-error")).to_have_text("")
    # The backtest's body names rule.window: the same field.
    page.get_by_role("button", name="Backtest").click()
    expect(error).to_contain_text("'5 minutes' is not a duration")
    expect(page).to_have_url(f"{board.url}/?view=alerts&rule=new")
    screenshot(page, "alerts-editor-field-error")
    context.close()
    assert log.problems() == []


def test_rule_names_render_as_text_and_delete_asks_first(
    browser: Browser, board: Dashboard
) -> None:
    with Session(board, EDITOR) as editor:
        rule = editor.write("POST", "/api/v1/alerts/rules", {
            "kind": "threshold", "name": HOSTILE, "description": f"desc {HOSTILE}",
            "metric": "p95", "threshold": 5000,
            "filters": [{"dimension": "path", "values": [HOSTILE]}],
        })  # fmt: skip
    context, page, log = signed_in(browser, board, EDITOR, "/?view=alerts")
    row = page.locator(f"table.alert-rules tbody tr[data-rule='{rule['id']}']")
    expect(row.get_by_role("link", name=HOSTILE, exact=True)).to_be_visible()
    expect(row).to_contain_text(f"desc {HOSTILE}")
    expect(row.locator("td.condition")).to_contain_text(f"where path = {HOSTILE}")
    assert page.locator("#main img").count() == 0
    screenshot(page, "alerts-hostile-names")

    row.get_by_role("link", name=HOSTILE, exact=True).click()
    expect(page.locator("#view-title")).to_have_text(f"Alert rule {HOSTILE}")
    expect(page.get_by_label("Name", exact=True)).to_have_value(HOSTILE)
    expect(page.locator("#rule-path")).to_have_value(HOSTILE)
    page.get_by_role("link", name="← Alerts").click()

    row.get_by_role("button", name=f"Delete rule {HOSTILE}").click()
    confirm = page.get_by_role("group", name="Confirm the deletion")
    expect(confirm).to_contain_text(f"Delete the rule {HOSTILE}?")
    confirm.get_by_role("button", name="Cancel").click()
    expect(row).to_have_count(1)
    row.get_by_role("button", name=f"Delete rule {HOSTILE}").click()
    confirm.get_by_role("button", name="Delete rule").click()
    expect(row).to_have_count(0)
    expect(page.locator(".flash")).to_have_text(f"Rule “{HOSTILE}” deleted.")
    assert page.locator("#main img").count() == 0
    context.close()
    assert log.problems() == []


@pytest.mark.parametrize("width", [1366, 375])
def test_a_viewer_sees_no_edit_controls(browser: Browser, board: Dashboard, width: int) -> None:
    with Session(board, EDITOR) as editor:
        editor.write("POST", "/api/v1/alerts/rules", {
            "kind": "slo", "name": f"availability {width}", "objective": "availability",
            "target": 0.999, "period": "30d",
        })  # fmt: skip
    context, page, log = signed_in(browser, board, VIEWER, "/?view=alerts", width)
    rules = page.locator("table.alert-rules tbody tr")
    slo = rules.filter(has_text=f"availability {width}")
    expect(slo.locator("td.condition")).to_have_text(
        "99.9% of requests without a 5xx over 30d, burn-rate alerts"
    )
    hint = page.locator("[data-panel=rules] .panel-hint")
    expect(hint).to_have_text("Editors and admins change rules.")
    expect(page.get_by_role("link", name="New rule")).to_have_count(0)
    expect(page.locator("#main button")).to_have_count(0)
    expect(rules.locator("a")).to_have_count(0)
    sizes = "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    widths = page.evaluate(sizes)
    assert widths[0] <= widths[1], widths
    screenshot(page, f"alerts-viewer-{width}")
    page.goto(f"{board.url}/?view=alerts&rule=new")
    note = page.locator(".view-rule .panel-hint")
    expect(note).to_have_text("Only editors and admins change alert rules.")
    expect(page.locator("#main form, #main input, #main select, #main button")).to_have_count(0)
    context.close()
    assert log.problems() == []
