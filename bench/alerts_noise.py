"""Noise: the default rules over 24 hours of the demo's traffic, replayed by the backtest.

Time-compressed: ``--hours`` of past traffic of ``gravix demo`` (its model at
its 50 facts/s, seed :data:`gravix.demo.DEMO_SEED`) are sent at once to a real
``gravix serve`` (:func:`gravix.loadgen.history.send_history`, the demo's own
path), for two tenants: ``quiet`` with the incidents off, ``incidents`` with
the demo's 5xx spikes and bad deploys. Once the rollup has folded every fact
into the minute tier, :func:`gravix.alerts.backtest.run` replays each default
rule over the range, stepping each series through the live evaluator's state
code (:func:`gravix.alerts.states.step`) once a minute on whole minutes: not
the evaluator's 10-second cadence, and not 24 hours of wall time.

Expected: no notification for ``quiet``; for ``incidents``, every injected
incident (the model's own schedule, :func:`incidents`) fires on its rule and
series and resolves after it ends, within the rule's window and timing.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from pathlib import Path
from typing import Any, Final

import msgspec

from bench.servers import BenchError, gravix_server, make_key, prometheus_values
from bench.steady import minute_tier_requests
from gravix.alerts import backtest, defaults
from gravix.config import load_settings
from gravix.demo import DEMO_REGRESSIONS, DEMO_SEED, DEMO_SPIKES
from gravix.loadgen.history import send_history
from gravix.loadgen.traffic import TrafficModel
from gravix.query.engines import make_engine
from gravix.query.service import QueryService
from gravix.schema import alerts as schema
from gravix.schema.paths import normalise_path
from gravix.storage.local import LocalObjectStore

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DEMO_RATE: Final = 50.0
# The store's timing only (not the alerts'): history reaches the minute tier sooner.
SERVER_ENV: Final = {
    "GRAVIX_ALERTS_ENABLED": "false",  # the backtest replays; nothing evaluates live
    "GRAVIX_SEGMENT_MAX_AGE_SECONDS": "5",
    "GRAVIX_ROLLUP_INTERVAL_SECONDS": "10",
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def models() -> dict[str, TrafficModel]:
    return {
        "quiet": TrafficModel(rate=DEMO_RATE, seed=DEMO_SEED, run_id="quiet"),
        "incidents": TrafficModel(rate=DEMO_RATE, seed=DEMO_SEED, run_id="incidents",
                                  spikes=DEMO_SPIKES, regressions=DEMO_REGRESSIONS),
    }  # fmt: skip


def incidents(model: TrafficModel, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    """The model's 5xx spikes and bad deploys overlapping [start_ms, end_ms), and the
    rule and series each should fire on."""
    found: list[dict[str, Any]] = []
    for i, schedule in model.spikes.items():
        ep = model.endpoints[i]
        for _, t in schedule.starts_between(start_ms - schedule.length_ms, end_ms):
            found.append({
                "kind": "5xx spike", "endpoint": ep.key, "start": t, "end": t + schedule.length_ms,
                "size": round(model.spike_at(ep.key, t) or 0.0, 3),
                "rule": defaults.error_rate_rule().name,
                "series": {"method": ep.method, "path": normalise_path(ep.path),
                           "service": ep.service},
            })  # fmt: skip
    for i in model.regressions:
        ep = model.endpoints[i]
        deploys = model.deploys[ep.service]
        for k, t in deploys.starts_between(start_ms - deploys.period_ms, end_ms):
            factor = model.regression_factor(i, k)
            if factor is None:
                continue
            found.append({
                "kind": "bad deploy", "endpoint": ep.key, "start": t, "end": deploys.start(k + 1),
                "size": round(factor, 2), "rule": f"p95 latency: {ep.service}", "series": {},
            })  # fmt: skip
    return sorted(found, key=lambda f: f["start"])


def slack_ms(rule: schema.Rule) -> tuple[int, int]:
    """How late a rule may fire after an incident starts, and resolve after it ends:
    its window, ``for`` and ``keep_firing_for``, plus two steps of the backtest."""
    if not isinstance(rule, schema.Threshold):
        return 3 * MINUTE_MS, 3 * MINUTE_MS
    window = schema.duration_ms(rule.window, "window")
    hold = schema.duration_ms(rule.for_, "for", zero=True)
    keep = schema.duration_ms(rule.keep_firing_for, "keep_firing_for", zero=True)
    return window + hold + 2 * MINUTE_MS, window + keep + 2 * MINUTE_MS


def judge(
    rules: list[schema.Rule], results: dict[str, dict[str, Any]], expected: list[dict[str, Any]],
    start_ms: int, end_ms: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """Each incident with the firing that answers it (or why none does), and the
    firings that answer no incident."""
    by_name = {r.name: r for r in rules}
    used: set[tuple[str, int]] = set()
    judged = []
    for inc in expected:
        rule = by_name[inc["rule"]]
        late_fire, late_resolve = slack_ms(rule)
        row = dict(inc)
        candidates = [
            (n, f) for n, f in enumerate(results[rule.name]["firing"])
            if f["series"] == inc["series"] and f["start"] < inc["end"] + late_fire
            and (f["end"] is None or f["end"] > inc["start"])
        ]  # fmt: skip
        used |= {(rule.name, n) for n, _ in candidates}
        if inc["start"] < start_ms + 15 * MINUTE_MS or inc["end"] + late_resolve > end_ms:
            row["verdict"] = "at the edge of the range: not judged"
            judged.append(row)
            continue
        if not candidates:
            row["verdict"] = "missed: no firing of its rule and series"
            judged.append(row)
            continue
        first = candidates[0][1]
        row["fired_after_s"] = (first["start"] - inc["start"]) / 1000
        last = candidates[-1][1]
        row["resolved_after_s"] = None if last["end"] is None else (last["end"] - inc["end"]) / 1000
        row["firings"] = len(candidates)
        problems = []
        if first["start"] < inc["start"]:
            problems.append("fired before the incident began")
        if first["start"] > inc["start"] + late_fire:
            problems.append(f"fired {row['fired_after_s']:.0f} s after it began")
        if last["end"] is None or last["end"] > inc["end"] + late_resolve:
            problems.append("not resolved in time after it ended")
        elif last["end"] < inc["end"]:
            problems.append("resolved before it ended")
        if len(candidates) > 1:
            problems.append(f"fired {len(candidates)} times (flapped)")
        row["verdict"] = "; ".join(problems) or "notified and resolved"
        judged.append(row)
    unmatched = [
        {"rule": name, **f}
        for name, result in results.items()
        for n, f in enumerate(result["firing"])
        if (name, n) not in used
    ]
    return judged, unmatched


def replay(
    data_dir: Path, tenants: list[str], rules: list[schema.Rule], end_ms: int, days: int
) -> dict[str, dict[str, dict[str, Any]]]:
    """``backtest.run`` of each rule for each tenant over the data dir's store."""
    settings = load_settings(data_dir=data_dir)
    store = LocalObjectStore(data_dir / "store")
    queries = QueryService(store, settings.spool_dir, make_engine(settings, store),
                           cache_dir=data_dir / "cache" / "bench")  # fmt: skip
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for tenant in tenants:
        out[tenant] = {}
        for rule in rules:
            t0 = time.perf_counter()
            result = backtest.run(queries, settings, tenant, rule, end_ms, days)
            out[tenant][rule.name] = {
                "notifications": result["notifications"],
                "firing": result["firing"],
                "seconds": round(time.perf_counter() - t0, 2),
                "note": result["note"],
            }
    return out


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data_dir = work / "noise"
    data_dir.mkdir()
    traffic = models()
    keys = {tenant: make_key(data_dir, tenant=tenant) for tenant in traffic}
    end_ms = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    start_ms = end_ms - int(args.hours * HOUR_MS)
    server = gravix_server(data_dir, cpu=None, log_path=work / "noise.log", env=SERVER_ENV)
    server.start()
    log(f"noise: sending {args.hours:g} h of demo traffic for two tenants to {server.url}")
    t0 = time.monotonic()
    acked: dict[str, int] = {}
    errors: list[str] = []

    def send(tenant: str) -> None:
        try:
            acked[tenant] = send_history(server.url, keys[tenant], traffic[tenant], start_ms,
                                         end_ms)  # fmt: skip
        except Exception as e:  # reported below, with the server's log
            errors.append(f"{tenant}: {type(e).__name__}: {e}")

    try:
        threads = [threading.Thread(target=send, args=(t,)) for t in traffic]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise BenchError("; ".join(errors))
        sent_s = time.monotonic() - t0
        total = sum(acked.values())
        log(f"noise: {total:,} facts acknowledged in {sent_s:.0f} s; waiting for the rollup")
        deadline = time.monotonic() + args.fold_timeout
        folded = 0
        while time.monotonic() < deadline:
            folded = minute_tier_requests(data_dir / "store")
            if folded >= total:
                break
            time.sleep(5)
        metrics = prometheus_values(server.get("/metrics"), "rollup_duration_seconds_sum")
    finally:
        server.stop()
    if folded < total:
        raise BenchError(f"the minute tier holds {folded:,} of {total:,} facts after "
                         f"{args.fold_timeout:.0f} s")  # fmt: skip
    folded_s = time.monotonic() - t0 - sent_s
    log(f"noise: folded in {folded_s:.0f} s; replaying the rules")
    rules = defaults.default_rules()
    strict = msgspec.structs.replace(defaults.availability_rule(), name="availability 99.9% (30d)",
                                     target=0.999)  # fmt: skip
    days = max(1, math.ceil(args.hours / 24))
    t1 = time.monotonic()
    results = replay(data_dir, list(traffic), [*rules, strict], end_ms, days)
    replay_s = time.monotonic() - t1
    quiet = {name: r for name, r in results["quiet"].items() if name != strict.name}
    on = {name: r for name, r in results["incidents"].items() if name != strict.name}
    expected = incidents(traffic["incidents"], start_ms, end_ms)
    judged, unmatched = judge(rules, on, expected, start_ms, end_ms)
    return {
        "hours": args.hours,
        "from_ms": start_ms,
        "to_ms": end_ms,
        "facts": acked,
        "send_seconds": round(sent_s, 1),
        "fold_seconds": round(folded_s, 1),
        "rollup_seconds_in_server": round(metrics["rollup_duration_seconds_sum"], 1),
        "replay_seconds": round(replay_s, 1),
        "quiet_notifications": sum(r["notifications"] for r in quiet.values()),
        "quiet_firing": [{"rule": n, **f} for n, r in quiet.items() for f in r["firing"]],
        "incident_notifications": sum(r["notifications"] for r in on.values()),
        "incidents": judged,
        "unmatched_firing": unmatched,
        "strict_slo": {t: results[t][strict.name] for t in results},
        "per_rule": {
            t: {
                n: {
                    "notifications": r["notifications"],
                    "firing": len(r["firing"]),
                    "seconds": r["seconds"],
                }
                for n, r in results[t].items()
            }
            for t in results
        },
    }
