"""The synthetic traffic model: which facts and service events a fleet produces.

Pure and deterministic: a :class:`TrafficModel` built with the same seed and
run id, asked the same questions with the same clock values, gives the same
answers. Nothing here reads the clock or talks to the network.

What it models:

* five services, each with a few endpoints named by route *templates*
  (``/users/{id}``, never ``/users/123``), a method and a traffic weight;
* envs ``prod`` and ``staging`` (staging runs the next version);
* per-service deploys on a fixed, seeded schedule: the version changes, a
  ``deploy`` event is emitted and prod rolls over to the new version within
  :data:`ROLLOUT_MS`;
* a diurnal rate: a sinusoid over the 24 h UTC clock whose mean is ``rate``;
* latency: lognormal per endpoint (p99 several times p50);
* status: mostly 2xx, some 4xx, rare 5xx;
* error spikes (``--spike``): for 2 to 4 minutes every 12 to 20 minutes the
  endpoint's 5xx share jumps to 30-60 %, often with an ``incident`` event and a
  ``note`` when it ends; slow windows (``--slow``) likewise multiply latency;
* bad deploys (``--regress``): every :data:`REGRESSION_EVERY`-th version of the
  endpoint's service makes that endpoint 3-5 times slower, from its deploy
  (as prod rolls over to it, and earlier on staging, which runs it first)
  until the next deploy replaces it; an ``incident`` names the version a
  minute or two after the deploy, and a ``note`` says when the next one fixed it.

Versions cycle through :data:`VERSION_CYCLE` values because the intake caps
distinct (method, path, env, version) series per service: an ever-growing
version number would hit that cap after a few days of demo traffic.
"""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from gravix.errors import ConfigError

DAY_MS = 86_400_000
MINUTE_MS = 60_000
ROLLOUT_MS = 60_000
VERSION_CYCLE = 50
STAGING_SHARE = 0.08
# Diurnal swing: the rate moves between (1 - A) and (1 + A) times ``rate``,
# peaking at 15:00 UTC.
DIURNAL_AMPLITUDE = 0.35
DIURNAL_PEAK_HOUR = 15.0
# 5xx mix: (status, share); a 504 is a gateway timeout, hence its latency.
SERVER_ERRORS: tuple[tuple[int, float], ...] = ((500, 0.5), (502, 0.2), (503, 0.2), (504, 0.1))
# Every this many versions of a service is a bad one for its --regress endpoints.
REGRESSION_EVERY = 3

