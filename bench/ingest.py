"""Durable ingest throughput and acknowledgement latency, beside a peer that writes nothing.

The peer (:mod:`bench.peer_app`) runs the same key lookup and the same
validation as Gravix under the same uvicorn settings, and answers 202 without
writing. Both servers run pinned to one CPU and take turns; the load generator
runs pinned to another. Every figure is a ratio to the peer measured in the
same run, so a noisy or slow machine moves both sides.

1. **Batches, maximum rate**: ``wrk`` posts one fixed body of 100 valid facts
   over each connection count in turn; each side keeps its best connection
   count (the median over rounds). Goal: Gravix >= 0.7x the peer's facts/s.
2. **Acknowledgement latency**: ``hey`` holds 70% of Gravix's maximum batch
   rate against Gravix, then the peer. Goal: Gravix p99 <= 10 ms.
3. **Single facts, maximum rate**: as 1 with a body of one fact.
   Goal: Gravix >= 0.9x the peer's requests/s.

Run ``make bench`` or ``.venv/bin/python -m bench``; ``--help`` lists the knobs.
Raw results go to ``bench/results/ingest-<UTC time>.json``.

``--database postgresql`` measures something else: the key check against a
PostgreSQL key store beside a SQLite one, two Gravix servers and no peer
(:mod:`bench.ingest_keys`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.fleet import SERVICES, fleet_fact
from bench.load import check_tools, run_paced, run_wrk, write_wrk_script
from bench.machine import describe_machine, probe_fsync, publish_results, results_head
from bench.servers import (
    REPO,
    BenchError,
    ServerProcess,
    gravix_server,
    make_key,
    peer_server,
    prometheus_values,
)

FACTS_URL = "/api/v1/facts"
BATCH = 100
STEADY_SHARE = 0.7
RATE_HELD = 0.97  # a latency measured at a rate the server could not hold does not count
GOALS = {"batch_ratio": 0.7, "p99_ms": 10.0, "single_ratio": 0.9}
RESULTS_DIR = REPO / "bench" / "results"
CONTENDED_BELOW = 0.9


def make_facts(count: int, timestamp_ms: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` valid facts of a small fleet, all stamped ``timestamp_ms``."""
    rng = random.Random(seed)
    return [
        fleet_fact(rng, rng.choice(sorted(SERVICES)), f"bench-{i:05d}", timestamp_ms)
        for i in range(count)
    ]


def _median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


