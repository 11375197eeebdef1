"""The rollup on Spark beside the rollup on DuckDB (issue #7), same input, same run.

Both contenders are the whole ``gravix rollup`` command, in a fresh process
each, over the same raw objects in a local object store: ``--engine duckdb``
(the embedded default, ``rollup_threads`` = 2) and ``--engine spark``
(PySpark on ``local[2]``). Both read and decode the raw objects the same way
(:class:`gravix.schema.raw.RawBatch`, in the driver) and publish through the
same code; what differs is what deduplicates and aggregates. Each input size
is rolled up by both, the order alternating, and the published metric and
archive files of the two are compared byte for byte.

The input is the rollup benchmark's fleet (:mod:`bench.rollup_data`, 1% client
retries) turned into raw objects exactly as the uploader writes them: Parquet
objects of 50,000-fact batches, partitioned by received hour. A straight line
``seconds = fixed + per_fact * facts`` is fitted to each engine's runs; Spark
catches up where the lines cross, if its per-fact cost is the lower one.

Run ``.venv/bin/python -m bench spark [--sizes 1000000,4000000,20000000]``;
inputs are cached in ``--data-dir``; raw results go to
``bench/results/spark-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import msgspec

from bench.machine import describe_machine, probe_fsync, publish_results
from bench.rollup_data import HOUR_MS, dataset
from bench.servers import REPO, BenchError
from gravix.schema.raw import segment_objects
from gravix.schema.spool import decode_batch

RESULTS_DIR = REPO / "bench" / "results"
DATA_DIR = Path(tempfile.gettempdir()) / "gravix-bench-spark"
TENANT = "bench"
BATCH_FACTS = 50_000
OBJECT_BATCHES = 4  # 200,000 facts (about 12 MB) per raw object
ENGINES = ("duckdb", "spark")
FACT_COLUMNS = (
    "event_id",
    "timestamp",
    "service",
    "method",
    "path",
    "status",
    "latency_ms",
    "env",
    "version",
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- input: raw objects as the uploader writes them ---------------------------------
def raw_store(data_dir: Path, count: int, span_ms: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """A store folder holding the dataset's facts as raw objects; made once, cached."""
    meta = dataset(data_dir, count, span_ms, seed)
    store = data_dir / f"store-{count}-{span_ms // 1000}s-seed{seed}"
    done = store / ".complete"
    if done.exists():
        return store, meta
    shutil.rmtree(store, ignore_errors=True)
    started = time.monotonic()
    con = duckdb.connect(":memory:")
    encoder = msgspec.msgpack.Encoder()
    columns = ", ".join(FACT_COLUMNS)
    cursor = con.execute(
        f"SELECT {columns}, received_ms FROM read_ndjson('{meta['path']}', "
        "columns = {'event_id': 'VARCHAR', 'timestamp': 'BIGINT', 'service': 'VARCHAR', "
        "'method': 'VARCHAR', 'path': 'VARCHAR', 'status': 'SMALLINT', "
        "'latency_ms': 'DOUBLE', 'env': 'VARCHAR', 'version': 'VARCHAR', "
        "'received_ms': 'BIGINT'}) ORDER BY received_ms"
    )
    objects = 0
    payloads: list[bytes] = []
    first_received = 0
    while rows := cursor.fetchmany(BATCH_FACTS):
        facts = [dict(zip(FACT_COLUMNS, row[:-1], strict=True)) for row in rows]
        received = rows[-1][-1]  # one batch: accepted when its last fact arrived
        if not payloads:
            first_received = rows[0][-1]
        payloads.append(encoder.encode({"tenant": TENANT, "received_ms": received, "facts": facts}))
        if len(payloads) == OBJECT_BATCHES:
            _write_object(store, first_received, objects, payloads)
            objects, payloads = objects + 1, []
    if payloads:
        _write_object(store, first_received, objects, payloads)
        objects += 1
    con.close()
    done.write_text(json.dumps({"objects": objects, "seconds": time.monotonic() - started}))
    log(f"raw store of {count:,} facts: {objects} objects in {time.monotonic() - started:.0f} s")
    return store, meta


