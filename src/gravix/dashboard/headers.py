"""Security headers of every dashboard response.

The Content-Security-Policy allows scripts, styles and images from this
server only, and API requests to this server (or to ``dashboard_api_base``
when that names another origin). There is no ``'unsafe-inline'`` and no
``'unsafe-eval'``: the HTML has no inline script, no inline ``style``
attribute and no event-handler attribute. ``require-trusted-types-for
'script'`` with ``trusted-types 'none'`` makes the browser refuse any string
assigned to ``innerHTML`` and friends, so data can only reach the page as
text (``textContent``), which is how the dashboard renders every service
name, path, version and message.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from gravix.config import Settings

# Not a secret and not data: the same for every page of a server.
_POLICY: Final = (
    ("default-src", "'none'"),
    ("script-src", "'self'"),
    ("style-src", "'self'"),
    ("img-src", "'self'"),
    ("font-src", "'self'"),
    ("form-action", "'self'"),
    ("base-uri", "'none'"),
    ("object-src", "'none'"),
    ("frame-ancestors", "'none'"),
    ("require-trusted-types-for", "'script'"),
    ("trusted-types", "'none'"),
)


def content_security_policy(settings: Settings) -> str:
    """The CSP header value; ``connect-src`` adds the API's origin when it is another one."""
    connect = "'self'"
    base = settings.dashboard_api_base
    if base.startswith(("http://", "https://")):
        parts = urlsplit(base)
        connect += f" {parts.scheme}://{parts.netloc}"
    directives = [*_POLICY[:5], ("connect-src", connect), *_POLICY[5:]]
    return "; ".join(f"{name} {value}" for name, value in directives)


def security_headers(settings: Settings) -> dict[str, str]:
    """Headers for every dashboard response (pages, scripts, styles, config.js)."""
    return {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }
