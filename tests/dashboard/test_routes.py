"""The dashboard's routes in process: files, headers, config.js, and what is not served."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import httpx
import pytest

from gravix.api.app import create_api
from gravix.config import Settings, load_settings
from gravix.dashboard.headers import content_security_policy
from gravix.dashboard.routes import SOURCE_VENDOR_DIR, VENDOR_FILES, dashboard_routes
from gravix.storage.local import LocalObjectStore

PAGES = [
    "/", "/login", "/config.js", "/static/js/app.js", "/static/css/dashboard.css",
    "/static/favicon.svg", "/vendor/uplot/uPlot.esm.js", "/vendor/uplot/uPlot.min.css",
]  # fmt: skip
NOT_SERVED = [
    "/static/../routes.py", "/static/js/../../routes.py", "/static/index.html", "/static/nope.js",
    "/vendor/uplot/package.json", "/vendor/uplot/dist/uPlot.esm.js",
    "/node_modules/uplot/dist/uPlot.esm.js", "/favicon.ico",
]  # fmt: skip


def _client(tmp_path: Path, **settings: object) -> httpx.AsyncClient:
    config: Settings = load_settings(None, data_dir=tmp_path, **settings)
    app = create_api(config, LocalObjectStore(tmp_path / "store"), dashboard_routes(config))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gravix.test")


@pytest.fixture(autouse=True)
def _chart_library() -> None:
    if not all((SOURCE_VENDOR_DIR / rel).is_file() for rel in VENDOR_FILES.values()):
        message = "web/node_modules is not installed: make web (make test does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.parametrize("path", PAGES)
async def test_every_file_is_served_without_a_session_with_the_security_headers(
    tmp_path: Path, path: str
) -> None:
    async with _client(tmp_path) as client:
        reply = await client.get(path)
    assert reply.status_code == 200, reply.text
    csp = reply.headers["content-security-policy"]
    for directive in ("script-src 'self'", "object-src 'none'", "base-uri 'none'",
                      "frame-ancestors 'none'", "default-src 'none'"):  # fmt: skip
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["x-frame-options"] == "DENY"
    expected = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    suffix = Path(path).suffix
    assert reply.headers["content-type"].startswith(expected.get(suffix, "text/html"))


async def test_the_pages_have_no_inline_script_style_or_handler(tmp_path: Path) -> None:
    async with _client(tmp_path) as client:
        for path in ("/", "/login"):
            html = (await client.get(path)).text
            assert "<style" not in html and " style=" not in html
            assert not re.search(r"<[^>]*\son\w+\s*=", html)  # no onclick=, onload=...
            for tag in html.split("<script")[1:]:
                assert tag.split(">", 1)[1].startswith("</script>"), "an inline script"


async def test_config_js_names_the_api_base_and_no_secret(tmp_path: Path) -> None:
    async with _client(tmp_path) as client:
        same = (await client.get("/config.js")).text
    assert same.startswith('window.GRAVIX_CONFIG = Object.freeze({"apiBase":"",')
    assert '"refreshSeconds":10.0' in same and '"staleSeconds":300.0' in same
    async with _client(tmp_path, dashboard_api_base="https://api.example.com/") as client:
        reply = await client.get("/config.js")
    assert '"apiBase":"https://api.example.com"' in reply.text
    assert reply.headers["cache-control"] == "no-store"
    assert "connect-src 'self' https://api.example.com;" in reply.headers["content-security-policy"]


def test_an_api_base_that_could_break_out_of_the_csp_is_refused() -> None:
    from gravix.errors import ConfigError

    for bad in ("x; script-src *", "javascript:alert(1)", "/a b", 'https://x.example/"'):
        with pytest.raises(ConfigError, match="dashboard_api_base"):
            load_settings(None, dashboard_api_base=bad)
    settings = load_settings(None, dashboard_api_base="/gravix/")
    assert settings.dashboard_api_base == "/gravix"
    assert "connect-src 'self';" in content_security_policy(settings)


async def test_only_the_listed_files_are_served(tmp_path: Path) -> None:
    async with _client(tmp_path) as client:
        for path in NOT_SERVED:
            reply = await client.get(path)
            assert reply.status_code == 404, path
            assert reply.json()["error"]["code"] == "not_found"


async def test_other_methods_get_405_and_the_api_keeps_its_own_errors(tmp_path: Path) -> None:
    async with _client(tmp_path) as client:
        reply = await client.post("/", content=b"x")
        assert reply.status_code == 405
        assert reply.headers["allow"] == "GET, HEAD"
        assert reply.json()["error"]["code"] == "method_not_allowed"
        assert reply.json()["error"]["request_id"] == reply.headers["x-request-id"]
        head = await client.head("/")
        assert head.status_code == 200 and head.content == b""
        api = await client.get("/api/v1/query")
        assert api.status_code == 405 and api.headers["allow"] == "POST"
        assert (await client.get("/api/v1/nope")).status_code == 404
        assert (await client.get("/api/v1/services")).status_code == 401


async def test_an_unchanged_file_is_a_304(tmp_path: Path) -> None:
    async with _client(tmp_path) as client:
        first = await client.get("/static/js/app.js")
        again = await client.get(
            "/static/js/app.js", headers={"If-None-Match": first.headers["etag"]}
        )
    assert first.headers["cache-control"] == "no-cache"
    assert again.status_code == 304 and again.content == b""
    assert "content-security-policy" in again.headers


async def test_a_missing_chart_library_is_a_clear_page_and_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gravix.dashboard"):
        async with _client(tmp_path, dashboard_vendor_dir=tmp_path / "empty") as client:
            page = await client.get("/")
            library = await client.get("/vendor/uplot/uPlot.esm.js")
            login = await client.get("/login")
    assert page.status_code == 503
    assert "chart library (uPlot) is not installed" in page.text and "make web" in page.text
    assert "content-security-policy" in page.headers
    assert library.status_code == 404 and "make web" in library.json()["error"]["message"]
    assert login.status_code == 200
    assert any("chart library is missing" in r.getMessage() for r in caplog.records)


async def test_every_module_is_preloaded(tmp_path: Path) -> None:
    """index.html names every module it imports, so the browser fetches them all at once."""
    static = Path(__file__).parents[2] / "src" / "gravix" / "dashboard" / "static" / "js"
    async with _client(tmp_path) as client:
        html = (await client.get("/")).text
    preloaded = set(re.findall(r'<link rel="modulepreload" href="([^"]+)">', html))
    pages = {"static/js/boot.js", "static/js/app.js", "static/js/login.js"}  # <script> tags
    modules = {f"static/js/{p.name}" for p in static.glob("*.js")} - pages
    assert preloaded == modules | {"vendor/uplot/uPlot.esm.js"}
