"""Service events (deploys, incidents) as the API and alerts show them."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from gravix.schema import layout, parquet
from gravix.storage.base import ObjectNotFound, ObjectStore


def read_events(
    store: ObjectStore, tenant: str, from_ms: int, to_ms: int, service: str | None
) -> list[dict[str, Any]]:
    """Deploy and incident markers of ``tenant`` in [from_ms, to_ms), oldest first per
    day, for one service or all (``GET /api/v1/events``, alert notifications)."""
    found: list[dict[str, Any]] = []
    for day in range(layout.day_start(from_ms), to_ms, layout.DAY_MS):
        try:
            table: pa.Table = parquet.decode(store.get(layout.events_key(tenant, day)))
        except ObjectNotFound:
            continue
        for row in table.to_pylist():
            if from_ms <= row["timestamp_ms"] < to_ms and service in (None, row["service"]):
                found.append(
                    {
                        "event_id": row["event_id"],
                        "timestamp": row["timestamp_ms"],
                        "service": row["service"],
                        "kind": row["kind"],
                        "message": row["message"],
                        "version": row["version"],
                    }
                )
    return found
