"""Send request facts to Gravix from a Python app: ASGI and WSGI middleware, ``send()``.

Importing this package costs only the standard library; Gravix's schema
rules load when the first client is built. Recipes: docs/sending-data.md.

    from gravix.client import GravixASGIMiddleware
    app.add_middleware(GravixASGIMiddleware, service="shop")   # GRAVIX_URL, GRAVIX_KEY

    from gravix.client import GravixWSGIMiddleware
    app.wsgi_app = GravixWSGIMiddleware(app.wsgi_app, service="shop")

    import gravix.client
    gravix.client.send("GET", "/users/{id}", 200, 12.5)
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from gravix.client.asgi import GravixASGIMiddleware
from gravix.client.buffer import ClientStats
from gravix.client.client import GravixClient
from gravix.client.wsgi import GravixWSGIMiddleware

__all__ = [
    "ClientStats",
    "GravixASGIMiddleware",
    "GravixClient",
    "GravixWSGIMiddleware",
    "configure",
    "get_client",
    "send",
]

_default: GravixClient | None = None
_default_lock = threading.Lock()
_config_error_logged = False


def configure(**options: Any) -> GravixClient:
    """Build the shared client (closing any previous one); options as :class:`GravixClient`."""
    global _default
    client = GravixClient(**options)
    with _default_lock:
        previous, _default = _default, client
    if previous is not None:
        previous.close()
    return client


def get_client() -> GravixClient:
    """The shared client; built from the environment (GRAVIX_URL...) on first use."""
    global _default
    client = _default
    if client is None:
        with _default_lock:
            if _default is None:
                _default = GravixClient()
            client = _default
    return client


def send(
    method: str,
    path: str,
    status: int,
    latency_ms: float,
    *,
    timestamp_ms: int | None = None,
    event_id: str | None = None,
) -> bool:
    """Record one request with the shared client; see :meth:`GravixClient.send`."""
    global _config_error_logged
    try:
        client = get_client()
    except Exception:  # a configuration mistake must not break the caller's request
        if not _config_error_logged:
            _config_error_logged = True
            logging.getLogger("gravix.client").exception("gravix client: not configured")
        return False
    return client.send(
        method, path, status, latency_ms, timestamp_ms=timestamp_ms, event_id=event_id
    )
