"""Detection: from a spike's first failing fact to the firing notification at a webhook.

``gravix serve`` (every setting at its default: alerts every 10 s) takes the
demo's fleet at a steady ``--rate`` (:class:`bench.alerts_load.SteadyLoad`);
the tenant has the default rules (:func:`gravix.alerts.defaults.install`)
routed to a :class:`gravix.alerts.receiver.WebhookReceiver` in this process.
``--spikes`` times, one endpoint (in turn from :data:`ENDPOINTS`) gets a 5xx
spike of the loadgen's size (30-60% of its requests) starting at a random
second of a minute; it lasts until the firing notification for that endpoint
arrives (or ``--timeout``), and an endpoint is spiked again only after its
previous incident resolved. Figures per spike: the detection time, split into
the evaluation that fired (its ``at``) and the delivery; the resolve time
(from the spike's end to the resolved notification); and the peer's
(:func:`bench.alerts_load.prometheus_detection`, computed from the same spike
instant and share at the endpoint's measured rate).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path
from typing import Any

from bench.alerts_load import Spike, SteadyLoad, prometheus_detection
from bench.servers import gravix_server, make_key
from gravix.alerts import defaults
from gravix.alerts.receiver import Arrival, WebhookReceiver
from gravix.alerts.rules import AlertStore
from gravix.config import load_settings
from gravix.schema.alerts import Webhook
from gravix.schema.paths import normalise_path

TENANT = "bench"
RULE = defaults.error_rate_rule().name
# Endpoints spiked in turn: the demo's two, and four more of the fleet's busier ones.
ENDPOINTS: tuple[tuple[str, str, str], ...] = (
    ("checkout", "POST", "/checkout"),
    ("payments", "POST", "/payments"),
    ("checkout", "GET", "/cart/{cart_id}"),
    ("search", "GET", "/search/suggest"),
    ("inventory", "GET", "/products/{sku}/stock"),
    ("users", "POST", "/sessions"),
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _series(endpoint: tuple[str, str, str]) -> dict[str, str]:
    """The series the rule names for an endpoint (its path as intake stores it)."""
    service, method, path = endpoint
    return {"service": service, "method": method, "path": normalise_path(path)}


def _about(arrival: Arrival, status: str, endpoint: tuple[str, str, str]) -> bool:
    n = arrival.notification
    return (
        not arrival.repeat_of_key
        and n.status == status
        and n.rule == RULE
        and any(a.series == _series(endpoint) for a in n.alerts)
    )


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    return {"n": len(values), "p50": round(nearest_rank(values, 50), 2),
            "p95": round(nearest_rank(values, 95), 2), "max": round(max(values), 2)}  # fmt: skip


class Detection:
    """One run (module docstring)."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.rng = random.Random(args.seed)
        self.trials: list[dict[str, Any]] = []
        self.unresolved: dict[tuple[str, str, str], dict[str, Any]] = {}

    def run(self) -> dict[str, Any]:
        data_dir = self.work / "detect"
        data_dir.mkdir()
        key = make_key(data_dir, tenant=TENANT)
        store = AlertStore(load_settings(data_dir=data_dir))
        with WebhookReceiver() as receiver:
            channel = Webhook(name="bench", url=receiver.url)
            defaults.install(store, TENANT, [channel], by="bench")
            server = gravix_server(data_dir, cpu=None, log_path=self.work / "detect.log")
            server.start()
            log(f"detection: gravix serve on {server.url}, pid {server.pid}; default rules")
            load = SteadyLoad(server.url, key, self.args.rate, self.args.seed).start()
            try:
                time.sleep(self.args.warmup)
                for i in range(self.args.spikes):
                    self._trial(i, load, receiver)
                self._wait_resolved(receiver, self.args.resolve_wait)
            finally:
                load.stop()
                server.stop()
            arrivals = list(receiver.arrivals)
        return self._summary(load, arrivals)

    def _trial(self, i: int, load: SteadyLoad, receiver: WebhookReceiver) -> None:
        endpoint = ENDPOINTS[i % len(ENDPOINTS)]
        if endpoint in self.unresolved:
            self._wait_resolved(receiver, self.args.resolve_wait, endpoint)
        offset = self.rng.uniform(0, 60)
        earliest = time.time() + 2
        start = math.floor((earliest - offset) / 60) * 60 + offset
        start += 60 if start < earliest else 0
        share = self.rng.uniform(0.3, 0.6)
        mark = len(receiver.arrivals)
        load.spike(Spike(endpoint, int(start * 1000), share))
        time.sleep(max(0.0, start - time.time()))
        fired = receiver.wait_for(lambda a: _about(a, "firing", endpoint), self.args.timeout, mark)
        spike = load.end_spike()
        assert spike is not None
        trial: dict[str, Any] = {
            "endpoint": " ".join(endpoint),
            "start_ms": spike.start_ms,
            "offset_in_minute_s": round(offset, 2),
            "share": round(share, 3),
            "first_failing_ms": spike.first_failing_ms,
            "first_failing_acked_ms": spike.first_failing_acked_ms,
            "spike_requests": spike.requests,
            "spike_failing": spike.failing,
            "end_ms": spike.end_ms,
            "endpoint_rate": round(load.endpoint_rate(endpoint), 2),
        }
        if fired is None or spike.first_failing_ms is None:
            trial["missed"] = True
            log(f"spike {i + 1}: {trial['endpoint']} at {share:.0%}: no firing notification "
                f"within {self.args.timeout:.0f} s")  # fmt: skip
        else:
            first = spike.first_failing_ms / 1000
            [entry] = [a for a in fired.notification.alerts if a.series == _series(endpoint)]
            trial |= {
                "fired_at": round(fired.at, 3),
                "detection_s": round(fired.at - first, 3),
                "evaluation_s": round(entry.at / 1000 - first, 3),
                "delivery_s": round(fired.at - entry.at / 1000, 3),
                "value": entry.value,
                "requests": entry.requests,
                "fired_key": fired.notification.idempotency_key,
            }
            self.unresolved[endpoint] = trial
            log(f"spike {i + 1}: {trial['endpoint']} at {share:.0%}, {offset:.0f} s into a "
                f"minute: notified after {trial['detection_s']:.1f} s")  # fmt: skip
        peer = prometheus_detection(
            (spike.first_failing_ms or spike.start_ms) / 1000, share,
            max(0.1, trial["endpoint_rate"]), self.rng,
        )  # fmt: skip
        trial["prometheus_fires_s"] = round(peer.fires_s, 2)
        trial["prometheus_webhook_s"] = round(peer.webhook_s, 2)
        trial["mark"] = mark
        self.trials.append(trial)

    def _wait_resolved(
        self,
        receiver: WebhookReceiver,
        timeout: float,
        only: tuple[str, str, str] | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout
        for endpoint, trial in list(self.unresolved.items()):
            if only is not None and endpoint != only:
                continue
            left = max(0.0, deadline - time.monotonic())
            found = receiver.wait_for(
                lambda a, e=endpoint: _about(a, "resolved", e), left, trial["mark"]
            )
            if found is not None:
                trial["resolve_s"] = round(found.at - trial["end_ms"] / 1000, 2)
                trial["resolved_key"] = found.notification.idempotency_key
            del self.unresolved[endpoint]

    def _summary(self, load: SteadyLoad, arrivals: list[Arrival]) -> dict[str, Any]:
        detected = [t for t in self.trials if not t.get("missed")]
        acked = [
            (t["first_failing_acked_ms"] - t["first_failing_ms"]) / 1000
            for t in detected
            if t["first_failing_acked_ms"]
        ]
        matched = {t.get(k) for t in self.trials for k in ("fired_key", "resolved_key")}
        others = [
            {"at": round(a.at, 3), "rule": a.notification.rule, "status": a.notification.status,
             "series": [e.series for e in a.notification.alerts],
             "summary": [e.summary for e in a.notification.alerts]}
            for a in arrivals
            if not a.repeat_of_key and a.notification.idempotency_key not in matched
        ]  # fmt: skip
        return {
            "rate": self.args.rate,
            "facts_sent": load.sent,
            "load_answers": dict(load.statuses),
            "trials": self.trials,
            "missed": sum(1 for t in self.trials if t.get("missed")),
            "gravix_s": spread([t["detection_s"] for t in detected]),
            "evaluation_s": spread([t["evaluation_s"] for t in detected]),
            "delivery_s": spread([t["delivery_s"] for t in detected]),
            "first_fact_ack_s": spread(acked),
            "resolve_s": spread([t["resolve_s"] for t in self.trials if "resolve_s" in t]),
            "unresolved": [t["endpoint"] for t in detected if "resolve_s" not in t],
            "prometheus_fires_s": spread([t["prometheus_fires_s"] for t in self.trials]),
            "prometheus_webhook_s": spread([t["prometheus_webhook_s"] for t in self.trials]),
            "other_notifications": others,
        }
