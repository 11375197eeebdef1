"""The small synthetic fleet both benchmarks send: 5 services, 12 routes."""

from __future__ import annotations

import random
from typing import Any

SERVICES = {
    "checkout": [("POST", "/cart/{id}/pay"), ("GET", "/cart/{id}"), ("PUT", "/cart/{id}/items")],
    "search": [("GET", "/search"), ("GET", "/suggest")],
    "users": [("GET", "/users/{id}"), ("PATCH", "/users/{id}"), ("POST", "/login")],
    "catalog": [("GET", "/products/{id}"), ("GET", "/products")],
    "payments": [("POST", "/charges"), ("GET", "/charges/{id}")],
}
STATUSES = (200, 200, 200, 200, 201, 204, 304, 400, 404, 500)


def fleet_fact(
    rng: random.Random, service: str, event_id: str, timestamp_ms: int
) -> dict[str, Any]:
    """One valid fact of ``service`` as JSON: a random route, status and latency."""
    method, path = rng.choice(SERVICES[service])
    return {
        "event_id": event_id,
        "timestamp": timestamp_ms,
        "service": service,
        "method": method,
        "path": path,
        "status": rng.choice(STATUSES),
        "latency_ms": round(rng.lognormvariate(3, 1), 3),
        "env": rng.choice(("prod", "prod", "staging")),
        "version": rng.choice(("v41", "v42")),
    }
