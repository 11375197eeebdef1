"""Cost: 1,000 rules over 1,200 series, evaluated every 10 s inside ``gravix serve``.

* **Series**: 20 services x 30 routes x 2 envs (one version) = 1,200 series,
  ``--cost-rate`` facts/s spread evenly over them (0.1% 5xx, 2% 4xx, log-normal
  latencies), after ``--cost-history-minutes`` of the same traffic sent at once
  and folded into the minute tier, so every window has data.
* **Rules** (:func:`cost_rules`): per service, a threshold rule for each of 6
  metrics (``error_rate``, ``p95``, ``p99``, ``client_error_rate``,
  ``avg_latency``, ``throughput``) x 3 windows (1m, 5m, 15m) x 2 groupings
  (by method and path: 30 series a rule; by env: 2), 720 rules with distinct
  queries; 220 more that repeat one of those queries with a lower threshold
  (a "warning" beside a "page", which the evaluator answers from the same
  query); and per service one ``requests`` count rule, one "went silent" and one
  availability SLO (99.9%, 30d): 1,000. Thresholds are far from the traffic:
  the states are written each evaluation, nothing fires.
* **Measured**: CPU seconds of the server's process tree (``/proc``, user +
  system) over ``--cost-seconds`` without rules, then over twice that with
  the 1,000 rules (after two evaluations of warm-up); the evaluator's share
  is the difference of the two CPU rates. Per evaluation: that share times
  the measured period between evaluations (``alert_evaluation_seconds``'s
  count in ``/metrics``); as a share of one core: per evaluation / 10 s.
"""

from __future__ import annotations

import argparse
import itertools
import random
import threading
import time
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec

from bench.servers import BenchError, gravix_server, make_key, prometheus_values
from bench.steady import minute_tier_requests, tree_usage
from gravix.alerts import defaults
from gravix.alerts.receiver import WebhookReceiver
from gravix.alerts.rules import AlertStore
from gravix.config import load_settings
from gravix.schema import alerts as schema

TENANT: Final = "cost"
SERVICES: Final = tuple(f"svc{i:02d}" for i in range(20))
ROUTES: Final = tuple(
    (method, f"/r{i:02d}/{{id}}") for i, method in zip(range(30), itertools.cycle(
        ("GET", "GET", "POST", "GET", "PUT", "DELETE")), strict=False)
)  # fmt: skip
ENVS: Final = ("prod", "staging")
METRICS: Final = {  # metric: (op, threshold far from the traffic)
    "error_rate": (">", 0.5),
    "p95": (">", 20_000.0),
    "p99": (">", 30_000.0),
    "client_error_rate": (">", 0.6),
    "avg_latency": (">", 10_000.0),
    "throughput": (">", 1_000_000.0),
}
WINDOWS: Final = ("1m", "5m", "15m")
GROUPS: Final = (["method", "path"], ["env"])
EVALUATION = "alert_evaluation_seconds"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def cost_rules() -> list[schema.Rule]:
    """The 1,000 rules (module docstring)."""
    distinct: list[schema.Rule] = []
    for service, (metric, (op, threshold)), window, group in itertools.product(
        SERVICES, METRICS.items(), WINDOWS, GROUPS
    ):
        distinct.append(
            schema.Threshold(
                name=f"{service} {metric} {window} by {'+'.join(group)}", metric=metric, op=op,
                threshold=threshold, window=window, group_by=list(group),
                filters=[schema.Matcher("service", [service], "eq")],
            )
        )  # fmt: skip
    per_service: list[schema.Rule] = []
    for service in SERVICES:
        only = [schema.Matcher("service", [service], "eq")]
        per_service += [
            schema.Threshold(name=f"{service} requests", metric="requests", op="<",
                             threshold=0.5, window="5m", filters=only),
            schema.Silent(name=f"{service} went silent", after="5m", filters=only),
            schema.Slo(name=f"{service} availability", objective="availability", target=0.995,
                       filters=only),
        ]  # fmt: skip
    warnings = [
        msgspec.structs.replace(r, name=f"{r.name} (warning)", threshold=r.threshold * 0.8)
        for r in distinct[: schema.MAX_RULES_PER_TENANT - len(distinct) - len(per_service)]
        if isinstance(r, schema.Threshold)
    ]
    return [*distinct, *warnings, *per_service]


