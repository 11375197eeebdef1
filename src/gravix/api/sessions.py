"""Sessions: login, logout and the session cookie (to be built)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def session_routes() -> list[BaseRoute]:
    return []
