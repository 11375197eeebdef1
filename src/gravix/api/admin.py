"""Admin routes: users and API tokens of the caller's tenant (to be built)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def admin_routes() -> list[BaseRoute]:
    return []
