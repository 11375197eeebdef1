"""The traffic model: deterministic, realistic, and only ever route templates."""

from __future__ import annotations

import re
import statistics

import pytest

from gravix.errors import ConfigError
from gravix.loadgen.traffic import (
    DAY_MS,
    ENDPOINTS,
    ROLLOUT_MS,
    SERVICES,
    TrafficModel,
    endpoint_by_key,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PATH_RE = re.compile(r"^(/[a-z0-9._{}-]*)+$")
SERVICE_RE = re.compile(r"^[a-z0-9._-]+$")
SPIKE = "checkout:POST:/checkout"
SLOW = "search:GET:/search"


def _is_template(path: str) -> bool:
    segments = path.split("/")[1:]
    return bool(PATH_RE.match(path)) and not any(s.isdigit() for s in segments)


def test_same_seed_same_traffic() -> None:
    a, b = (TrafficModel(seed=7, run_id="run", spikes=[SPIKE]) for _ in range(2))
    for i in range(5):
        start = T0 + i * 1000
        assert a.facts(200, start, start + 1000) == b.facts(200, start, start + 1000)
    assert a.events_between(T0, T0 + DAY_MS) == b.events_between(T0, T0 + DAY_MS)
    other = TrafficModel(seed=8, run_id="run")
    assert other.facts(200, T0, T0 + 1000) != TrafficModel(seed=7, run_id="run").facts(
        200, T0, T0 + 1000
    )


def test_only_route_templates() -> None:
    assert all(_is_template(ep.path) for ep in ENDPOINTS)
    model = TrafficModel(seed=3)
    paths = {f["path"] for f in model.facts(10_000, T0, T0 + 60_000)}
    assert paths == {ep.path for ep in ENDPOINTS}
    assert all(_is_template(p) for p in paths)
    assert "/users/{id}" in paths and "/cart/{cart_id}/items" in paths and "/health" in paths


def test_event_ids_are_unique_within_and_across_runs() -> None:
    model = TrafficModel(seed=1)
    ids = {f["event_id"] for i in range(100) for f in model.facts(1000, T0 + i, T0 + i + 1)}
    assert len(ids) == 100_000
    again = TrafficModel(seed=1)  # same seed, new run: new random run id
    assert not ids & {f["event_id"] for f in again.facts(1000, T0, T0 + 1)}
    assert all(1 <= len(i) <= 64 for i in ids)


def test_every_fact_is_valid() -> None:
    model = TrafficModel(seed=4, spikes=[SPIKE], slows=[SLOW])
    methods = {"GET", "POST", "PUT", "PATCH", "DELETE"}
    versions = {
        model.version_at(s, T0 + 30_000, env) for s in SERVICES for env in ("prod", "staging")
    }
    facts = model.facts(10_000, T0, T0 + 30_000)
    for f in facts:
        assert set(f) == {
            "event_id", "timestamp", "service", "method", "path",
            "status", "latency_ms", "env", "version",
        }  # fmt: skip
        assert isinstance(f["event_id"], str) and 1 <= len(f["event_id"]) <= 64
        assert isinstance(f["timestamp"], int) and T0 <= f["timestamp"] < T0 + 30_000
        assert f["service"] in SERVICES and SERVICE_RE.match(f["service"])
        assert f["method"] in methods
        assert isinstance(f["status"], int) and 100 <= f["status"] <= 599
        assert isinstance(f["latency_ms"], float) and f["latency_ms"] >= 0
        assert f["env"] in ("prod", "staging")
        assert f["version"] in versions or f["env"] == "prod"  # prod may still roll out
    statuses = [f["status"] for f in facts]
    share = {c: sum(s // 100 == c for s in statuses) / len(statuses) for c in (2, 4, 5)}
    assert share[2] > 0.9 and 0.005 < share[4] < 0.08 and share[5] < 0.03
    staging = sum(f["env"] == "staging" for f in facts) / len(facts)
    assert 0.03 < staging < 0.15


def test_latency_has_a_long_tail() -> None:
    model = TrafficModel(seed=5)
    latencies = sorted(
        f["latency_ms"]
        for f in model.facts(15_000, T0, T0 + 60_000)
        if f["path"] == "/search" and f["status"] == 200
    )
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99)]
    assert p99 > 3 * p50


def _inside_and_outside(model: TrafficModel, key: str, slow: bool) -> tuple[list[int], list[int]]:
    """Times in the middle of 12 windows of ``key``, and 12 times outside any."""
    at = model.slow_at if slow else model.spike_at
    inside: list[int] = []
    outside: list[int] = []
    t = T0
    while len(inside) < 12 or len(outside) < 12:
        t += 7_000
        active = at(key, t) is not None and at(key, t - 2000) is not None
        quiet = at(key, t) is None and at(key, t - 2000) is None
        if active and len(inside) < 12:
            inside.append(t)
        elif quiet and len(outside) < 12:
            outside.append(t)
    return inside, outside


def test_spike_raises_the_5xx_share_of_its_endpoint_only() -> None:
    model = TrafficModel(seed=6, spikes=[SPIKE])

    def shares(times: list[int]) -> tuple[float, float]:
        facts = [f for t in times for f in model.facts(1500, t - 1000, t)]
        target = [f["status"] >= 500 for f in facts if f["path"] == "/checkout"]
        others = [f["status"] >= 500 for f in facts if f["path"] != "/checkout"]
        return sum(target) / len(target), sum(others) / len(others)

    inside, outside = _inside_and_outside(model, SPIKE, slow=False)
    spiked, others_during = shares(inside)
    normal, _ = shares(outside)
    assert spiked > 0.25 and normal < 0.03 and spiked > 10 * max(normal, 0.001)
    assert others_during < 0.03


def test_slow_endpoint_gets_slower_during_its_window() -> None:
    model = TrafficModel(seed=6, slows=[SLOW])

    def median(times: list[int]) -> float:
        return statistics.median(
            f["latency_ms"]
            for t in times
            for f in model.facts(800, t - 1000, t)
            if f["path"] == "/search"
        )

    inside, outside = _inside_and_outside(model, SLOW, slow=True)
    assert median(inside) > 2.5 * median(outside)


def test_deploy_events_appear_when_versions_change() -> None:
    model = TrafficModel(seed=9)
    start, end = T0, T0 + 3_600_000
    deploys = [e for e in model.events_between(start, end) if e["kind"] == "deploy"]
    changes = [
        (service, t)
        for service in SERVICES
        for t in range(start + 1000, end, 1000)
        if model.version_at(service, t) != model.version_at(service, t - 1000)
    ]
    assert len(deploys) == len(changes) >= len(SERVICES) * 2
    for event in deploys:
        service, t = event["service"], event["timestamp"]
        assert model.version_at(service, t) == event["version"] != model.version_at(service, t - 1)
        assert any(s == service and t - 1000 < c <= t + 1000 for s, c in changes)
        # A minute after the deploy, prod traffic runs the new version.
        after = model.facts(2000, t + ROLLOUT_MS, t + ROLLOUT_MS + 1000)
        assert {f["version"] for f in after if f["service"] == service and f["env"] == "prod"} == {
            event["version"]
        }


def test_events_are_valid_and_intervals_compose() -> None:
    model = TrafficModel(seed=10, spikes=[SPIKE], slows=[SLOW])
    whole = model.events_between(T0, T0 + 6 * 3_600_000)
    parts = [
        e for i in range(360) for e in model.events_between(T0 + i * 60_000, T0 + (i + 1) * 60_000)
    ]
    assert whole == parts
    assert len({e["event_id"] for e in whole}) == len(whole)
    kinds = {e["kind"] for e in whole}
    assert kinds == {"deploy", "config", "incident", "note"}
    for e in whole:
        assert 1 <= len(e["event_id"]) <= 64 and e["service"] in SERVICES and e["message"]
        assert T0 <= e["timestamp"] < T0 + 6 * 3_600_000
    incidents = [e for e in whole if e["kind"] == "incident"]
    assert any("POST /checkout" in e["message"] for e in incidents)
    assert all(model.spike_at(SPIKE, e["timestamp"]) or model.slow_at(SLOW, e["timestamp"])
               for e in incidents)  # fmt: skip


def test_diurnal_rate_averages_to_the_rate() -> None:
    model = TrafficModel(rate=100, seed=1)
    rates = [model.rate_at(T0 + m * 60_000) for m in range(24 * 60)]
    assert statistics.mean(rates) == pytest.approx(100, rel=0.01)
    assert max(rates) > 125 and min(rates) < 75
    assert rates.index(max(rates)) // 60 == 15  # peak in the afternoon (UTC)


def test_unknown_endpoint_is_a_config_error() -> None:
    assert endpoint_by_key(SPIKE).path == "/checkout"
    with pytest.raises(ConfigError, match="checkout has"):
        endpoint_by_key("checkout:GET:/nope")
    with pytest.raises(ConfigError, match="no service"):
        TrafficModel(spikes=["billing:GET:/invoices"])


REGRESS = "search:GET:/search"


def test_every_third_deploy_slows_its_endpoint_until_the_next_one() -> None:
    model = TrafficModel(seed=2, regressions=[REGRESS])
    schedule = model.deploys["search"]
    slow_k = next(k for k, _ in schedule.starts_between(T0, T0 + DAY_MS) if k % 3 == 0)
    bad_start, fixed = schedule.start(slow_k), schedule.start(slow_k + 1)
    assert model.regression_at(REGRESS, bad_start + ROLLOUT_MS) is not None
    assert model.regression_at(REGRESS, fixed) is None
    assert model.regression_at(REGRESS, bad_start - 1) is None

    def p50(start: int, version: str) -> float:
        facts = model.facts(6000, start, start + 1000)
        return statistics.median(
            f["latency_ms"]
            for f in facts
            if f["path"] == "/search" and f["version"] == version and f["status"] < 500
        )

    bad, good = (
        model.version_at("search", bad_start + ROLLOUT_MS),
        model.version_at("search", fixed),
    )
    assert p50(bad_start + ROLLOUT_MS, bad) > 2.5 * p50(fixed + ROLLOUT_MS, good)
    # Only that endpoint: its sibling keeps its speed under the bad version.
    during = model.facts(6000, bad_start + ROLLOUT_MS, bad_start + ROLLOUT_MS + 1000)
    others = [
        f["latency_ms"] for f in during if f["path"] == "/search/suggest" and f["status"] < 400
    ]
    assert statistics.median(others) < 30


def test_a_bad_deploy_has_an_incident_naming_it_and_a_note_when_fixed() -> None:
    model = TrafficModel(seed=2, regressions=[REGRESS])
    whole = model.events_between(T0, T0 + 6 * 3_600_000)
    parts = [
        e for i in range(36) for e in model.events_between(T0 + i * 600_000, T0 + (i + 1) * 600_000)
    ]
    assert whole == parts
    incidents = [e for e in whole if e["kind"] == "incident"]
    notes = [e for e in whole if e["kind"] == "note"]
    assert incidents and len(notes) >= len(incidents) - 1
    for e in incidents:
        assert e["message"].startswith("GET /search latency up ")
        assert f"since search {e['version']} was deployed" in e["message"]
        assert model.version_at("search", e["timestamp"]) == e["version"]
        assert model.regression_at(REGRESS, e["timestamp"]) is not None
