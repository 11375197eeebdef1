"""The alert benchmark's traffic: the demo's fleet at a steady rate, with 5xx spikes
injected on one endpoint at chosen instants, and Prometheus' model of the same spikes.

:class:`SteadyLoad` is one thread: every :data:`TICK_S` it asks
:class:`gravix.loadgen.traffic.TrafficModel` (no incidents of its own) for
``rate x elapsed`` facts stamped over the elapsed interval, turns a share of
the spiked endpoint's facts from the spike's instant on into 5xx (the
loadgen's mix: 500, 502, 503, 504; a 504 takes 10-30 s), and posts them as
one batch (``POST /api/v1/facts``). A spike's **first failing fact** is the
earliest fact it turned 5xx: its timestamp and when its batch was
acknowledged are kept, and the detection time is measured from the former.

:func:`prometheus_detection` is the peer, computed rather than run (no
Prometheus server): a rule ``errors / requests > threshold`` over ``rate(...[1m])``
with scrapes every ``scrape_s`` and evaluations every ``eval_s`` (random
phases), ``for: 1m``; requests arrive as a Poisson process at the endpoint's
measured rate from the same spike instant and share. It returns when the rule
fires, and when a webhook behind Alertmanager hears of it (``group_wait``).
"""

from __future__ import annotations

import math
import random
import threading
import time
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from gravix.loadgen.traffic import SERVER_ERRORS, TrafficModel, pick_status

FACTS_URL = "/api/v1/facts"
TICK_S = 0.2
_encode = msgspec.json.Encoder().encode


@dataclass
class Spike:
    """A share of one endpoint's requests answered 5xx from ``start_ms`` on."""

    endpoint: tuple[str, str, str]  # service, method, path
    start_ms: int
    share: float
    end_ms: int | None = None
    first_failing_ms: int | None = None  # the earliest fact turned 5xx
    first_failing_acked_ms: int | None = None
    requests: int = 0  # facts of the endpoint sent during the spike
    failing: int = 0


@dataclass
class SteadyLoad:
    """``rate`` facts/s of the demo's fleet to ``url`` until :meth:`stop`."""

    url: str
    key: str
    rate: float
    seed: int
    statuses: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    endpoint_facts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    started_ms: int = 0

    def __post_init__(self) -> None:
        self.model = TrafficModel(rate=self.rate, seed=self.seed, run_id=f"bench{self.seed}")
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._spike: Spike | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-load", daemon=True)

    def start(self) -> SteadyLoad:
        self.started_ms = int(time.time() * 1000)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def spike(self, spike: Spike) -> None:
        with self._lock:
            self._spike = spike

    def end_spike(self) -> Spike | None:
        """End the current spike now; it is returned with its counts."""
        with self._lock:
            spike, self._spike = self._spike, None
        if spike is not None:
            spike.end_ms = int(time.time() * 1000)
        return spike

    def endpoint_rate(self, endpoint: tuple[str, str, str]) -> float:
        """Facts/s the endpoint has had so far."""
        seconds = max(1.0, time.time() - self.started_ms / 1000)
        with self._lock:
            return self.endpoint_facts[endpoint] / seconds

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30, trust_env=False) as c:
            last_ms, carry = int(time.time() * 1000), 0.0
            while not self._stop.wait(TICK_S):
                now_ms = int(time.time() * 1000)
                due = self.rate * (now_ms - last_ms) / 1000 + carry
                n = int(due)
                carry = due - n
                if not n:
                    continue
                facts = self.model.facts(n, last_ms, now_ms)
                last_ms = now_ms
                spike, first = self._inject(facts)
                try:
                    answer = c.post(FACTS_URL, content=_encode(facts))
                    status = str(answer.status_code)
                except httpx.HTTPError as e:
                    status = type(e).__name__
                with self._lock:
                    self.statuses[status] += 1
                    if status == "202":
                        self.sent += len(facts)
                        if spike is not None and first and spike.first_failing_acked_ms is None:
                            spike.first_failing_acked_ms = int(time.time() * 1000)

    def _inject(self, facts: list[dict[str, Any]]) -> tuple[Spike | None, bool]:
        """Turn the spike's share of its endpoint's facts into 5xx; (the spike, whether
        this batch holds its first failing fact)."""
        rnd = self._rng.random
        with self._lock:
            spike = self._spike
            for f in facts:
                self.endpoint_facts[(f["service"], f["method"], f["path"])] += 1
            if spike is None:
                return None, False
            first = False
            for f in facts:
                if (f["service"], f["method"], f["path"]) != spike.endpoint:
                    continue
                if f["timestamp"] < spike.start_ms:
                    continue
                spike.requests += 1
                if rnd() >= spike.share:
                    continue
                f["status"] = pick_status(SERVER_ERRORS, rnd(), scaled=True)
                if f["status"] == 504:
                    f["latency_ms"] = round(10_000 + rnd() * 20_000, 3)
                spike.failing += 1
                if spike.first_failing_ms is None or f["timestamp"] < spike.first_failing_ms:
                    first = spike.first_failing_ms is None
                    spike.first_failing_ms = f["timestamp"]
            return spike, first


# --- the peer: Prometheus' rule model ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class PeerDetection:
    fires_s: float  # from the spike's start to the rule firing
    webhook_s: float  # ... to a webhook behind Alertmanager (plus group_wait)


def prometheus_detection(
    start_s: float,
    share: float,
    rate: float,
    rng: random.Random,
    *,
    threshold: float = 0.10,
    baseline: float = 0.004,
    scrape_s: float = 15.0,
    eval_s: float = 60.0,
    for_s: float = 60.0,
    group_wait_s: float = 30.0,
) -> PeerDetection:
    """When ``errors / requests > threshold`` over ``rate(...[1m])`` fires for a spike
    starting at ``start_s`` (module docstring). The window's ratio is that of the
    requests between its first and last scrape (what ``rate()`` extrapolates)."""
    horizon = start_s + 600.0
    t, arrivals = start_s - 120.0, []
    while t < horizon:
        t += rng.expovariate(rate)
        bad = rng.random() < (share if t >= start_s else baseline)
        arrivals.append((t, bad))
    times = [a[0] for a in arrivals]
    bad_prefix = [0]
    for _, bad in arrivals:
        bad_prefix.append(bad_prefix[-1] + bad)
    scrape_phase, eval_phase = rng.uniform(0, scrape_s), rng.uniform(0, eval_s)

    def last_scrape(at: float) -> float:
        return scrape_phase + math.floor((at - scrape_phase) / scrape_s) * scrape_s

    def breaching(at: float) -> bool:
        last = last_scrape(at)
        first = last - math.floor((last - (at - 60.0)) / scrape_s) * scrape_s  # oldest in 1m
        lo, hi = bisect_right(times, first), bisect_right(times, last)
        n = hi - lo
        return n > 0 and (bad_prefix[hi] - bad_prefix[lo]) / n > threshold

    e = eval_phase + math.ceil((start_s - eval_phase) / eval_s) * eval_s
    pending: float | None = None
    while e < horizon:
        if breaching(e):
            pending = e if pending is None else pending
            if e - pending >= for_s:
                return PeerDetection(e - start_s, e + group_wait_s - start_s)
        else:
            pending = None
        e += eval_s
    return PeerDetection(math.inf, math.inf)
