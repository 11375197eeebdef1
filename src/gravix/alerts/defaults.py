"""The default alert rules: what ``gravix demo`` gives its tenant, and a starting
point for any other (:func:`install` saves them with a tenant's channels).

They are tuned on the demo's traffic (:mod:`gravix.loadgen.traffic` at its
50 facts/s: 5 services, 22 endpoints, 0.2% of requests 5xx, 1 to 2 requests/s
on the endpoints its 5xx spikes hit) and on what the evaluator measures: a
ratio over ``window`` is the whole minutes before the current one plus the
current minute as far as it has arrived, every 10 s.

- **5xx rate per endpoint** (``error_rate > 10%`` over ``1m``, one series per
  service, method and path). Per endpoint, not per service: a loadgen spike
  sends 30-60% of one endpoint's requests to 5xx, but that endpoint carries
  15% of checkout's traffic, so checkout as a whole sees 4.5-9%, which a
  service threshold could only catch close to the 0.2% floor. ``1m`` is the
  current minute alone: a spike is diluted by at most the part of the minute
  before it (a 2m window would add a whole healthy minute). 10% and
  ``min_requests`` 30 because false pages come from few requests: with 30 or
  more, firing takes at least 4 failures where a healthy 0.4% endpoint
  expects 0.12 (a chance of 1 in 100,000 a minute); fewer than 30 requests
  never page. ``for`` 0: the first evaluation that sees it fires.
  ``keep_firing_for`` 2m and a 5% ``recover_threshold``: the first seconds of
  each minute hold fewer than 30 requests and read as good, which must not
  resolve a spike that is still on.
- **p95 latency per service** over ``5m``, one rule per service with its own
  threshold (:data:`DEMO_P95_MS`, about twice the highest p95 of five healthy
  minutes of the demo's traffic), as one endpoint's normal latency is another's
  regression (the demo's refunds take 1.2 s at p95, a slow search 0.6 s);
  services not named get :data:`OTHER_P95_MS`. ``for`` 1m: a latency blip of
  one evaluation pages nobody; a bad deploy lasts until the next one.
- **Availability SLO** of 99.5% over 30 days (multi-window burn rates,
  :mod:`gravix.alerts.slo`). Not 99.9%: the demo's healthy traffic fails 0.2%
  of its requests, twice a 99.9% budget, so the ticket pair (1x over 3 days
  and 6 hours) would fire on traffic with no incident at all.
- **Went silent** per service: no facts for 5 minutes from a service that sent
  some in the hour before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from gravix.alerts.rules import AlertStore
from gravix.schema import alerts as schema

# p95 thresholds (ms) of the demo's services; a service's rule recovers under
# RECOVER_SHARE of its threshold.
DEMO_P95_MS: Final[Mapping[str, float]] = {
    "checkout": 500.0,  # healthy 5-minute p95: 190-300 ms
    "payments": 1200.0,  # 460-760 ms (refunds and card payments are slow)
    "search": 400.0,  # 155-190 ms; a bad deploy of /search: 250-870 ms
    "users": 250.0,  # 105-135 ms
    "inventory": 100.0,  # 37-49 ms
}
OTHER_P95_MS: Final = 1000.0
RECOVER_SHARE: Final = 0.75
BY_ENDPOINT: Final = ("service", "method", "path")


def error_rate_rule() -> schema.Threshold:
    return schema.Threshold(
        name="5xx rate per endpoint",
        metric="error_rate",
        op=">",
        threshold=0.10,
        recover_threshold=0.05,
        window="1m",
        for_="0s",
        keep_firing_for="2m",
        min_requests=30,
        group_by=list(BY_ENDPOINT),
        description=(
            "More than 10% of an endpoint's requests answered 5xx in the current minute "
            "(at least 30 requests); recovers under 5% and resolves after 2 minutes good."
        ),
    )


def latency_rules(p95_ms: Mapping[str, float], other_ms: float = OTHER_P95_MS) -> list[schema.Rule]:
    """One p95 rule per service of ``p95_ms``, and one for every other service."""
    rules: list[schema.Rule] = [
        _p95(
            f"p95 latency: {service}",
            ms,
            [schema.Matcher("service", [service], "eq")],
            [],
            f"{service}'s p95 latency over 5 minutes above {ms:g} ms for a minute.",
        )
        for service, ms in sorted(p95_ms.items())
    ]
    others = [schema.Matcher("service", [*sorted(p95_ms)], "not_in")] if p95_ms else []
    rules.append(
        _p95(
            "p95 latency: other services",
            other_ms,
            others,
            ["service"],
            f"The p95 latency of a service without a rule of its own above {other_ms:g} ms.",
        )
    )
    return rules


def _p95(
    name: str, ms: float, filters: list[schema.Matcher], group_by: list[str], description: str
) -> schema.Threshold:
    return schema.Threshold(
        name=name,
        metric="p95",
        op=">",
        threshold=ms,
        recover_threshold=ms * RECOVER_SHARE,
        window="5m",
        for_="1m",
        keep_firing_for="2m",
        min_requests=50,
        filters=filters,
        group_by=group_by,
        description=description,
    )


def availability_rule() -> schema.Slo:
    return schema.Slo(
        name="availability 99.5% (30d)",
        objective="availability",
        target=0.995,
        period="30d",
        description="99.5% of all requests answered without a 5xx over 30 days (burn rates).",
    )


def silent_rule() -> schema.Silent:
    return schema.Silent(
        name="went silent",
        after="5m",
        group_by=["service"],
        description="A service that sent facts in the last hour sent none for 5 minutes.",
    )


def default_rules(p95_ms: Mapping[str, float] = DEMO_P95_MS) -> list[schema.Rule]:
    """The default rules (module docstring), routed to no channel yet."""
    return [error_rate_rule(), *latency_rules(p95_ms), availability_rule(), silent_rule()]


@dataclass(frozen=True, slots=True)
class Installed:
    """What :func:`install` changed."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    channels_saved: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.channels_saved)


def install(
    store: AlertStore,
    tenant: str,
    channels: Sequence[schema.Channel],
    *,
    rules: Sequence[schema.Rule] | None = None,
    enabled: bool = True,
    by: str = "defaults",
) -> Installed:
    """Save ``channels`` and the default rules (or ``rules``) routed to all of them.

    Idempotent: a channel or rule already stored as it would be written is left
    alone, so a second call with the same arguments changes nothing (and keeps
    the rules' alert states). A rule of the same name that differs is replaced,
    which starts its series over (:meth:`AlertStore.save_rule`). ``enabled``
    False keeps the rules but stops their evaluation (``gravix demo`` does so
    while it sends past traffic).
    """
    stored = store.channels(tenant)
    saved = 0
    for channel in channels:
        if stored.get(channel.name) != channel:
            store.save_channel(tenant, channel)
            saved += 1
    names = [c.name for c in channels]
    existing = {s.rule.name: s for s in store.rules(tenant)}
    created = updated = unchanged = 0
    for rule in default_rules() if rules is None else rules:
        wanted = msgspec.structs.replace(rule, channels=names, enabled=enabled)
        old = existing.get(wanted.name)
        if old is None:
            store.save_rule(tenant, wanted, by)
            created += 1
        elif old.rule != wanted:
            store.save_rule(tenant, wanted, by, old.id)
            updated += 1
        else:
            unchanged += 1
    return Installed(created, updated, unchanged, saved)
