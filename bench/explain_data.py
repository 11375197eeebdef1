"""The accuracy benchmark's incidents: known causes planted in the loadgen's traffic.

**Background**: the loadgen's fleet (:class:`gravix.loadgen.traffic.TrafficModel`,
no spikes, slow windows or bad deploys of its own): five services, 20
routes, envs ``prod`` and ``staging`` (8%), a deploy every 8-20 minutes per
service, 0.2-0.5% 5xx and 1-6% 4xx per route, log-normal latencies from 1 ms
to seconds, a diurnal rate. It is sent by the demo's own path
(:func:`gravix.loadgen.history.send_history`), with explicit past timestamps.

**Timeline**: incident ``n`` of ``count`` has a slot of two windows of
``window_ms`` (5 minutes by default), back to back, ``count - 1 - n`` slots
before the end (``plan``'s ``end_ms``): the first is its ``previous``
baseline, the second its window; every other incident is asked against
``1d`` instead, and has the same window a day earlier sent too (the
incidents together span less than a day, so no day-earlier window holds one).

**Causes**, one kind in six each, shuffled by the seed; the element must hold
at least ``min_share`` of the traffic (by the model's weights):

* ``route``: one route (``GET /search``, all its services) fails: a share of
  10-50% of its requests become 5xx (the loadgen's mix: 500, 502, 503, 504);
* ``version``: the version of one service live in prod over the whole window
  fails likewise (cause ``{service, version}``);
* ``env``: one env fails likewise;
* ``status``: 3-15% of all requests become 503 (a proxy shedding load);
* ``latency``: 30-80% of one route's requests get 1-3 times the baseline's
  p95 of the whole traffic added (a downstream call timing out once and
  retried): ``measure=latency`` counts requests slower than that p95, so a
  slowdown that stays under it is not one this measure sees;
* ``route_version``: one route on one version fails likewise, the route also
  serving another version (staging's) and the version other routes.

A finding **names** the cause when it selects the same facts of the window
(:func:`selects`): ``{"route": "POST /checkout"}`` and
``{"service": "checkout", "route": "POST /checkout"}`` are the same answer, a
parent of the two-dimension cause alone is not.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from gravix.loadgen.traffic import (
    ENDPOINTS,
    ROLLOUT_MS,
    SERVER_ERRORS,
    SERVICES,
    STAGING_SHARE,
    Fact,
    TrafficModel,
    pick_status,
)
from gravix.schema.paths import normalise_path

MINUTE_MS: Final = 60_000
DAY_MS: Final = 86_400_000
KINDS: Final = ("route", "version", "env", "status", "latency", "route_version")
MEASURE: Final = {"latency": "latency"}  # every other kind: errors
# One fact's key, as the explanation can tell facts apart.
Key = tuple[str, str, str, str, str, int]  # service, method, path, env, version, status


@dataclass(slots=True)
class Incident:
    """One planted cause and what was recorded of its window while it was sent."""

    n: int
    kind: str
    baseline: str  # "previous" or "1d"
    from_ms: int
    to_ms: int
    cause: dict[str, str]
    size: float  # the share of the element's requests changed
    delay_factor: float | None = None  # latency: the delay over the baseline's p95
    delay_ms: float | None = None
    planted: int = 0  # facts changed
    window_keys: dict[Key, int] = field(default_factory=dict)  # fact key -> facts
    baseline_latencies: list[float] = field(default_factory=list)

    @property
    def measure(self) -> str:
        return MEASURE.get(self.kind, "errors")

    @property
    def baseline_range(self) -> tuple[int, int]:
        width = self.to_ms - self.from_ms
        shift = DAY_MS if self.baseline == "1d" else width
        return self.from_ms - shift, self.to_ms - shift

    def describe(self) -> str:
        element = ", ".join(f"{k}={v}" for k, v in self.cause.items())
        size = f"{self.size:.0%} of its requests"
        if self.kind == "latency":
            size += f" + {self.delay_factor or 0:.1f}x the baseline's p95"
        return f"{self.kind}: {element}, {size}"


def route_of(method: str, path: str) -> str:
    return f"{method} {normalise_path(path)}"


def key_of(fact: Fact) -> Key:
    return (fact["service"], fact["method"], normalise_path(fact["path"]), fact["env"],
            fact["version"], fact["status"])  # fmt: skip


def selects(element: dict[str, Any], key: Key) -> bool:
    """Whether a finding's (or a cause's) element covers facts of ``key``."""
    service, method, path, env, version, status = key
    values = {
        "service": service, "method": method, "path": path, "env": env, "version": version,
        "status": str(status), "route": f"{method} {path}", "status class": f"{status // 100}xx",
    }  # fmt: skip
    return all(d in values and str(v) == values[d] for d, v in element.items())


def same_facts(element: dict[str, Any], cause: dict[str, str], keys: Iterable[Key]) -> bool:
    """Whether ``element`` selects exactly the window's facts that ``cause`` does."""
    ks = list(keys)
    wanted = {k for k in ks if selects(cause, k)}
    return bool(wanted) and wanted == {k for k in ks if selects(element, k)}


def _route_shares() -> dict[str, float]:
    """Each route's share of all traffic, by the model's weights."""
    shares: dict[str, float] = {}
    for ep in ENDPOINTS:
        total = sum(e.weight for e in ENDPOINTS if e.service == ep.service)
        route = route_of(ep.method, ep.path)
        shares[route] = shares.get(route, 0.0) + SERVICES[ep.service] * ep.weight / total
    return shares


