"""Notifications for the delivery tests, as the evaluator would write them."""

from __future__ import annotations

from typing import Any

from gravix.schema.alerts import AlertEntry, Deploy, Notification, Sample

T0_MS = 1_790_000_000_000  # 2026-09-21T14:13:20Z, a fixed instant


def alert(n: int = 0, **overrides: Any) -> AlertEntry:
    fields: dict[str, Any] = {
        "id": f"t{n}",
        "rule": "checkout errors",
        "rule_id": 7,
        "kind": "threshold",
        "severity": "page",
        "state": "firing",
        "previous_state": "pending",
        "series": {"service": "checkout", "path": f"/pay/{n}"},
        "at": T0_MS + 60_000,
        "since": T0_MS,
        "summary": f"error rate of /pay/{n} above 5%",
        "metric": "error_rate",
        "value": 0.125,
        "threshold": 0.05,
        "op": ">",
        "requests": 120,
        "window": "5m",
        "url": f"http://gravix.test/endpoints?service=checkout&path=/pay/{n}&at={T0_MS}",
        "deploy": Deploy(
            service="checkout",
            version="v42",
            timestamp=T0_MS - 120_000,
            message="bump payment client",
        ),
        "samples": [Sample(status=500, method="POST", path=f"/pay/{n}", count=12)],
    }
    fields.update(overrides)
    return AlertEntry(**fields)


def notification(key: str = "k1", alerts: int = 1, **overrides: Any) -> Notification:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "tenant": "acme",
        "status": "firing",
        "rule": "checkout errors",
        "service": "checkout",
        "alerts": [alert(i) for i in range(alerts)],
    }
    fields.update(overrides)
    return Notification(**fields)
