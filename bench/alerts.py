"""The alert benchmark (issue #19): detection, noise and cost of the default rules,
each on the product's own path (a real ``gravix serve``, facts over HTTP, the
real evaluator, delivery to a real webhook receiver).

* **Detection** (:mod:`bench.alerts_detect`): a 5xx spike on one endpoint of a
  steady load; from its first failing fact to the firing notification at the
  webhook. Goal: p95 at most 15 s with the default rules and the default
  10-second evaluation. Peer: Prometheus' model (evaluation every minute,
  ``for: 1m``, Alertmanager's 30 s ``group_wait``), computed from the same
  spike instants (:func:`bench.alerts_load.prometheus_detection`), not run.
* **Noise** (:mod:`bench.alerts_noise`): 24 hours of the demo's traffic
  written through intake, replayed by the backtest: 0 notifications with the
  incidents off; with them on, each incident notified and resolved.
* **Cost** (:mod:`bench.alerts_cost`): 1,000 rules over 1,200 series; the
  server's CPU per evaluation as a share of one core. Goal: at most 10%.

Run ``.venv/bin/python -m bench alerts [--only detect,noise,cost]``; ``--help``
lists the knobs; raw results go to ``bench/results/alerts-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import alerts_cost, alerts_detect, alerts_noise
from bench.machine import describe_machine, probe_fsync, publish_results, results_head
from bench.servers import REPO, BenchError
from gravix.config import Settings

RESULTS_DIR = REPO / "bench" / "results"
GOALS = {"detection_p95_s": 15.0, "quiet_notifications": 0, "share_of_core": 0.10}
PARTS = ("detect", "noise", "cost")
DESCRIPTION = "Alerts: detection time, noise over 24 h of demo traffic, cost of 1,000 rules."


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench alerts", description=DESCRIPTION)
    p.add_argument("--only", default=",".join(PARTS), help="which parts, comma-separated")
    p.add_argument("--seed", type=int, default=19, help="spike endpoints, instants and sizes")
    d = p.add_argument_group("detection")
    d.add_argument("--spikes", type=int, default=10, help="spikes measured (default 10)")
    d.add_argument("--rate", type=float, default=500.0, help="facts/s of the load (default 500)")
    d.add_argument("--warmup", type=float, default=20.0, help="seconds of load before the first")
    d.add_argument("--timeout", type=float, default=150.0,
                   help="seconds a spike waits for its notification (a miss after)")  # fmt: skip
    d.add_argument("--resolve-wait", type=float, default=150.0,
                   help="seconds to wait for the resolved notifications")  # fmt: skip
    n = p.add_argument_group("noise")
    n.add_argument("--hours", type=float, default=24.0, help="hours of demo traffic (default 24)")
    n.add_argument("--fold-timeout", type=float, default=900.0,
                   help="seconds the rollup may take to fold the history")  # fmt: skip
    c = p.add_argument_group("cost")
    c.add_argument("--cost-seconds", type=float, default=60.0,
                   help="seconds measured without rules (twice that with them)")  # fmt: skip
    c.add_argument("--cost-rate", type=float, default=200.0, help="facts/s over the 1,200 series")
    c.add_argument("--cost-history-minutes", type=float, default=30.0,
                   help="minutes of traffic sent before measuring")  # fmt: skip
    p.add_argument("--tmp-dir", type=Path, default=None, help="where the data dirs go")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep", action="store_true", help="keep the data dirs and the servers' logs")
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.only.split(",") if x.strip()]
    if not args.parts or set(args.parts) - set(PARTS):
        p.error(f"--only takes some of {', '.join(PARTS)}")
    if args.spikes < 1 or args.rate <= 0 or args.hours <= 0 or args.cost_seconds <= 0:
        p.error("--spikes, --rate, --hours and --cost-seconds must be positive")
    return args


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def markdown(summary: dict[str, Any]) -> str:
    """The README's table for this run."""
    rows = ["| measure | Gravix | peer | goal | met |", "|---|---:|---:|---|---|"]
    detect = summary.get("detect")
    if detect:
        g, peer, hook = (
            detect["gravix_s"],
            detect["prometheus_fires_s"],
            detect["prometheus_webhook_s"],
        )
        met = g["p95"] is not None and g["p95"] <= GOALS["detection_p95_s"] and not detect["missed"]
        rows += [
            f"| detection, p50 ({g['n']} spikes, {detect['rate']:g} facts/s) | {_s(g['p50'])} | "
            f"{_s(hook['p50'])} ({_s(peer['p50'])} to firing) | | |",
            f"| detection, p95 | {_s(g['p95'])} | {_s(hook['p95'])} ({_s(peer['p95'])}) | "
            f"<= 15 s | {'yes' if met else '**no**'} |",
            f"| detection, max | {_s(g['max'])} | {_s(hook['max'])} ({_s(peer['max'])}) | | |",
            f"| of which: to the evaluation that fired, p50 / p95 | "
            f"{_s(detect['evaluation_s']['p50'])} / {_s(detect['evaluation_s']['p95'])} | | | |",
            f"| of which: from that evaluation's start to the webhook, p50 / p95 | "
            f"{_s(detect['delivery_s']['p50'])} / "
            f"{_s(detect['delivery_s']['p95'])} | | | |",
            f"| spikes missed (no notification in {summary['args']['timeout']:.0f} s) | "
            f"{detect['missed']} | | 0 | {'yes' if not detect['missed'] else '**no**'} |",
            f"| resolved after the spike ended, p50 / max ({detect['resolve_s']['n']} seen) | "
            f"{_s(detect['resolve_s']['p50'])} / {_s(detect['resolve_s']['max'])} | | | |",
            f"| other notifications during the run | {len(detect['other_notifications'])} | | | |",
        ]  # fmt: skip
    noise = summary.get("noise")
    if noise:
        judged = [i for i in noise["incidents"] if not i["verdict"].startswith("at the edge")]
        good = [i for i in judged if i["verdict"] == "notified and resolved"]
        rows += [
            f"| noise: notifications over {noise['hours']:g} h, incidents off | "
            f"{noise['quiet_notifications']} | | 0 | "
            f"{'yes' if noise['quiet_notifications'] == 0 else '**no**'} |",
            f"| noise: incidents notified and resolved, incidents on | {len(good)} of "
            f"{len(judged)} | | all | {'yes' if len(good) == len(judged) else '**no**'} |",
            f"| noise: firings that answer no incident, incidents on | "
            f"{len(noise['unmatched_firing'])} ({_rules(noise['unmatched_firing'])}) | | | |",
        ]
    cost = summary.get("cost")
    if cost:
        share = cost["share_of_core_at_10s"]
        rows += [
            f"| cost: CPU per evaluation, {cost['rules']:,} rules, {cost['series']:,} series | "
            f"{cost['cpu_s_per_evaluation']:.2f} s | | | |",
            f"| cost: share of one core at one evaluation every 10 s | {share:.1%} | | <= 10% | "
            f"{'yes' if share <= GOALS['share_of_core'] else '**no**'} |",
            f"| cost: rules per CPU second | {cost['rules_per_cpu_s'] or '-'} | | | |",
            f"| cost: wall time of an evaluation | {cost['evaluation_wall_s']:.2f} s | | | |",
        ]
    return "\n".join(rows)


