"""Valid facts and events as JSON, to change one field at a time."""

from __future__ import annotations

import time
from typing import Any


def fact(**overrides: Any) -> dict[str, Any]:
    """A valid RequestFact as JSON, timestamped now."""
    base: dict[str, Any] = {
        "event_id": f"ev-{time.perf_counter_ns()}",
        "timestamp": int(time.time() * 1000),
        "service": "checkout",
        "method": "POST",
        "path": "/cart/{id}/pay",
        "status": 200,
        "latency_ms": 12.5,
        "env": "prod",
        "version": "v42",
    }
    base.update(overrides)
    return base


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": f"dep-{time.perf_counter_ns()}",
        "timestamp": int(time.time() * 1000),
        "service": "checkout",
        "kind": "deploy",
        "message": "deployed v43",
        "version": "v43",
    }
    base.update(overrides)
    return base