def _endpoint_shares() -> dict[tuple[str, str], float]:
    """(service, route) -> share of all traffic."""
    out = {}
    for ep in ENDPOINTS:
        total = sum(e.weight for e in ENDPOINTS if e.service == ep.service)
        out[(ep.service, route_of(ep.method, ep.path))] = SERVICES[ep.service] * ep.weight / total
    return out


def _steady_version(model: TrafficModel, service: str, from_ms: int, to_ms: int) -> str | None:
    """The prod version of ``service`` over all of [from_ms, to_ms), or None if a
    deploy rolls out in it."""
    schedule = model.deploys[service]
    k = schedule.index(from_ms)
    if from_ms - schedule.start(k) < ROLLOUT_MS or schedule.index(to_ms - 1) != k:
        return None
    return model.version_at(service, from_ms)


def plan(
    model: TrafficModel, count: int, end_ms: int, window_ms: int, seed: int, min_share: float
) -> list[Incident]:
    """``count`` incidents (module docstring), the last window ending at ``end_ms``."""
    rng = random.Random(f"{seed}/incidents")
    kinds = [KINDS[i % len(KINDS)] for i in range(count)]
    rng.shuffle(kinds)
    routes = sorted(r for r, s in _route_shares().items() if s >= min_share)
    endpoints = _endpoint_shares()
    incidents = []
    for n, kind in enumerate(kinds):
        to_ms = end_ms - (count - 1 - n) * 2 * window_ms
        from_ms = to_ms - window_ms
        baseline = "previous" if n % 2 == 0 else "1d"
        steady: dict[str, str | None]
        steady = {s: _steady_version(model, s, from_ms, to_ms) for s in SERVICES}
        if not any(steady.values()):  # every service deploys in the window: the newest
            steady = {s: model.version_at(s, to_ms - 1) for s in SERVICES}
        versions = [
            (s, v) for s, v in sorted(steady.items())
            if v is not None and SERVICES[s] * (1 - STAGING_SHARE) >= min_share
        ]  # fmt: skip
        size = rng.uniform(0.1, 0.5)
        if kind in ("route", "latency"):
            cause = {"route": rng.choice(routes)}
        elif kind == "version" and versions:
            service, version = rng.choice(versions)
            cause = {"service": service, "version": version}
        elif kind == "env":
            cause = {"env": rng.choice(["prod", "staging"])}
        elif kind == "status":
            cause, size = {"status": "503"}, rng.uniform(0.03, 0.15)
        else:
            pairs = [
                (route, v) for (service, route), share in sorted(endpoints.items())
                if (v := steady[service]) is not None
                and share * (1 - STAGING_SHARE) >= min_share
                and sum(1 for (s, _) in endpoints if s == service) > 1
            ]  # fmt: skip
            if kind == "version" or not pairs:
                raise ValueError(f"incident {n}: no {kind} holds {min_share:.0%} of the traffic")
            route, version = rng.choice(pairs)
            cause = {"route": route, "version": version}
        incident = Incident(n, kind, baseline, from_ms, to_ms, cause, size)
        if kind == "latency":
            incident.size = rng.uniform(0.3, 0.8)
            incident.delay_factor = rng.uniform(1.0, 3.0)
        incidents.append(incident)
    return incidents


class IncidentModel(TrafficModel):
    """The loadgen's model with the incidents planted in their windows' facts.

    The facts of each incident's baseline and window are recorded as they go
    by (keys, and the baseline's latencies), so that a latency incident's
    delay can be set from its baseline's p95, which was sent before it.
    """

    def __init__(self, incidents: list[Incident], *, rate: float, seed: int) -> None:
        super().__init__(rate=rate, seed=seed, run_id=f"explain-{seed}")
        self.incidents = incidents
        self._plant_rng = random.Random(f"{seed}/plant")

    def facts(self, n: int, start_ms: int, end_ms: int) -> list[Fact]:
        out = super().facts(n, start_ms, end_ms)
        for incident in self.incidents:
            lo, hi = incident.baseline_range
            if lo <= start_ms < hi and incident.kind == "latency":
                incident.baseline_latencies += [f["latency_ms"] for f in out]
            if incident.from_ms <= start_ms < incident.to_ms:
                self._plant(incident, out)
                for f in out:
                    key = key_of(f)
                    incident.window_keys[key] = incident.window_keys.get(key, 0) + 1
        return out

    def _plant(self, incident: Incident, facts: list[Fact]) -> None:
        rnd = self._plant_rng.random
        if incident.kind == "latency" and incident.delay_ms is None:
            latencies = sorted(incident.baseline_latencies)
            p95 = latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)] if latencies else 100.0
            incident.delay_ms = round(p95 * (incident.delay_factor or 1.0), 3)
        for f in facts:
            if not selects(incident.cause, key_of(f)) and incident.kind != "status":
                continue
            if rnd() >= incident.size:
                continue
            if incident.kind == "latency":
                f["latency_ms"] = round(f["latency_ms"] + (incident.delay_ms or 0.0), 3)
            elif incident.kind == "status":
                if f["status"] >= 500:
                    continue
                f["status"] = 503
            else:
                if f["status"] >= 500:
                    continue
                f["status"] = pick_status(SERVER_ERRORS, rnd(), scaled=True)
                if f["status"] == 504:
                    f["latency_ms"] = round(10_000 + rnd() * 20_000, 3)
            incident.planted += 1