class IngestBench:
    """One benchmark run: two servers, a work dir, and the results so far."""

    SIDES: tuple[str, ...] = ("peer", "gravix")  # in the order each round runs them
    GRAVIX_SIDES: frozenset[str] = frozenset({"gravix"})  # the durable ones, with /metrics

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.runs: list[dict[str, Any]] = []
        self.servers: dict[str, ServerProcess] = {}
        self.key = ""
        self.bodies: dict[str, Path] = {}
        self.scripts: dict[str, Path] = {}

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    # --- setup ----------------------------------------------------------------
    def setup(self) -> None:
        gravix_dir, peer_dir = self.work / "gravix-data", self.work / "peer-data"
        self.key = make_key(gravix_dir, peer_dir)
        self.write_bodies()
        cpu = self.args.server_cpu
        logs = self.work / "logs"
        self.servers["peer"] = peer_server(peer_dir, cpu=cpu, log_path=logs / "peer.log")
        self.servers["gravix"] = gravix_server(
            gravix_dir, cpu=cpu, log_path=logs / "gravix.log", role="ingest"
        )
        self.start_servers()

    def write_bodies(self) -> None:
        """The batch and single-fact bodies, and a wrk script posting each with ``self.key``."""
        now_ms = int(time.time() * 1000)
        facts = make_facts(BATCH, now_ms)
        for name, payload in (("batch", facts), ("single", facts[0])):
            body = self.work / f"{name}.json"
            body.write_bytes(json.dumps(payload, separators=(",", ":")).encode())
            self.bodies[name] = body
            self.scripts[name] = write_wrk_script(self.work / f"{name}.lua", body, self.key)
        (self.work / "logs").mkdir()

    def start_servers(self) -> None:
        for side, server in self.servers.items():
            server.start()
            self.log(
                f"{side} on {server.url}, pid {server.pid}, pinned to CPU {self.args.server_cpu}"
            )

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    # --- one measured run ---------------------------------------------------
    def _measured(
        self, side: str, run: Callable[[ServerProcess], Any], **labels: Any
    ) -> dict[str, Any]:
        server = self.servers[side]
        metrics = ("ingestion_facts_total", "spool_fsyncs_total")
        durable = side in self.GRAVIX_SIDES
        before = prometheus_values(server.get("/metrics"), *metrics) if durable else {}
        cpu_before = server.cpu_times()
        result = run(server)
        cpu = server.cpu_times() - cpu_before
        record: dict[str, Any] = {"side": side, **labels, **result.as_dict()}
        if result.errors:
            raise BenchError(
                f"{side} answered {result.errors} of {result.requests} requests with an error "
                f"({labels}); see {server.log_path}"
            )
        done = max(result.requests, 1)
        record["cpu_us_per_request"] = round((cpu.user + cpu.system) / done * 1e6, 1)
        record["sys_us_per_request"] = round(cpu.system / done * 1e6, 1)
        # Below ~0.95 in a maximum-rate run, something else took the server's CPU.
        record["server_cpu_share"] = round((cpu.user + cpu.system) / result.seconds, 3)
        if durable:
            after = prometheus_values(server.get("/metrics"), *metrics)
            facts = after["ingestion_facts_total"] - before["ingestion_facts_total"]
            fsyncs = after["spool_fsyncs_total"] - before["spool_fsyncs_total"]
            per_request = BATCH if labels["body"] == "batch" else 1
            # In-flight requests at the end may be acknowledged yet not counted by
            # the load generator, so Gravix may report more, never fewer.
            if facts < result.requests * per_request:
                raise BenchError(
                    f"Gravix acknowledged {facts:.0f} facts durably but the load generator "
                    f"counted {result.requests * per_request} accepted"
                )
            record["durable_facts"] = int(facts)
            record["fsyncs"] = int(fsyncs)
            record["requests_per_fsync"] = round(facts / per_request / max(fsyncs, 1), 2)
        self.runs.append(record)
        return record

    def wrk(self, side: str, body: str, connections: int, seconds: float, **labels: Any) -> None:
        def run(server: ServerProcess) -> Any:
            return run_wrk(
                server.url + FACTS_URL,
                self.scripts[body],
                connections=connections,
                seconds=seconds,
                cpu=self.args.load_cpu,
            )

        r = self._measured(side, run, kind="max", body=body, **labels)
        self.log(
            f"{body:6} {side:6} c={connections:<3} {r['requests_per_s']:8.0f} req/s  "
            f"p99 {r['p99_ms']:6.1f} ms  {r['cpu_us_per_request']:5.0f} us CPU/req  "
            f"server CPU {r['server_cpu_share']:.0%}"
        )

    def hey(self, side: str, rate: float) -> dict[str, Any]:
        a = self.args

        def run(server: ServerProcess) -> Any:
            return run_paced(
                server.url + FACTS_URL,
                self.bodies["batch"],
                self.key,
                rate=rate,
                seconds=a.steady_seconds,
                cpu=a.load_cpu,
            )

        r = self._measured(side, run, kind="steady", body="batch")
        self.log(
            f"steady {side:6} target {rate:6.0f}/s got {r['requests_per_s']:6.0f}/s "
            f"({r['workers']} hey workers)  "
            f"p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms"
        )
        return r

    # --- the plan ---------------------------------------------------------------
    def maximum(self, body: str) -> dict[str, dict[str, Any]]:
        """Alternating closed-loop runs; per side, the best connection count's median."""
        a = self.args
        for side in self.SIDES:
            self.wrk(side, body, max(a.connections), a.warmup_seconds, round=0, warmup=True)
        for n in range(1, a.rounds + 1):
            for connections in a.connections:
                for side in self.order(n):
                    self.wrk(side, body, connections, a.seconds, round=n, warmup=False)
        best: dict[str, dict[str, Any]] = {}
        for side in self.SIDES:
            candidates = []
            for connections in a.connections:
                runs = self._max_runs(side, body, connections)
                candidate = {
                    "connections": connections,
                    "requests_per_s": _median_of(runs, "requests_per_s"),
                    "p99_ms": _median_of(runs, "p99_ms"),
                    "cpu_us_per_request": _median_of(runs, "cpu_us_per_request"),
                    "rounds": [round(r["requests_per_s"]) for r in runs],
                }
                if side in self.GRAVIX_SIDES:
                    candidate["requests_per_fsync"] = _median_of(runs, "requests_per_fsync")
                candidates.append(candidate)
            best[side] = max(candidates, key=lambda c: c["requests_per_s"])
        return best

    def order(self, round_number: int) -> tuple[str, ...]:
        """The sides in the order round ``round_number`` runs them."""
        return self.SIDES

    def _max_runs(self, side: str, body: str, connections: int) -> list[dict[str, Any]]:
        return [
            r
            for r in self.runs
            if r["kind"] == "max"
            and not r["warmup"]
            and (r["side"], r["body"], r["connections"]) == (side, body, connections)
        ]

    def run(self) -> dict[str, Any]:
        batch = self.maximum("batch")
        rate = STEADY_SHARE * batch["gravix"]["requests_per_s"]
        steady = {side: self.hey(side, rate) for side in ("gravix", "peer")}
        single = self.maximum("single")
        # Which services ran beside intake (e.g. the uploader), as /ready reports them.
        ready = json.loads(self.servers["gravix"].get("/ready"))
        return {"batch": batch, "steady": steady, "single": single, "gravix_ready": ready}

    def report(self, figures: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The summary and the Markdown table of ``figures``."""
        summary = summarise(figures, self.runs)
        return summary, markdown(figures, summary)


def summarise(figures: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    batch, steady, single = figures["batch"], figures["steady"], figures["single"]
    batch_ratio = batch["gravix"]["requests_per_s"] / batch["peer"]["requests_per_s"]
    single_ratio = single["gravix"]["requests_per_s"] / single["peer"]["requests_per_s"]
    held = steady["gravix"]["requests_per_s"] / steady["gravix"]["target_per_s"]
    # The peer is CPU-bound at its maximum rate: if it got less than the whole
    # server CPU, another process on the machine took the rest.
    peer_share = min(
        r["server_cpu_share"]
        for r in runs
        if r["side"] == "peer" and r["kind"] == "max" and not r["warmup"]
    )
    return {
        "batch_facts_per_s": {s: batch[s]["requests_per_s"] * BATCH for s in batch},
        "batch_ratio": round(batch_ratio, 3),
        "batch_goal_met": batch_ratio >= GOALS["batch_ratio"],
        "steady_rate": round(steady["gravix"]["target_per_s"], 1),
        "steady_rate_held": round(held, 3),
        "p99_ms": steady["gravix"]["p99_ms"],
        "p99_goal_met": steady["gravix"]["p99_ms"] <= GOALS["p99_ms"] and held >= RATE_HELD,
        "single_ratio": round(single_ratio, 3),
        "single_goal_met": single_ratio >= GOALS["single_ratio"],
        # Requests per CPU-second, Gravix over peer: less moved by CPU stolen by
        # other processes than the throughput ratio, though it flatters Gravix a
        # little where it waits on fsync with the core idle.
        "batch_cpu_ratio": round(
            batch["peer"]["cpu_us_per_request"] / batch["gravix"]["cpu_us_per_request"], 3
        ),
        "single_cpu_ratio": round(
            single["peer"]["cpu_us_per_request"] / single["gravix"]["cpu_us_per_request"], 3
        ),
        "peer_min_server_cpu_share": peer_share,
        "contended": peer_share < CONTENDED_BELOW,
    }


def _n(value: float) -> str:
    return f"{value:,.0f}"


def markdown(figures: dict[str, Any], summary: dict[str, Any]) -> str:
    batch, steady, single = figures["batch"], figures["steady"], figures["single"]

    def met(ok: bool) -> str:
        return "**yes**" if ok else "**no**"

    def best(side: dict[str, Any]) -> str:
        return f"c={side['connections']}"

    rows = [
        "| measure | peer (no writes) | Gravix (fsynced, rollup off) "
        "| Gravix / peer | goal | met |",
        "|---|---:|---:|---:|---|---|",
        f"| 100-fact batches: facts/s (max) | {_n(summary['batch_facts_per_s']['peer'])} "
        f"| {_n(summary['batch_facts_per_s']['gravix'])} | {summary['batch_ratio']:.2f}x "
        f"| >= {GOALS['batch_ratio']}x | {met(summary['batch_goal_met'])} |",
        f"| 100-fact batches: requests/s (max) | {_n(batch['peer']['requests_per_s'])} "
        f"({best(batch['peer'])}) | {_n(batch['gravix']['requests_per_s'])} "
        f"({best(batch['gravix'])}) | | | |",
        f"| 100-fact batches: CPU per request | {batch['peer']['cpu_us_per_request']:.0f} us "
        f"| {batch['gravix']['cpu_us_per_request']:.0f} us "
        f"| {summary['batch_cpu_ratio']:.2f}x (CPU) | | |",
        f"| ack latency at {_n(summary['steady_rate'])} req/s (70% of Gravix max): p50 "
        f"| {steady['peer']['p50_ms']:.1f} ms | {steady['gravix']['p50_ms']:.1f} ms | | | |",
        f"| ack latency at {_n(summary['steady_rate'])} req/s (70% of Gravix max): p99 "
        f"| {steady['peer']['p99_ms']:.1f} ms | {steady['gravix']['p99_ms']:.1f} ms | "
        f"| <= {GOALS['p99_ms']:g} ms | {met(summary['p99_goal_met'])} |",
        f"| single-fact POSTs: requests/s (max) | {_n(single['peer']['requests_per_s'])} "
        f"({best(single['peer'])}) | {_n(single['gravix']['requests_per_s'])} "
        f"({best(single['gravix'])}) | {summary['single_ratio']:.2f}x "
        f"| >= {GOALS['single_ratio']}x | {met(summary['single_goal_met'])} |",
        f"| single-fact POSTs: CPU per request | {single['peer']['cpu_us_per_request']:.0f} us "
        f"| {single['gravix']['cpu_us_per_request']:.0f} us "
        f"| {summary['single_cpu_ratio']:.2f}x (CPU) | | |",
    ]
    notes = [
        "",
        f"Gravix made {batch['gravix']['requests_per_fsync']:.1f} batches durable per fsync "
        f"at its best batch rate and {single['gravix']['requests_per_fsync']:.1f} single-fact "
        f"requests per fsync; the steady run held {summary['steady_rate_held']:.0%} of its "
        "target rate.",
    ]
    if summary["contended"]:
        notes.append(
            f"\n**Warning**: in one maximum-rate run the peer got only "
            f"{summary['peer_min_server_cpu_share']:.0%} of its CPU; other processes were "
            "competing for it, so these figures are noisier than usual."
        )
    return "\n".join(rows + notes)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Gravix ingest benchmark beside a non-durable peer."
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--warmup-seconds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side")
    parser.add_argument(
        "--connections",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[8, 32],
        help="wrk connection counts to try, comma-separated (default 8,32)",
    )
    parser.add_argument("--steady-seconds", type=int, default=10, help="length of hey runs")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU both servers run on")
    parser.add_argument("--load-cpu", type=int, default=1, help="CPU wrk and hey run on")
    parser.add_argument(
        "--tmp-dir", type=Path, default=None, help="where the data dirs go (default: $TMPDIR)"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--database",
        choices=["postgresql", "sqlite"],
        default=None,
        help="instead of the peer: Gravix with its keys in a PostgreSQL the bench starts "
        "(GRAVIX_DATABASE_URL) beside Gravix with its keys in SQLite, durable facts/s of "
        "each; 'sqlite': two like SQLite servers, the noise of the same comparison",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    make: Callable[[argparse.Namespace, Path], IngestBench] = IngestBench
    goals: dict[str, float] = GOALS
    results_name = "ingest"
    if args.database is not None:
        # Imported here: bench.ingest_keys builds on this module.
        from bench import ingest_keys

        make, goals, results_name = ingest_keys.KeysBench, ingest_keys.GOALS, "ingest-keys"
    try:
        check_tools()
        usable = os.sched_getaffinity(0)
        if args.server_cpu == args.load_cpu or not {args.server_cpu, args.load_cpu} <= usable:
            raise BenchError(
                f"need two distinct usable CPUs for the servers ({args.server_cpu}) and the "
                f"load generator ({args.load_cpu}); this process may use {sorted(usable)}"
            )
        started = datetime.now(UTC)
        with tempfile.TemporaryDirectory(prefix="gravix-bench-", dir=args.tmp_dir) as tmp:
            bench = make(args, Path(tmp))
            machine = describe_machine(Path(tmp))
            bench.log(f"machine: {machine['cpu_model']}, {machine['nproc']} CPUs, {tmp}")
            machine["fsync_probe"] = probe = probe_fsync(Path(tmp), args.server_cpu)
            bench.log(
                f"disk: 10 kB append + fsync p50 {probe['p50_ms']:.2f} ms, "
                f"p99 {probe['p99_ms']:.2f} ms"
            )
            try:
                bench.setup()
                figures = bench.run()
            finally:
                bench.stop()
    except BenchError as e:
        print(f"bench: error: {e}", flush=True)
        return 1
    summary, table = bench.report(figures)
    seconds = (datetime.now(UTC) - started).total_seconds()
    out, head = results_head("ingest", args, started, seconds, argv)
    out = out.with_name(out.name.replace("ingest", results_name, 1))
    result = {
        **head,
        "machine": machine,
        "goals": goals,
        "summary": summary,
        "figures": figures,
        "runs": bench.runs,
        "table": table,
    }
    publish_results(out, result, table, machine, "data dir", seconds)
    return 0
