"""The dashboard's routes, served by the API app on the same port.

Routes (GET and HEAD only; none needs a credential, none holds data)::

    GET /                     the dashboard: overview, endpoint and status views
    GET /login                the sign-in page
    GET /config.js            window.GRAVIX_CONFIG = {apiBase, refreshSeconds, staleSeconds}
    GET /static/<file>        the dashboard's own CSS, JavaScript modules and icon
    GET /vendor/uplot/<file>  the chart library, from ``npm ci`` in web/ (never a CDN)

Only the files listed here are served: the files under ``static/`` (except
the pages, which have their own paths) and the two uPlot files named in
:data:`VENDOR_FILES`, nothing else of ``node_modules``. When the chart
library is missing (``npm ci`` never ran), ``/`` answers 503 with a page that
says how to install it, and the server logs it; nothing crashes.

The routes are one :class:`DashboardRoute`, not starlette ``Route``s, so that
a path it does not serve falls through to the API's own 404 and 405, and so
that the API's route list (and its OpenAPI document) stays the API's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from gravix.config import Settings
from gravix.dashboard.headers import security_headers
from gravix.errors import MethodNotAllowed, NotFound, error_body

log = logging.getLogger("gravix.dashboard")

STATIC_DIR: Final = Path(__file__).parent / "static"
# src/gravix/dashboard/routes.py -> the repository root, where web/package.json lives.
SOURCE_VENDOR_DIR: Final = Path(__file__).resolve().parents[3] / "web" / "node_modules"
MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
PAGES: Final = {"/": "index.html", "/login": "login.html"}
UNAVAILABLE_PAGE: Final = "unavailable.html"
# URL path -> file under the vendor dir: the only node_modules files served.
VENDOR_FILES: Final = {
    "/vendor/uplot/uPlot.esm.js": "uplot/dist/uPlot.esm.js",
    "/vendor/uplot/uPlot.min.css": "uplot/dist/uPlot.min.css",
}
CONFIG_PATH: Final = "/config.js"
INSTALL_HINT: Final = "run `make web` (npm ci in web/) or set dashboard_vendor_dir"
_READ_METHODS: Final = ("GET", "HEAD")
_WARN_EVERY_SECONDS: Final = 60.0


def config_script(settings: Settings) -> bytes:
    """``config.js``: what the page needs to know about this server, and nothing secret."""
    config = {
        "apiBase": settings.dashboard_api_base,
        "refreshSeconds": settings.dashboard_refresh_seconds,
        "staleSeconds": settings.dashboard_stale_seconds,
    }
    return b"window.GRAVIX_CONFIG = Object.freeze(" + msgspec.json.encode(config) + b");\n"


class Dashboard:
    """The files of the dashboard and how each is answered."""

    def __init__(self, settings: Settings) -> None:
        self.headers = security_headers(settings)
        self.vendor_dir = settings.dashboard_vendor_dir or SOURCE_VENDOR_DIR
        self.config = config_script(settings)
        self.static = {
            f"/static/{path.relative_to(STATIC_DIR).as_posix()}": path
            for path in sorted(STATIC_DIR.rglob("*"))
            if path.is_file() and path.suffix in MEDIA_TYPES and path.suffix != ".html"
        }
        self._warned_at = -_WARN_EVERY_SECONDS
        self._files: dict[Path, tuple[tuple[int, int], bytes, str]] = {}
        self.check_vendor()

    def serves(self, path: str) -> bool:
        return path in PAGES or path == CONFIG_PATH or path in self.static or path in VENDOR_FILES

    def check_vendor(self) -> bool:
        """True if the chart library is installed; logs (at most once a minute) if not."""
        missing = [
            self.vendor_dir / rel
            for rel in VENDOR_FILES.values()
            if not (self.vendor_dir / rel).is_file()
        ]
        if missing and time.monotonic() - self._warned_at >= _WARN_EVERY_SECONDS:
            self._warned_at = time.monotonic()
            log.warning(
                f"dashboard: the chart library is missing ({missing[0]}); {INSTALL_HINT}",
                extra={"fields": {"vendor_dir": str(self.vendor_dir)}},
            )
        return not missing

    def respond(self, request: Request) -> Response:
        path = request.url.path
        if path == CONFIG_PATH:
            headers = {**self.headers, "Cache-Control": "no-store"}
            return Response(self.config, media_type=MEDIA_TYPES[".js"], headers=headers)
        if path in PAGES:
            if path == "/" and not self.check_vendor():
                return self._file(request, STATIC_DIR / UNAVAILABLE_PAGE, status=503)
            return self._file(request, STATIC_DIR / PAGES[path])
        if path in VENDOR_FILES:
            file = self.vendor_dir / VENDOR_FILES[path]
            if not file.is_file():
                self.check_vendor()
                raise NotFound(f"the dashboard's chart library is not installed: {INSTALL_HINT}")
            return self._file(request, file)
        return self._file(request, self.static[path])

    def _file(self, request: Request, path: Path, status: int = 200) -> Response:
        try:
            body, etag = self._read(path)
        except FileNotFoundError:
            raise NotFound(f"no file {request.url.path}") from None
        headers = {**self.headers, "Cache-Control": "no-cache", "ETag": etag}
        if status == 200 and request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            body = b""
        return Response(body, status, headers, MEDIA_TYPES[path.suffix])

    def _read(self, path: Path) -> tuple[bytes, str]:
        """The file's bytes and ETag, from memory while its size and mtime stay the same.

        The page loads a dozen small files at once; answering them from memory
        keeps the thread pool free for the queries that follow.
        """
        stat = os.stat(path)
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._files.get(path)
        if cached is None or cached[0] != key:
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            cached = self._files[path] = (key, body, etag)
        return cached[1], cached[2]


class DashboardRoute(BaseRoute):
    """Matches the dashboard's paths only; see the module docstring."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or not self.dashboard.serves(scope["path"]):
            return Match.NONE, {}
        return (Match.FULL if scope["method"] in _READ_METHODS else Match.PARTIAL), {}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if request.method not in _READ_METHODS:
            err = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
            request_id = scope.get("state", {}).get("request_id")
            allow = {"Allow": ", ".join(_READ_METHODS)}
            response: Response = JSONResponse(error_body(err, request_id), err.status, allow)
        else:
            response = self.dashboard.respond(request)
        await response(scope, receive, send)


def dashboard_routes(settings: Settings) -> list[BaseRoute]:
    """The dashboard's routes, for the API app (gravix.api.app.create_api)."""
    return [DashboardRoute(Dashboard(settings))]