def _write_object(store: Path, created_ms: int, n: int, payloads: list[bytes]) -> None:
    """One raw object as the uploader writes it (gravix.schema.raw): Parquet facts."""
    created = datetime.fromtimestamp(created_ms / 1000, UTC)
    folder = store / f"raw/tenant={TENANT}/date={created:%Y-%m-%d}/hour={created:%H}"
    folder.mkdir(parents=True, exist_ok=True)
    segment = f"{created_ms}-{n:08x}"
    batches = [decode_batch(p) for p in payloads]
    (obj,) = segment_objects(batches, "bench", f"w0/{segment}")[TENANT]
    (folder / f"bench-w0-{segment}.parquet").write_bytes(obj.body)


# --- one contender in its own process ------------------------------------------------
def run_rollup(engine: str, store: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``gravix rollup --engine ENGINE`` over a hard-linked copy of ``store``."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    copy = work / "store"
    # The rollup deletes raw objects and writes new files, never edits one: links do.
    subprocess.run(["cp", "-al", str(store), str(copy)], check=True)
    env = {
        **os.environ,
        "GRAVIX_OBJECT_STORE_URL": f"file://{copy}",
        "GRAVIX_ROLLUP_THREADS": str(args.threads),
        "GRAVIX_ROLLUP_MEMORY_LIMIT": args.memory_limit,
        "GRAVIX_SPARK_MASTER": args.master,
        "GRAVIX_SPARK_CONF": json.dumps({"spark.driver.memory": args.spark_memory}),
    }
    cmd = [str(REPO / ".venv" / "bin" / "gravix"), "rollup", "--engine", engine]
    cmd += ["--data-dir", str(work / "data")]
    stderr_path = work / "stderr.log"
    started = time.perf_counter()
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, cwd=REPO, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = stderr_path.read_text(errors="replace")[-2000:]
        raise BenchError(f"gravix rollup --engine {engine} exited with {code}: {tail}")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "engine": engine,
        "seconds": round(wall, 2),
        "cpu_seconds_gravix": round(usage.ru_utime + usage.ru_stime, 1),
        # Spark's JVM is a child of the gravix process: this is the largest RSS
        # of any process the benchmark has waited for so far (a lower bound).
        "largest_child_rss_mib": round(children.ru_maxrss / 1024, 1),
        "left_raw_objects": sum(1 for _ in (copy / "raw").rglob("*.parquet")),
    }


def published(store: Path) -> dict[str, str]:
    """SHA-256 of every published Parquet file, by key."""
    found = {}
    for path in sorted(store.rglob("*.parquet")):
        key = str(path.relative_to(store))
        if key.startswith(("metrics_", "service_metrics_", "archive/", "events/")):
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def compare(a: dict[str, str], b: dict[str, str]) -> dict[str, Any]:
    keys = sorted(set(a) | set(b))
    differ = [k for k in keys if a.get(k) != b.get(k)]
    return {"files": len(keys), "identical": len(keys) - len(differ), "differ": differ[:20]}


def requests_counted(store: Path) -> int:
    """Requests in the minute tier, for the cross-check against the unique facts."""
    files = str(store / "metrics_1m" / "**" / "*.parquet")
    con = duckdb.connect(":memory:")
    try:
        row = con.execute(f"SELECT sum(requests) FROM read_parquet('{files}')").fetchone()
    finally:
        con.close()
    return int(row[0]) if row and row[0] is not None else 0


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``seconds = fixed + per_fact * facts``."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - slope * mx, slope


