"""The OpenAPI document of the API (to be built)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def openapi_routes() -> list[BaseRoute]:
    return []
