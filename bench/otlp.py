"""OTLP/HTTP trace intake beside native fact intake, on the same Gravix server.

One ``gravix serve`` (as in :mod:`bench.ingest`, pinned to one CPU) takes
turns under two closed-loop ``wrk`` loads from another CPU:

* **native**: ``POST /api/v1/facts``, a JSON array of 512 facts of the small
  fleet (:mod:`bench.fleet`), Gravix's fastest encoding;
* **native-pb**: the same 512 facts as a protobuf ``FactBatch``, to show what
  reading protobuf through the upb runtime costs either way;
* **otlp**: ``POST /v1/traces``, a protobuf ``ExportTraceServiceRequest`` of
  512 SERVER spans of the same fleet, one ``ResourceSpans`` per service, each
  span with the 10 attributes an HTTP server instrumentation sets (current
  semantic conventions), as an SDK's batch span processor sends them.

All are durable (every answer is after the fsync); the uploader is off, so its
bursts do not land on one side's run. The figure is OTLP spans/s
over native (JSON) facts/s in the same run. Goal: >= 0.5x.

``python -m bench otlp [options]``; raw results go to
``bench/results/otlp-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from bench.fleet import SERVICES, fleet_fact
from bench.load import check_tools, run_wrk, write_wrk_script
from bench.machine import describe_machine, probe_fsync, publish_results, results_head
from bench.servers import (
    REPO,
    BenchError,
    ServerProcess,
    gravix_server,
    make_key,
    prometheus_values,
)
from gravix.schema import gravix_pb2

BATCH = 512
GOAL = 0.5
RESULTS_DIR = REPO / "bench" / "results"
ROUTES = {"native": "/api/v1/facts", "native-pb": "/api/v1/facts", "otlp": "/v1/traces"}
TYPES = {
    "native": "application/json",
    "native-pb": "application/x-protobuf",
    "otlp": "application/x-protobuf",
}


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def make_spans(count: int, timestamp_ms: int, seed: int = 7) -> ExportTraceServiceRequest:
    """``count`` SERVER spans of the fleet, as one SDK export of several services."""
    rng = random.Random(seed)
    by_service: dict[str, list[Span]] = {}
    for i in range(count):
        service = rng.choice(sorted(SERVICES))
        f = fleet_fact(rng, service, f"{i}", timestamp_ms)
        url_path = f["path"].replace("{id}", str(rng.randrange(1, 10**6)))
        start = timestamp_ms * 1_000_000 + i
        by_service.setdefault(service, []).append(
            Span(
                trace_id=rng.randbytes(16),
                span_id=rng.randbytes(8),
                name=f"{f['method']} {f['path']}",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=start,
                end_time_unix_nano=start + int(f["latency_ms"] * 1_000_000),
                attributes=[
                    _kv("http.request.method", f["method"]),
                    _kv("url.scheme", "http"),
                    _kv("url.path", url_path),
                    _kv("http.route", f["path"]),
                    _kv("http.response.status_code", f["status"]),
                    _kv("server.address", f"{service}.internal"),
                    _kv("server.port", 8080),
                    _kv("network.protocol.version", "1.1"),
                    _kv("user_agent.original", "python-httpx/0.28.1"),
                    _kv("client.address", "10.0.0.7"),
                ],
            )
        )
    request = ExportTraceServiceRequest()
    for service, spans in sorted(by_service.items()):
        resource_spans: ResourceSpans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(
            [
                _kv("service.name", service),
                _kv("service.version", "v42"),
                _kv("deployment.environment.name", "prod"),
                _kv("telemetry.sdk.language", "python"),
            ]
        )
        scope = resource_spans.scope_spans.add()
        scope.scope.name = "opentelemetry.instrumentation.wsgi"
        scope.spans.extend(spans)
    return request


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _measure(
    server: ServerProcess, side: str, script: Path, connections: int, seconds: float, cpu: int
) -> dict[str, Any]:
    before = prometheus_values(server.get("/metrics"), "ingestion_facts_total")
    cpu_before = server.cpu_times()
    result = run_wrk(
        server.url + ROUTES[side], script, connections=connections, seconds=seconds, cpu=cpu
    )
    used = server.cpu_times() - cpu_before
    after = prometheus_values(server.get("/metrics"), "ingestion_facts_total")
    if result.errors:
        raise BenchError(f"{side}: {result.errors} of {result.requests} requests failed")
    durable = after["ingestion_facts_total"] - before["ingestion_facts_total"]
    if durable < result.requests * BATCH:
        raise BenchError(
            f"{side}: {durable:.0f} facts durable but wrk counted {result.requests * BATCH}"
        )
    record = {"side": side, **result.as_dict()}
    record["items_per_s"] = result.requests_per_s * BATCH
    record["cpu_us_per_item"] = round((used.user + used.system) / max(durable, 1) * 1e6, 2)
    record["server_cpu_share"] = round((used.user + used.system) / result.seconds, 3)
    return record


def run(args: argparse.Namespace, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data_dir = work / "gravix-data"
    key = make_key(data_dir)
    now_ms = int(time.time() * 1000)
    facts = [
        fleet_fact(random.Random(i), sorted(SERVICES)[i % 5], f"b{i}", now_ms) for i in range(BATCH)
    ]
    batch = gravix_pb2.FactBatch()
    for f in facts:
        batch.facts.add(**{("timestamp_ms" if k == "timestamp" else k): v for k, v in f.items()})
    bodies = {
        "native": json.dumps(facts, separators=(",", ":")).encode(),
        "native-pb": batch.SerializeToString(),
        "otlp": make_spans(BATCH, now_ms).SerializeToString(),
    }
    scripts = {}
    for side, body in bodies.items():
        (work / f"{side}.body").write_bytes(body)
        scripts[side] = write_wrk_script(
            work / f"{side}.lua", work / f"{side}.body", key, TYPES[side]
        )
    server = gravix_server(data_dir, cpu=args.server_cpu, log_path=work / "gravix.log")
    # The uploader's bursts (a sealed segment compressed and shipped on the same
    # CPU) would land on whichever side runs then; both store the same facts.
    server.env = {**server.env, "GRAVIX_UPLOADER_ENABLED": "false"}
    server.start()
    runs: list[dict[str, Any]] = []
    try:
        log(f"gravix on {server.url}, pid {server.pid}, pinned to CPU {args.server_cpu}")
        for side in ROUTES:
            _measure(
                server, side, scripts[side], max(args.connections), 2, args.load_cpu
            )  # warm-up
        for n in range(1, args.rounds + 1):
            for connections in args.connections:
                for side in ROUTES:
                    r = _measure(
                        server, side, scripts[side], connections, args.seconds, args.load_cpu
                    )
                    r.update(round=n, connections=connections)
                    runs.append(r)
                    log(
                        f"{side:9} c={connections:<3} {r['items_per_s']:9.0f} items/s  "
                        f"p99 {r['p99_ms']:6.1f} ms  {r['cpu_us_per_item']:5.2f} us CPU/item  "
                        f"server CPU {r['server_cpu_share']:.0%}"
                    )
    finally:
        server.stop()
    best: dict[str, Any] = {}
    for side in ROUTES:
        per_connections = {
            c: [r for r in runs if r["side"] == side and r["connections"] == c]
            for c in args.connections
        }
        best[side] = max(
            (
                {
                    "connections": c,
                    "items_per_s": statistics.median(r["items_per_s"] for r in rs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                    "cpu_us_per_item": statistics.median(r["cpu_us_per_item"] for r in rs),
                    "body_bytes": len(bodies[side]),
                }
                for c, rs in per_connections.items()
            ),
            key=lambda b: b["items_per_s"],
        )
    return runs, best


CONTENDED_BELOW = 0.9


def markdown(best: dict[str, Any], ratio: float, runs: list[dict[str, Any]]) -> str:
    n, p, o = best["native"], best["native-pb"], best["otlp"]
    met = "**yes**" if ratio >= GOAL else "**no**"
    pb_ratio = o["items_per_s"] / p["items_per_s"]
    # Items per CPU-second, OTLP over native: moved less by CPU other processes take.
    cpu_ratio = n["cpu_us_per_item"] / o["cpu_us_per_item"]
    # At the most connections every side is CPU-bound; fewer may leave it waiting on fsync.
    most = max(r["connections"] for r in runs)
    share = min(r["server_cpu_share"] for r in runs if r["connections"] == most)

    def row(name: str, key: str, fmt: str, tail: str = "| | |") -> str:
        cells = " | ".join(format(side[key], fmt) for side in (n, p, o))
        return f"| {name} | {cells} {tail}"

    return "\n".join(
        [
            "| measure | native facts (JSON) | native facts (protobuf) | OTLP spans (protobuf) "
            "| OTLP / native JSON | goal | met |",
            "|---|---:|---:|---:|---:|---|---|",
            row("items/s, 512 per request (max)", "items_per_s", ",.0f",
                f"| {ratio:.2f}x | >= {GOAL}x | {met} |"),
            row("best wrk connections", "connections", "d", "| | | |"),
            row("server CPU per item (us)", "cpu_us_per_item", ".2f",
                f"| {cpu_ratio:.2f}x (CPU) | | |"),
            row("p99 at that rate (ms)", "p99_ms", ".1f", "| | | |"),
            row("request body (bytes)", "body_bytes", ",d", "| | | |"),
            "",
            f"OTLP / native protobuf: {pb_ratio:.2f}x.",
        ]
        + (
            [
                f"\n**Warning**: in one run at {most} connections the server got only "
                f"{share:.0%} of its CPU: other processes were competing for the core, so the "
                "throughput figures are noisier than the CPU ones."
            ]
            if share < CONTENDED_BELOW
            else []
        )
    )  # fmt: skip


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench otlp",
        description="Spans/s through POST /v1/traces beside facts/s through /api/v1/facts.",
    )
    parser.add_argument("--seconds", type=int, default=4, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side")
    parser.add_argument(
        "--connections",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[4, 16],
        help="wrk connection counts, comma-separated (default 4,16)",
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--tmp-dir", type=Path, default=None)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = datetime.now(UTC)
    try:
        check_tools()
        usable = os.sched_getaffinity(0)
        if args.server_cpu == args.load_cpu or not {args.server_cpu, args.load_cpu} <= usable:
            raise BenchError(f"need two distinct usable CPUs; this process may use {usable}")
        with tempfile.TemporaryDirectory(prefix="gravix-bench-", dir=args.tmp_dir) as tmp:
            machine = describe_machine(Path(tmp))
            machine["fsync_probe"] = probe_fsync(Path(tmp), args.server_cpu)
            runs, best = run(args, Path(tmp))
    except BenchError as e:
        print(f"bench: error: {e}", flush=True)
        return 1
    ratio = best["otlp"]["items_per_s"] / best["native"]["items_per_s"]
    table = markdown(best, ratio, runs)
    seconds = (datetime.now(UTC) - started).total_seconds()
    out, head = results_head("otlp", args, started, seconds, argv)
    result = {
        **head,
        "machine": machine,
        "goal": GOAL,
        "summary": {
            "ratio": round(ratio, 3),
            "goal_met": ratio >= GOAL,
            "cpu_ratio": round(
                best["native"]["cpu_us_per_item"] / best["otlp"]["cpu_us_per_item"], 3
            ),
            "min_server_cpu_share": min(
                r["server_cpu_share"] for r in runs if r["connections"] == max(args.connections)
            ),
            "best": best,
        },
        "runs": runs,
        "table": table,
    }
    publish_results(out, result, table, machine, "data dir", seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