class SeriesLoad:
    """``rate`` facts/s spread over the 1,200 series, posted every 0.5 s until stopped."""

    def __init__(self, url: str, key: str, rate: float, seed: int) -> None:
        self.url, self.key, self.rate = url, key, rate
        self.rng = random.Random(seed)
        self.series = list(itertools.product(SERVICES, ROUTES, ENVS))
        self.next = 0
        self.sent = 0
        self.answers: dict[str, int] = {}
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cost-load", daemon=True)
        self.client = httpx.Client(
            base_url=url, timeout=30, trust_env=False,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )  # fmt: skip

    def facts(self, n: int, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        rnd, out = self.rng.random, []
        for _ in range(n):
            service, (method, path), env = self.series[self.next % len(self.series)]
            self.next += 1
            r = rnd()
            status = 500 if r < 0.001 else 404 if r < 0.021 else 200
            out.append({
                "event_id": f"cost-{self.next}",
                "timestamp": start_ms + int(rnd() * (end_ms - start_ms)),
                "service": service, "method": method, "path": path, "status": status,
                "latency_ms": round(self.rng.lognormvariate(3.9, 0.6), 3), "env": env,
                "version": "v1",
            })  # fmt: skip
        return out

    def post(self, facts: list[dict[str, Any]]) -> None:
        for i in range(0, len(facts), 5_000):
            chunk = facts[i : i + 5_000]
            answer = self.client.post("/api/v1/facts", content=msgspec.json.encode(chunk))
            code = str(answer.status_code)
            self.answers[code] = self.answers.get(code, 0) + 1
            if answer.status_code != 202:
                raise BenchError(f"intake answered {code}: {answer.text[:200]}")
            self.sent += len(chunk)

    def history(self, minutes: float) -> int:
        end = int(time.time() * 1000)
        start = end - int(minutes * 60_000)
        for t in range(start, end, 60_000):
            self.post(self.facts(int(self.rate * 60), t, min(t + 60_000, end)))
        return self.sent

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        last = int(time.time() * 1000)
        while not self._stop.wait(0.5):
            now = int(time.time() * 1000)
            n = int(self.rate * (now - last) / 1000)
            if n:
                try:
                    self.post(self.facts(n, last, now))
                except (BenchError, httpx.HTTPError) as e:  # counted; the load goes on
                    self.error = f"{type(e).__name__}: {e}"
                last = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.close()


def _evaluations(server: Any) -> tuple[float, float]:
    found = prometheus_values(server.get("/metrics"), f"{EVALUATION}_count", f"{EVALUATION}_sum")
    return found[f"{EVALUATION}_count"], found[f"{EVALUATION}_sum"]


def _phase(server: Any, seconds: float) -> dict[str, float]:
    """CPU seconds of the server's tree and evaluations over ``seconds``."""
    cpu0, (n0, s0), t0 = tree_usage(server.pid)["cpu_s"], _evaluations(server), time.monotonic()
    time.sleep(seconds)
    cpu1, (n1, s1), t1 = tree_usage(server.pid)["cpu_s"], _evaluations(server), time.monotonic()
    return {"seconds": round(t1 - t0, 2), "cpu_s": round(cpu1 - cpu0, 2),
            "cpu_rate": (cpu1 - cpu0) / (t1 - t0), "evaluations": n1 - n0,
            "evaluation_wall_s": s1 - s0}  # fmt: skip


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data_dir = work / "cost"
    data_dir.mkdir()
    key = make_key(data_dir, tenant=TENANT)
    store = AlertStore(load_settings(data_dir=data_dir))
    rules = cost_rules()
    server = gravix_server(data_dir, cpu=None, log_path=work / "cost.log")
    server.start()
    log(f"cost: gravix serve on {server.url}, pid {server.pid}")
    load = SeriesLoad(server.url, key, args.cost_rate, args.seed)
    try:
        with WebhookReceiver() as receiver:
            preloaded = load.history(args.cost_history_minutes)
            deadline = time.monotonic() + args.fold_timeout
            while minute_tier_requests(data_dir / "store") < preloaded:
                if time.monotonic() > deadline:
                    raise BenchError(f"{preloaded:,} facts not in the minute tier in time")
                time.sleep(5)
            load.start()
            log(f"cost: {preloaded:,} facts of history folded; {len(rules)} rules next")
            baseline = _phase(server, args.cost_seconds)
            channel = schema.Webhook(name="bench", url=receiver.url)
            t0 = time.monotonic()
            defaults.install(store, TENANT, [channel], rules=rules, by="bench")
            install_s = time.monotonic() - t0
            n0 = _evaluations(server)[0]
            while _evaluations(server)[0] < n0 + 2:
                time.sleep(1)
            measured = _phase(server, 2 * args.cost_seconds)
            notified = sorted({a.notification.rule for a in receiver.arrivals})
    finally:
        load.stop()
        server.stop()
    if measured["evaluations"] < 1:
        raise BenchError("no evaluation ended while the rules were measured")
    share = measured["cpu_rate"] - baseline["cpu_rate"]
    period = measured["seconds"] / measured["evaluations"]
    per_evaluation = share * period
    return {
        "series": len(SERVICES) * len(ROUTES) * len(ENVS),
        "rules": len(rules),
        "rule_kinds": {
            k: sum(type(r).__name__ == k for r in rules) for k in ("Threshold", "Silent", "Slo")
        },
        "rate": args.cost_rate,
        "history_facts": preloaded,
        "facts_sent": load.sent,
        "load_answers": load.answers,
        "load_error": load.error,
        "install_seconds": round(install_s, 2),
        "baseline": baseline,
        "with_rules": measured,
        "evaluation_period_s": round(period, 2),
        "evaluation_wall_s": round(measured["evaluation_wall_s"] / measured["evaluations"], 3),
        "cpu_s_per_evaluation": round(per_evaluation, 3),
        "share_of_core_at_10s": round(per_evaluation / 10, 4),
        "rules_per_cpu_s": round(len(rules) / per_evaluation, 1) if per_evaluation > 0 else None,
        "notifications": notified,
    }
