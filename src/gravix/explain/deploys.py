"""Deploy markers for what changed: the "before this deploy" baseline, and the
marker of a version suspected of a faulty deploy (docs/explain.md).

A deploy marker is a service event of kind ``deploy`` (``POST /api/v1/events``,
docs/facts.md), read once rolled up (:func:`gravix.query.events.read_events`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from gravix.query.events import read_events
from gravix.query.service import QueryService
from gravix.query.spec import Filter

# How far back before the window's end a deploy marker is looked for.
LOOKBACK_MS: Final = 7 * 86_400_000


@dataclass(frozen=True, slots=True)
class Marker:
    """One deploy marker, as the answer gives it (``deploy``)."""

    service: str
    version: str | None
    timestamp: int  # epoch ms
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "version": self.version,
            "timestamp": self.timestamp,
            "message": self.message,
        }

    def said(self) -> str:
        """``checkout v126 at 2025-11-23 08:20:00 UTC``."""
        return f"{self.service} {self.version or '(no version)'} at {utc(self.timestamp)}"


def utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def selected_service(filters: Iterable[Filter]) -> str | None:
    """The one service a selection's filters name, if they name exactly one."""
    for f in filters:
        if f.dimension == "service" and f.op in ("eq", "in") and len(f.values) == 1:
            return str(f.values[0])
    return None


def latest(
    queries: QueryService,
    tenant: str,
    service: str | None,
    before_ms: int,
    version: str | None = None,
) -> Marker | None:
    """The newest deploy marker before ``before_ms`` (within :data:`LOOKBACK_MS`) of
    ``service`` (any service: None), of ``version`` when it is given."""
    events = read_events(queries.store, tenant, before_ms - LOOKBACK_MS, before_ms, service)
    deploys = [
        e for e in events if e["kind"] == "deploy" and version in (None, e["version"])
    ]  # fmt: skip
    if not deploys:
        return None
    last = max(deploys, key=lambda e: e["timestamp"])
    return Marker(last["service"], last["version"], last["timestamp"], last["message"] or "")