def _rules(firings: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for f in firings:
        counts[f["rule"]] = counts.get(f["rule"], 0) + 1
    return ", ".join(f"{name}: {n}" for name, n in sorted(counts.items())) or "none"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = datetime.now(UTC)
    work = Path(tempfile.mkdtemp(prefix="gravix-alerts-", dir=args.tmp_dir))
    summary: dict[str, Any] = {"args": {k: str(v) if isinstance(v, Path) else v
                                        for k, v in vars(args).items()}}  # fmt: skip
    try:
        machine = describe_machine(work)
        for name in ("wrk", "hey"):
            machine.pop(name, None)
        machine["fsync_probe"] = probe_fsync(work, min(os.sched_getaffinity(0)))
        for part in args.parts:
            if part == "detect":
                summary["detect"] = alerts_detect.Detection(args, work).run()
            elif part == "noise":
                summary["noise"] = alerts_noise.run(args, work)
            else:
                summary["cost"] = alerts_cost.run(args, work)
    except BenchError as e:
        print(f"bench: error: {e}", flush=True)
        return 1
    finally:
        if args.keep:
            print(f"kept the data dirs and the servers' logs in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    seconds = (datetime.now(UTC) - started).total_seconds()
    table = markdown(summary)
    out, head = results_head("alerts", args, started, seconds, argv)
    defaults = Settings.model_fields
    result = {
        **head,
        "server_defaults": {
            k: defaults[k].default for k in ("alert_interval_seconds", "alert_min_requests")
        },
        "machine": machine,
        "goals": GOALS,
        **summary,
        "table": table,
    }
    publish_results(out, result, table, machine, "data dirs", seconds)
    return 0
