"""Query results as JSON (default), CSV or Parquet."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from gravix.errors import BadRequest

FORMATS = ("json",)


def render(result: dict[str, Any], fmt: str) -> Response:
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}", field="format")
    return Response(msgspec.json.encode(result), 200, media_type="application/json")
