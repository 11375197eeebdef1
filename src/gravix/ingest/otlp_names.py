"""The OpenTelemetry attributes Gravix reads, and the slot each one fills.

A span's values are a list indexed by slot, filled in one pass over its
attributes (:mod:`gravix.ingest.otlp`). Slots come in pairs (current semantic
conventions, then the older name still sent by many SDKs) so that
``values[new] or values[old]`` prefers the current name.
"""

from __future__ import annotations

from typing import Final

METHOD, METHOD_OLD, STATUS, STATUS_OLD, ROUTE, URL_PATH, TARGET, URL_FULL, URL_OLD = range(9)
SLOTS: Final = 9
SPAN_ATTRIBUTES: Final[dict[str, int]] = {
    "http.request.method": METHOD,
    "http.method": METHOD_OLD,
    "http.response.status_code": STATUS,
    "http.status_code": STATUS_OLD,
    "http.route": ROUTE,
    "url.path": URL_PATH,
    "http.target": TARGET,
    "url.full": URL_FULL,
    "http.url": URL_OLD,
}

# Resource attributes, read once per resource.
SERVICE, ENV, ENV_OLD, VERSION = range(4)
RESOURCE_ATTRIBUTES: Final[dict[str, int]] = {
    "service.name": SERVICE,
    "deployment.environment.name": ENV,
    "deployment.environment": ENV_OLD,
    "service.version": VERSION,
}


def status_code(int_value: int, string_value: str) -> int | None:
    """A status code attribute: an int, or the digits of a string (some SDKs send one)."""
    if int_value:
        return int_value
    if string_value.isascii() and string_value.isdigit() and len(string_value) <= 3:
        return int(string_value)
    return None
