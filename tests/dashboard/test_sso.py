"""Single sign-on in Chromium: "Sign in with SSO", Dex's own login page, back to the dashboard.

A real ``gravix serve`` signs in with a real Dex on loopback
(tests/oidc_provider.py). Two tenants send facts; a user signed in through
Dex lands in the tenant its e-mail domain maps to, with the role its address
maps to, and the dashboard shows that tenant's services only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from gravix.api.auth import token_store
from gravix.ingest.keys import KeyStore
from tests.dashboard.conftest import SERVER_ENV, PageLog, new_context, screenshot
from tests.factories import fact
from tests.oidc_provider import PASSWORD, DexProvider, free_port, require_dex
from tests.procs import ServerProcess

pytestmark = pytest.mark.slow

SSO_SETTINGS = {
    "tenant_claim": "email",
    "tenant_map": '{"@acme.example": "acme", "@globex.example": "globex"}',
    "role_claim": "email",
    "role_map": '{"ana@acme.example": "admin"}',
    "required_tenants": '["acme"]',
}
SERVICES = {"acme": "storefront", "globex": "ledger"}


class SsoBoard:
    def __init__(self, server: ServerProcess, tokens: dict[str, str]) -> None:
        self.server = server
        self.url = server.url
        self.tokens = tokens

    def services(self, tenant: str) -> list[str]:
        headers = {"Authorization": f"Bearer {self.tokens[tenant]}"}
        reply = httpx.get(f"{self.url}/api/v1/services", headers=headers, timeout=10)
        assert reply.status_code == 200, reply.text
        return [s["name"] for s in reply.json()["services"]]


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SsoBoard]:
    require_dex()
    data_dir = tmp_path_factory.mktemp("sso-board") / "data"
    data_dir.mkdir()
    keys, tokens = {}, {}
    for tenant in SERVICES:
        keys[tenant] = KeyStore(data_dir / "keys.db").create(tenant, "sso tests")[1]
        tokens[tenant] = token_store(data_dir / "tokens.db").create(tenant, "sso tests")[1]
    port = free_port()
    with DexProvider(f"http://127.0.0.1:{port}/auth/oidc/callback") as dex:
        env = {**SERVER_ENV, **dex.gravix_env(**SSO_SETTINGS)}
        with ServerProcess(data_dir, env=env, port=port) as server:
            sso = SsoBoard(server, tokens)
            for tenant, service in SERVICES.items():
                items = [fact(service=service, event_id=f"{tenant}-{i}") for i in range(20)]
                reply = httpx.post(f"{server.url}/api/v1/facts", json=items,
                                   headers={"Authorization": f"Bearer {keys[tenant]}"})  # fmt: skip
                assert reply.status_code == 202, reply.text
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(
                sso.services(t) == [s] for t, s in SERVICES.items()
            ):
                time.sleep(0.3)
            assert all(sso.services(t) == [s] for t, s in SERVICES.items())
            yield sso


def sso_sign_in(page: Page, board: SsoBoard, email: str) -> None:
    """From the dashboard, through "Sign in with SSO" and Dex's login page, back to it."""
    page.goto(board.url + "/")
    expect(page).to_have_url(f"{board.url}/login?next=%2F")
    link = page.get_by_role("link", name="Sign in with SSO")
    expect(link).to_be_visible()
    link.click()
    # Dex's own page, on its own port.
    expect(page.locator("#login")).to_be_visible()
    assert "/dex/auth/local/login" in page.url
    page.locator("#login").fill(email)
    page.locator("#password").fill(PASSWORD)
    page.locator("#submit-login").click()
    expect(page).to_have_url(board.url + "/")


def test_sign_in_with_sso_through_dex_shows_the_tenant_s_data_only(
    browser: Browser, board: SsoBoard
) -> None:
    context = new_context(browser)
    page = context.new_page()
    log = PageLog(page)
    sso_sign_in(page, board, "ana@acme.example")
    expect(page.locator("#who")).to_have_text("ana@acme.example · acme")
    service = page.locator("#service")
    expect(service.locator("option", has_text="storefront")).to_have_count(1)
    expect(service.locator("option", has_text="ledger")).to_have_count(0)
    me: dict[str, Any] = page.evaluate(
        "fetch('/api/v1/me', {credentials: 'same-origin'}).then((r) => r.json())"
    )
    assert (me["tenant"], me["role"]) == ("acme", "admin")
    screenshot(page, "sso-signed-in")
    # Signing out ends the session like any other.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{board.url}/login", timeout=10_000)
    context.close()
    assert log.problems() == []


def test_a_user_of_another_tenant_sees_its_own_services(browser: Browser, board: SsoBoard) -> None:
    context = new_context(browser)
    page = context.new_page()
    sso_sign_in(page, board, "bo@globex.example")
    expect(page.locator("#who")).to_have_text("bo@globex.example · globex")
    service = page.locator("#service")
    expect(service.locator("option", has_text="ledger")).to_have_count(1)
    expect(service.locator("option", has_text="storefront")).to_have_count(0)
    context.close()


def test_the_login_page_offers_sso_beside_the_password(browser: Browser, board: SsoBoard) -> None:
    context = new_context(browser)
    page = context.new_page()
    page.goto(board.url + "/login")
    expect(page.get_by_role("link", name="Sign in with SSO")).to_be_visible()
    expect(page.get_by_label("User name")).to_be_visible()
    path = screenshot(page, "login-with-sso")
    assert Path(path).is_file()
    context.close()