Fact = dict[str, Any]
Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route of one service and how it behaves when healthy."""

    service: str
    method: str
    path: str
    weight: float  # share of its service's traffic (relative)
    median_ms: float
    sigma: float  # lognormal shape: p99/p50 = exp(2.33 * sigma)
    ok_status: int = 200
    client_errors: tuple[tuple[int, float], ...] = ((400, 0.005), (401, 0.003))
    server_error_rate: float = 0.002

    @property
    def key(self) -> str:
        """``SERVICE:METHOD:PATH``, as given to ``--spike`` and ``--slow``."""
        return f"{self.service}:{self.method}:{self.path}"


def _health(service: str) -> Endpoint:
    return Endpoint(service, "GET", "/health", 6, 1.2, 0.4, client_errors=(), server_error_rate=0)


# Service -> share of all traffic.
SERVICES: dict[str, float] = {
    "users": 0.30,
    "search": 0.25,
    "checkout": 0.20,
    "inventory": 0.15,
    "payments": 0.10,
}

ENDPOINTS: tuple[Endpoint, ...] = (
    # checkout
    Endpoint("checkout", "GET", "/cart/{cart_id}", 40, 22, 0.5, 200, ((404, 0.02),)),
    Endpoint(
        "checkout", "POST", "/cart/{cart_id}/items", 25, 38, 0.55,
        201, ((400, 0.015), (409, 0.005), (422, 0.01)),
    ),
    Endpoint(
        "checkout", "DELETE", "/cart/{cart_id}/items/{item_id}", 8, 30, 0.5,
        204, ((404, 0.03),),
    ),
    Endpoint(
        "checkout", "POST", "/checkout", 14, 180, 0.7,
        201, ((400, 0.01), (402, 0.02), (409, 0.005)), 0.004,
    ),
    _health("checkout"),
    # payments
    Endpoint(
        "payments", "POST", "/payments", 30, 240, 0.8,
        201, ((400, 0.01), (402, 0.04), (422, 0.01)), 0.004,
    ),
    Endpoint("payments", "GET", "/payments/{payment_id}", 40, 28, 0.5, 200, ((404, 0.01),)),
    Endpoint(
        "payments", "POST", "/payments/{payment_id}/refund", 4, 320, 0.8,
        201, ((404, 0.01), (409, 0.03)), 0.005,
    ),
    Endpoint("payments", "POST", "/webhooks/stripe", 12, 14, 0.45, 200, ((400, 0.01),)),
    _health("payments"),
    # users
    Endpoint("users", "GET", "/users/{id}", 55, 11, 0.5, 200, ((404, 0.015), (401, 0.004))),
    Endpoint("users", "PATCH", "/users/{id}", 6, 34, 0.55, 200, ((400, 0.02), (409, 0.01))),
    Endpoint("users", "POST", "/sessions", 15, 85, 0.6, 201, ((401, 0.06), (429, 0.005))),
    Endpoint("users", "DELETE", "/sessions/{session_id}", 5, 9, 0.45, 204, ((404, 0.01),)),
    _health("users"),
    # search
    Endpoint("search", "GET", "/search", 55, 62, 0.75, 200, ((400, 0.008),)),
    Endpoint("search", "GET", "/search/suggest", 35, 14, 0.6, 200, ((400, 0.004),)),
    _health("search"),
    # inventory
    Endpoint("inventory", "GET", "/products/{sku}", 45, 17, 0.5, 200, ((404, 0.02),)),
    Endpoint("inventory", "GET", "/products/{sku}/stock", 35, 9, 0.45, 200, ((404, 0.01),)),
    Endpoint(
        "inventory", "PUT", "/products/{sku}/stock", 6, 44, 0.6,
        client_errors=((400, 0.01), (409, 0.02)),
    ),
    _health("inventory"),
)  # fmt: skip

_CONFIG_CHANGES = (
    "feature flag {flag} set to {pct}%",
    "connection pool size raised to {n}",
    "cache TTL lowered to {n}s",
    "feature flag {flag} turned off",
)
_FLAGS = ("new-pricing", "fast-path", "async-writes", "v2-ranking", "batch-reads")


def endpoint_by_key(spec: str) -> Endpoint:
    """The endpoint named by ``SERVICE:METHOD:PATH``; ConfigError if there is none."""
    service, _, rest = spec.partition(":")
    method, _, path = rest.partition(":")
    wanted = (service.strip().lower(), method.strip().upper(), path.strip())
    for ep in ENDPOINTS:
        if (ep.service, ep.method, ep.path) == wanted:
            return ep
    if wanted[0] not in SERVICES:
        raise ConfigError(
            f"{spec!r}: no service {wanted[0]!r}; the services are {', '.join(sorted(SERVICES))}"
        )
    known = ", ".join(e.key for e in ENDPOINTS if e.service == wanted[0])
    raise ConfigError(f"{spec!r}: no such endpoint; {wanted[0]} has {known}")


@dataclass(frozen=True, slots=True)
class Schedule:
    """Windows of ``length_ms`` starting every ``period_ms``, shifted by ``phase_ms``.

    Window ``k`` covers ``[phase + k*period, phase + k*period + length)`` in
    epoch milliseconds; ``length_ms == period_ms`` makes back-to-back windows
    (used for deploys, where window ``k`` is "version ``k`` is live").
    """

    period_ms: int
    length_ms: int
    phase_ms: int

    def index(self, t_ms: int) -> int:
        return (t_ms - self.phase_ms) // self.period_ms

    def start(self, k: int) -> int:
        return self.phase_ms + k * self.period_ms

    def active(self, t_ms: int) -> int | None:
        """The index of the window covering ``t_ms``, or None."""
        k = self.index(t_ms)
        return k if t_ms - self.start(k) < self.length_ms else None

    def starts_between(self, start_ms: int, end_ms: int) -> Iterator[tuple[int, int]]:
        """``(k, start)`` of windows starting in ``[start_ms, end_ms)``."""
        k = -((self.phase_ms - start_ms) // self.period_ms)  # ceil((start - phase) / period)
        while (t := self.start(k)) < end_ms:
            yield k, t
            k += 1


def _version(k: int) -> str:
    return f"v{100 + k % VERSION_CYCLE}"


class TrafficModel:
    """Facts and service events for a simulated fleet; see the module docstring."""

    def __init__(
        self,
        *,
        rate: float = 50.0,
        seed: int | None = None,
        run_id: str | None = None,
        spikes: Iterable[str] = (),
        slows: Iterable[str] = (),
        regressions: Iterable[str] = (),
    ) -> None:
        if rate <= 0:
            raise ConfigError("the rate must be above 0 facts/s")
        self.rate = rate
        self.seed = secrets.randbits(63) if seed is None else seed
        # A random run id keeps event ids unique across runs, even with one seed.
        self.run_id = secrets.token_hex(8) if run_id is None else run_id
        self._rng = random.Random(self.seed)
        self._counter = 0
        setup = random.Random(f"{self.seed}/schedules")

        self.endpoints = ENDPOINTS
        self._index = {ep.key: i for i, ep in enumerate(ENDPOINTS)}
        weights, total = [], 0.0
        for ep in ENDPOINTS:
            service_total = sum(e.weight for e in ENDPOINTS if e.service == ep.service)
            total += SERVICES[ep.service] * ep.weight / service_total
            weights.append(total)
        self._cum_weights = weights
        self._mu = [math.log(ep.median_ms) for ep in ENDPOINTS]
        self._p4xx = [sum(p for _, p in ep.client_errors) for ep in ENDPOINTS]

        minutes = MINUTE_MS
        self.deploys = {
            s: Schedule(p := setup.randrange(8 * minutes, 20 * minutes), p, setup.randrange(p))
            for s in SERVICES
        }
        self.config_changes = {
            s: Schedule(p := setup.randrange(25 * minutes, 50 * minutes), 1, setup.randrange(p))
            for s in SERVICES
        }
        self.spikes: dict[int, Schedule] = {}
        for spec in dict.fromkeys(spikes):
            i = self._index[endpoint_by_key(spec).key]
            p = setup.randrange(12 * minutes, 20 * minutes)
            self.spikes[i] = Schedule(p, setup.randrange(120_000, 240_000), setup.randrange(p))
        self.slows: dict[int, Schedule] = {}
        for spec in dict.fromkeys(slows):
            i = self._index[endpoint_by_key(spec).key]
            p = setup.randrange(6 * minutes, 10 * minutes)
            self.slows[i] = Schedule(p, setup.randrange(90_000, 180_000), setup.randrange(p))
        # Endpoint index -> nothing: which endpoints bad versions slow down.
        self.regressions: dict[int, None] = {
            self._index[endpoint_by_key(spec).key]: None for spec in regressions
        }

    # --- time-dependent state ------------------------------------------------
    def rate_at(self, t_ms: int) -> float:
        """Target facts/s at ``t_ms``: the diurnal sinusoid around ``rate``."""
        hour = (t_ms % DAY_MS) / 3_600_000
        phase = 2 * math.pi * (hour - DIURNAL_PEAK_HOUR + 6) / 24
        return self.rate * (1 + DIURNAL_AMPLITUDE * math.sin(phase))

    def version_at(self, service: str, t_ms: int, env: str = "prod") -> str:
        """The version fully rolled out in ``env`` at ``t_ms`` (staging runs one ahead)."""
        k = self.deploys[service].index(t_ms)
        return _version(k + 1 if env == "staging" else k)

    def _window_value(self, kind: str, i: int, k: int, low: float, high: float) -> float:
        # A fresh generator per window so the value does not depend on call order.
        return random.Random(f"{self.seed}/{kind}/{i}/{k}/value").uniform(low, high)

    def spike_at(self, key: str, t_ms: int) -> float | None:
        """The 5xx share of endpoint ``key`` at ``t_ms`` if it is in a spike, else None."""
        i = self._index[key]
        schedule = self.spikes.get(i)
        k = schedule.active(t_ms) if schedule else None
        return None if k is None else self._window_value("spike", i, k, 0.3, 0.6)

    def slow_at(self, key: str, t_ms: int) -> float | None:
        """The latency factor of endpoint ``key`` at ``t_ms`` if it is slowed, else None."""
        i = self._index[key]
        schedule = self.slows.get(i)
        k = schedule.active(t_ms) if schedule else None
        return None if k is None else self._window_value("slow", i, k, 3.0, 6.0)

    def regression_factor(self, i: int, k: int) -> float | None:
        """How much slower version ``k`` makes endpoint ``i`` (None: it is not a bad one)."""
        if i not in self.regressions or k % REGRESSION_EVERY != 0:
            return None
        return self._window_value("regress", i, k, 3.0, 5.0)

    def regression_at(self, key: str, t_ms: int, env: str = "prod") -> float | None:
        """The latency factor of the version fully rolled out in ``env`` at ``t_ms``, or None."""
        i = self._index[key]
        k = self.deploys[self.endpoints[i].service].index(t_ms)
        return self.regression_factor(i, k + 1 if env == "staging" else k)

    # --- facts ---------------------------------------------------------------
    def facts(self, n: int, start_ms: int, end_ms: int) -> list[Fact]:
        """``n`` RequestFacts with timestamps spread over ``[start_ms, end_ms)``.

        Spike and slow state is taken at the middle of the interval, so keep
        intervals short (the sender uses at most about a second).
        """
        rng = self._rng
        rnd = rng.random
        lognormal = rng.lognormvariate
        span = max(end_ms - start_ms, 1)
        mid = start_ms + span // 2
        endpoints = self.endpoints
        p5xx = [ep.server_error_rate for ep in endpoints]
        mu = list(self._mu)
        sigma = [ep.sigma for ep in endpoints]
        for i in self.spikes:
            share = self.spike_at(endpoints[i].key, mid)
            if share is not None:
                p5xx[i] = share
        for i in self.slows:
            factor = self.slow_at(endpoints[i].key, mid)
            if factor is not None:
                mu[i] += math.log(factor)
                sigma[i] += 0.15
        # Per service: (time of the latest deploy, version before, version after, staging).
        rollout: dict[str, tuple[int, str, str, str]] = {}
        # Per --regress endpoint: latency factors of (before, after, staging), 1.0 if fine.
        slower: dict[int, tuple[float, float, float]] = {}
        for service, schedule in self.deploys.items():
            k = schedule.index(end_ms)
            rollout[service] = (schedule.start(k), _version(k - 1), _version(k), _version(k + 1))
            for i in self.regressions:
                if endpoints[i].service == service:
                    f = [self.regression_factor(i, j) or 1.0 for j in (k - 1, k, k + 1)]
                    slower[i] = (f[0], f[1], f[2])
        p4xx = self._p4xx
        run_id = self.run_id
        counter = self._counter
        out: list[Fact] = []
        append = out.append
        for i in rng.choices(range(len(endpoints)), cum_weights=self._cum_weights, k=n):
            ep = endpoints[i]
            ts = start_ms + int(rnd() * span)
            r = rnd()
            if r < p5xx[i]:
                status = pick_status(SERVER_ERRORS, rnd())
                latency = 10_000 + rnd() * 20_000 if status == 504 else lognormal(mu[i], sigma[i])
            elif r < p5xx[i] + p4xx[i]:
                status = pick_status(ep.client_errors, r - p5xx[i], scaled=True)
                latency = lognormal(mu[i] - 0.7, sigma[i])
            else:
                status = ep.ok_status
                latency = lognormal(mu[i], sigma[i])
            deployed, before, after, staging = rollout[ep.service]
            if rnd() < STAGING_SHARE:
                env, version, which = "staging", staging, 2
            else:
                env = "prod"
                age = ts - deployed
                rolled = age >= ROLLOUT_MS or (age >= 0 and rnd() * ROLLOUT_MS < age)
                version, which = (after, 1) if rolled else (before, 0)
            if i in slower and status != 504:
                latency *= slower[i][which]
            counter += 1
            append(
                {
                    "event_id": f"{run_id}-{counter:x}",
                    "timestamp": ts,
                    "service": ep.service,
                    "method": ep.method,
                    "path": ep.path,
                    "status": status,
                    "latency_ms": round(latency, 3),
                    "env": env,
                    "version": version,
                }
            )
        self._counter = counter
        return out

    # --- service events -------------------------------------------------------
    def events_between(self, start_ms: int, end_ms: int) -> list[Event]:
        """The ServiceEvents that happen in ``[start_ms, end_ms)``, oldest first.

        A function of the interval alone: asking twice gives the same events
        with the same ids, so adjacent intervals never repeat or skip one.
        """
        events: list[Event] = []
        for service, schedule in self.deploys.items():
            for k, t in schedule.starts_between(start_ms, end_ms):
                message = f"deployed {service} {_version(k)} to prod (was {_version(k - 1)})"
                events.append(self._event(f"deploy-{service}-{k}", t, service, "deploy", message))
                events[-1]["version"] = _version(k)
        for service, schedule in self.config_changes.items():
            for k, t in schedule.starts_between(start_ms, end_ms):
                rng = random.Random(f"{self.seed}/config/{service}/{k}")
                template = rng.choice(_CONFIG_CHANGES)
                message = template.format(
                    flag=rng.choice(_FLAGS),
                    pct=rng.choice((5, 10, 25, 50, 100)),
                    n=rng.randint(8, 64),
                )
                events.append(self._event(f"config-{service}-{k}", t, service, "config", message))
        for kind, schedules in (("spike", self.spikes), ("slow", self.slows)):
            for i, schedule in schedules.items():
                events.extend(self._window_events(kind, i, schedule, start_ms, end_ms))
        for i in self.regressions:
            events.extend(self._regression_events(i, start_ms, end_ms))
        events.sort(key=lambda e: (e["timestamp"], e["event_id"]))
        return events

    def _window_events(
        self, kind: str, i: int, schedule: Schedule, start_ms: int, end_ms: int
    ) -> Iterator[Event]:
        """An incident some time into a spike or slow window, and a note when it ends."""
        ep = self.endpoints[i]
        route = f"{ep.method} {ep.path}"
        # Windows that start before ``start_ms`` may still have events inside it.
        lookback = start_ms - schedule.length_ms - 1
        for k, t in schedule.starts_between(lookback, end_ms):
            rng = random.Random(f"{self.seed}/{kind}/{i}/{k}/events")
            if rng.random() >= (0.7 if kind == "spike" else 0.5):
                continue  # nobody noticed this one: incidents are occasional
            noticed = t + rng.randrange(10_000, min(40_000, schedule.length_ms))
            ended = t + schedule.length_ms
            what = "elevated 5xx" if kind == "spike" else "p99 latency regression"
            if start_ms <= noticed < end_ms:
                message = f"{what} on {route}; investigating"
                yield self._event(f"{kind}-{i}-{k}-open", noticed, ep.service, "incident", message)
            if start_ms <= ended < end_ms:
                message = f"{route} back to normal ({what} resolved)"
                yield self._event(f"{kind}-{i}-{k}-done", ended, ep.service, "note", message)

    def _regression_events(self, i: int, start_ms: int, end_ms: int) -> Iterator[Event]:
        """An incident a minute or two after a bad deploy, and a note at the next deploy."""
        ep = self.endpoints[i]
        route = f"{ep.method} {ep.path}"
        schedule = self.deploys[ep.service]
        for k, t in schedule.starts_between(start_ms - schedule.period_ms, end_ms):
            factor = self.regression_factor(i, k)
            if factor is None:
                continue
            rng = random.Random(f"{self.seed}/regress/{i}/{k}/events")
            noticed = t + ROLLOUT_MS + rng.randrange(30_000, 120_000)
            fixed = schedule.start(k + 1)
            if start_ms <= noticed < end_ms:
                message = (
                    f"{route} latency up {factor:.1f}x since {ep.service} {_version(k)} "
                    f"was deployed; investigating"
                )
                name = f"regress-{i}-{k}-open"
                event = self._event(name, noticed, ep.service, "incident", message)
                event["version"] = _version(k)
                yield event
            if start_ms <= fixed < end_ms:
                message = f"{route} back to normal: {_version(k + 1)} replaced {_version(k)}"
                yield self._event(f"regress-{i}-{k}-done", fixed, ep.service, "note", message)

    def _event(self, name: str, t_ms: int, service: str, kind: str, message: str) -> Event:
        return {
            "event_id": f"{self.run_id}-{name}",
            "timestamp": t_ms,
            "service": service,
            "kind": kind,
            "message": message,
        }


def pick_status(choices: tuple[tuple[int, float], ...], r: float, *, scaled: bool = False) -> int:
    """The status whose cumulative share covers ``r``.

    ``scaled``: ``r`` is already in ``[0, sum of shares)`` rather than ``[0, 1)``.
    """
    if not scaled:
        r *= sum(p for _, p in choices)
    for status, p in choices:
        if r < p:
            return status
        r -= p
    return choices[-1][0]
