"""The dashboard in a real browser: Playwright driving Debian's Chromium.

Never ``playwright install``: the browser is the ``chromium`` Debian package
(``make test`` installs it through ``apt-deps``). Without it these tests are
skipped on a developer's machine and fail under ``CI=true``.

Servers are real ``gravix serve`` processes on 127.0.0.1 (tests/procs.py),
with a user, an ingest key and short intervals, so that facts are rolled up
and the page refreshes within a second or two. Screenshots of the main views
go to ``test-artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gravix.api.auth import token_store
from gravix.api.users import UserStore
from gravix.ingest.keys import KeyStore
from tests.procs import ServerProcess

pytest.importorskip("playwright", reason="playwright is in the dev extra: make setup")
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = Path(__file__).parents[2] / "test-artifacts" / "screenshots"
TENANT = "acme"
USER = "ana"
PASSWORD = "a long passphrase"
REFRESH_SECONDS = 1
# Short intervals: facts uploaded, rolled up (events appear) and refreshed within seconds.
SERVER_ENV = {
    "GRAVIX_DASHBOARD_REFRESH_SECONDS": str(REFRESH_SECONDS),
    "GRAVIX_SEGMENT_MAX_AGE_SECONDS": "1",
    "GRAVIX_UPLOAD_INTERVAL_SECONDS": "0.5",
    "GRAVIX_ROLLUP_INTERVAL_SECONDS": "2",
    "GRAVIX_OPERATOR_TENANT": TENANT,  # the test admin runs the node, as in the demo
}
DATA_TIMEOUT_MS = 20_000  # how long a test waits for data to show up
WIDTHS = {"desktop": 1366, "phone": 375}  # the widths chart tests run at

expect.set_options(timeout=DATA_TIMEOUT_MS)


@dataclass
class Dashboard:
    """A running ``gravix serve`` with user ``ana`` and an ingest key of tenant acme."""

    data_dir: Path
    server: ServerProcess
    key: str
    token: str
    env: dict[str, str] = field(default_factory=dict)
    stopped: list[ServerProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return int(self.server.url.rsplit(":", 1)[1])

    def post(self, path: str, items: list[dict[str, Any]]) -> None:
        reply = httpx.post(
            f"{self.url}{path}", json=items, headers={"Authorization": f"Bearer {self.key}"}
        )
        assert reply.status_code == 202, reply.text

    def get(self, path: str, **params: Any) -> Any:
        reply = httpx.get(
            f"{self.url}{path}", params=params, headers={"Authorization": f"Bearer {self.token}"}
        )
        assert reply.status_code == 200, reply.text
        return reply.json()

    def wait_for_events(self, count: int = 1, timeout: float = 30.0, **params: Any) -> list[Any]:
        """Service events reach /api/v1/events once rolled up: wait for ``count`` of them."""
        deadline = time.monotonic() + timeout
        while True:
            events: list[Any] = self.get("/api/v1/events", **params)["events"]
            if len(events) >= count or time.monotonic() > deadline:
                return events
            time.sleep(0.2)

    def restart(self) -> None:
        """Stop (SIGTERM) and start again on the same port, with the same data."""
        port = self.port
        if self.server.proc is not None and self.server.proc.poll() is None:
            assert self.server.terminate() == 0, self.server.log_tail()
        self.stopped.append(self.server)
        self.server = ServerProcess(self.data_dir, env=self.env, port=port).start()


def start_dashboard(root: Path, **env: str) -> Dashboard:
    """A server on a new data dir under ``root``; ``env`` adds or overrides GRAVIX_* settings."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    key = KeyStore(data_dir / "keys.db").create(TENANT, "web tests")[1]
    token = token_store(data_dir / "tokens.db").create(TENANT, "web tests")[1]
    UserStore(data_dir / "users.db").create(USER, TENANT, "admin", PASSWORD)
    server = ServerProcess(data_dir, env={**SERVER_ENV, **env}).start()
    return Dashboard(data_dir, server, key, token, env={**SERVER_ENV, **env})


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    """A fresh server with no data (one per test)."""
    board = start_dashboard(tmp_path)
    try:
        yield board
    finally:
        board.server.__exit__()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (Debian's chromium; `make test` installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        yield chromium
        chromium.close()


class PageLog:
    """What the page said: console messages, uncaught errors, dialogs."""

    def __init__(self, page: Page) -> None:
        self.console: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def problems(self) -> list[str]:
        """Errors a healthy page should not have (a failed fetch during an outage is fine)."""
        quiet = ("Failed to load resource", "net::ERR_CONNECTION_REFUSED", "ERR_EMPTY_RESPONSE")
        console = [
            m for m in self.console if m.startswith("error") and not any(q in m for q in quiet)
        ]
        return self.errors + console + self.dialogs


def new_context(browser: Browser, **options: Any) -> BrowserContext:
    settings: dict[str, Any] = {
        "viewport": {"width": 1280, "height": 900},
        "timezone_id": "UTC",
        "locale": "en-GB",
        **options,
    }
    context = browser.new_context(**settings)
    context.set_default_timeout(DATA_TIMEOUT_MS)
    return context


def sign_in(page: Page, board: Dashboard, path: str = "/") -> None:
    """Open ``path``, get sent to the login page, sign in, land back on ``path``."""
    page.goto(board.url + path)
    expect(page).to_have_url(f"{board.url}/login?next={_quote(path)}")
    page.get_by_label("User name").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(board.url + path)


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="")


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_for_refresh(page: Page) -> None:
    """Until the page has finished a refresh after now (the refresh counter moves on)."""
    done = page.locator("html").get_attribute("data-refreshed") or "0"
    expect(page.locator("html")).not_to_have_attribute("data-refreshed", done)


def signed_in_state(browser: Browser, board: Dashboard) -> dict[str, Any]:
    """The storage state (session cookie) of a user signed in to ``board``."""
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, board)
    state: dict[str, Any] = context.storage_state()
    context.close()
    return state


class Screen:
    """A page at one width, signed in if given ``auth``; the phone is a touch screen."""

    def __init__(self, browser: Browser, auth: dict[str, Any] | None, base: str, width: int):
        phone = width < 600
        self.context = new_context(
            browser, storage_state=auth, viewport={"width": width, "height": 900},
            is_mobile=phone, has_touch=phone,
        )  # fmt: skip
        self.page = self.context.new_page()
        self.log = PageLog(self.page)
        self.base = base
        self.phone = phone
        self.name = f"phone-{width}" if phone else f"desktop-{width}"

    def open(self, path: str) -> Page:
        """Open ``path`` and wait until its charts are drawn and its tables filled."""
        self.page.goto(self.base + path)
        expect(self.page.locator("html")).to_have_attribute("data-charts-drawn", "true")
        expect(self.page.locator("#main .loading")).to_have_count(0)
        return self.page

    def fits(self) -> None:
        """No sideways scroll."""
        widths = self.page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], widths


# For modules that define a module-scoped ``board`` (a Dashboard with their data):
# a signed-in Screen at each of WIDTHS, whose page logged no problem.
@pytest.fixture(scope="module")
def auth_state(browser: Browser, board: Dashboard) -> dict[str, Any]:
    return signed_in_state(browser, board)


@pytest.fixture(params=list(WIDTHS))
def screen(
    request: pytest.FixtureRequest, browser: Browser, board: Dashboard, auth_state: dict[str, Any]
) -> Iterator[Screen]:
    view = Screen(browser, auth_state, board.url, WIDTHS[request.param])
    yield view
    view.context.close()
    assert view.log.problems() == []