# --- the run -------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.monotonic()
    try:
        import pyspark  # noqa: F401
    except ImportError:
        print("the Spark benchmark needs PySpark: make bench installs the spark extra")
        return 2
    args.data_dir.mkdir(parents=True, exist_ok=True)
    machine = describe_machine(args.data_dir)  # the load average before the runs
    machine["fsync_probe"] = probe_fsync(args.data_dir, 0)
    span_ms = args.span_hours * HOUR_MS
    runs: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    for count in args.sizes:
        store, meta = raw_store(args.data_dir, count, span_ms, args.seed)
        outputs: dict[str, dict[str, str]] = {}
        for rnd in range(args.rounds):
            order = ENGINES if rnd % 2 == 0 else tuple(reversed(ENGINES))
            for engine in order:
                work = args.data_dir / "runs" / f"{count}-{engine}"
                result = run_rollup(engine, store, work, args)
                result.update(facts=meta["lines"], unique_facts=meta["unique_facts"], round=rnd + 1)
                result["facts_per_second"] = round(meta["lines"] / result["seconds"])
                result["requests_counted"] = requests_counted(work / "store")
                outputs[engine] = published(work / "store")
                runs.append(result)
                log(
                    f"{meta['lines']:>11,} facts  {engine:6} {result['seconds']:8.1f} s  "
                    f"{result['facts_per_second']:>9,} facts/s  "
                    f"counted {result['requests_counted']:,} of {meta['unique_facts']:,}"
                )
        check = checks[str(meta["lines"])] = compare(outputs["duckdb"], outputs["spark"])
        log(f"{meta['lines']:,} facts: {check['identical']} of {check['files']} files identical")
    summary = summarise(runs)
    result = {
        "benchmark": "spark",
        "command": "python -m bench spark " + " ".join(argv or sys.argv[2:]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": runs,
        "byte_checks": checks,
        "summary": summary,
        "machine": machine,
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS_DIR.mkdir(exist_ok=True)
    publish_results(
        RESULTS_DIR / f"spark-{stamp}.json",
        result,
        markdown(summary, runs, checks),
        machine,
        str(args.data_dir),
        time.monotonic() - started,
    )
    return 0


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best: dict[tuple[str, int], float] = {}
    for r in runs:
        key = (r["engine"], r["facts"])
        best[key] = min(best.get(key, float("inf")), r["seconds"])
    lines = {}
    for engine in ENGINES:
        points = sorted((n, s) for (e, n), s in best.items() if e == engine)
        if len(points) >= 2:
            fixed, per_fact = fit(points)
            lines[engine] = {"fixed_seconds": round(fixed, 2), "per_million": per_fact * 1e6}
    crossing = None
    if len(lines) == 2:
        d, s = lines["duckdb"], lines["spark"]
        if s["per_million"] < d["per_million"]:
            crossing = round(
                (s["fixed_seconds"] - d["fixed_seconds"])
                / ((d["per_million"] - s["per_million"]) / 1e6)
            )
    ratios = {
        n: round(best[("spark", n)] / best[("duckdb", n)], 2)
        for (e, n) in best
        if e == "duckdb" and ("spark", n) in best
    }
    return {
        "best_seconds": {f"{e}/{n}": s for (e, n), s in sorted(best.items())},
        "spark_over_duckdb": ratios,
        "lines": lines,
        "crossing_facts": crossing,
    }


def markdown(summary: dict[str, Any], runs: list[dict[str, Any]], checks: dict[str, Any]) -> str:
    out = [
        "| facts | DuckDB s | Spark local[2] s | Spark / DuckDB | DuckDB facts/s | "
        "Spark facts/s | files byte-identical |",
        "|---|---|---|---|---|---|---|",
    ]
    best = summary["best_seconds"]
    for n, ratio in sorted(summary["spark_over_duckdb"].items()):
        d, s = best[f"duckdb/{n}"], best[f"spark/{n}"]
        check = checks[str(n)]
        out.append(
            f"| {n:,} | {d:.1f} | {s:.1f} | {ratio:.2f}x | {n / d:,.0f} | {n / s:,.0f} | "
            f"{check['identical']} of {check['files']} |"
        )
    out.append("")
    for engine, line in summary["lines"].items():
        out.append(
            f"- {engine}: about {line['fixed_seconds']:.1f} s fixed + "
            f"{line['per_million']:.2f} s per million facts (least squares over the sizes)"
        )
    crossing = summary["crossing_facts"]
    out.append(
        f"- the lines cross at about {crossing:,} facts"
        if crossing
        else "- the lines do not cross: Spark's per-fact cost on local[2] is not lower"
    )
    counted = {(r["engine"], r["facts"]): r["requests_counted"] for r in runs}
    unique = {r["facts"]: r["unique_facts"] for r in runs}
    wrong = [k for k, v in counted.items() if v != unique[k[1]]]
    out.append(f"- requests counted = unique facts in every run: {wrong or 'yes'}")
    return "\n".join(out)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench spark", description=__doc__.split("\n")[0])
    p.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[100_000, 1_000_000, 4_000_000, 20_000_000],
        help="fact counts, comma-separated (default 100000,1000000,4000000,20000000)",
    )
    p.add_argument("--span-hours", type=int, default=24, help="event time span (default 24)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="runs of each engine per size")
    p.add_argument("--threads", type=int, default=2, help="DuckDB rollup threads (default 2)")
    p.add_argument("--memory-limit", default="1GB", help="DuckDB rollup memory limit")
    p.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    p.add_argument("--spark-memory", default="4g", help="spark.driver.memory (default 4g)")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    return p.parse_args(argv)
