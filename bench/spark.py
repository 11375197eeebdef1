"""The rollup on Spark beside the rollup on DuckDB (issues #7, #17), same input, same run.

Every contender is the whole ``gravix rollup`` command, in a fresh process
each, over the same raw objects in a local object store:

* ``duckdb``: ``--engine duckdb``, the embedded default (``rollup_threads`` = 2);
* ``local[2]``: ``--engine spark`` with the driver's own executors, 2 threads;
* ``cluster/1`` and ``cluster/2``: ``--engine spark`` on a Spark standalone
  cluster on 127.0.0.1 (:mod:`tests.spark_cluster`: PySpark's own daemon
  scripts), first with one worker of ``--worker-cores`` cores, then with a
  second one added; the master URL goes in through the ``spark_master``
  setting, as a user's would.

On every Spark contender the executors read the raw Parquet objects from the
store's folder themselves (``Compute.dedup_files``); the driver checks their
footers, receives the deduplicated rows, and does the rest of the fold
(archive parts, minute merges, tiers: :class:`gravix.rollup.job.RollupJob`).
The published metric and archive files of each Spark run are compared byte
for byte with DuckDB's.

CPU: the driver's is the ``gravix rollup`` process (exactly, from ``wait4``)
and its children (PySpark's JVM); the cluster's is that of the master, the
workers and their executors. Children and the cluster are sampled from
``/proc`` every 0.2 s during the run (a process loses at most its last 0.2 s).
On ``local[2]`` the executors are inside the driver's JVM.

The input is the rollup benchmark's fleet (:mod:`bench.rollup_data`, 1% client
retries) turned into raw objects exactly as the uploader writes them: Parquet
objects of 50,000-fact batches, partitioned by received hour. A straight line
``seconds = fixed + per_fact * facts`` is fitted to each contender's runs.

Run ``.venv/bin/python -m bench spark [--sizes 200000,1000000,20000000]``;
inputs are cached in ``--data-dir``; raw results go to
``bench/results/spark-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
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
from tests.spark_cluster import SparkCluster

RESULTS_DIR = REPO / "bench" / "results"
DATA_DIR = Path(tempfile.gettempdir()) / "gravix-bench-spark"
TENANT = "bench"
BATCH_FACTS = 50_000
OBJECT_BATCHES = 4  # 200,000 facts (about 12 MB) per raw object
CONTENDERS = ("duckdb", "local[2]", "cluster/1", "cluster/2")
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


# --- CPU time from /proc ------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu(pid: int, reaped: bool = False) -> float:
    """CPU seconds of a process (with ``reaped``: and of the children it has waited for)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / TICK


def descendants(roots: list[int]) -> list[int]:
    """``roots`` and every living process below them."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


class CpuSampler:
    """CPU seconds of process trees, sampled from /proc every ``interval`` until :meth:`stop`.

    A process that ends between two samples loses what it spent since the
    last one (at most ``interval`` of CPU per process).
    """

    def __init__(self, roots: list[int], interval: float = 0.2) -> None:
        self.roots, self.interval = roots, interval
        self.start = {pid: process_cpu(pid) for pid in roots}
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        for pid in descendants(self.roots):
            cpu = process_cpu(pid)
            if cpu:
                self.seen[pid] = max(self.seen.get(pid, 0.0), cpu)

    def stop(self) -> dict[int, float]:
        """CPU seconds by process since the start (the roots' own: since the sampler began)."""
        self._sample()
        self._stop.set()
        self._thread.join()
        return {pid: cpu - self.start.get(pid, 0.0) for pid, cpu in self.seen.items()}


def wait_for_executors(cluster: SparkCluster, timeout: float = 60) -> None:
    """Until the workers have reaped their executors (so that their CPU is counted)."""
    deadline = time.monotonic() + timeout
    workers = cluster.daemon_pids()[1:]
    while time.monotonic() < deadline:
        # A worker keeps a zombie child from its launch script: not an executor.
        below = [p for p in descendants(workers) if p not in workers]
        if all((_stat(p) or ["Z"])[0] == "Z" for p in below):
            return
        time.sleep(0.2)
    raise BenchError("the executors of the last run did not exit within a minute")


# --- one contender in its own process ------------------------------------------------
def run_rollup(
    contender: str,
    store: Path,
    work: Path,
    args: argparse.Namespace,
    cluster: SparkCluster | None = None,
) -> dict[str, Any]:
    """``gravix rollup`` of one contender over a hard-linked copy of ``store``."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    copy = work / "store"
    # The rollup deletes raw objects and writes new files, never edits one: links do.
    subprocess.run(["cp", "-al", str(store), str(copy)], check=True)
    engine = "duckdb" if contender == "duckdb" else "spark"
    conf = {"spark.driver.memory": args.spark_memory}
    if cluster is not None:
        conf["spark.executor.memory"] = args.executor_memory
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "GRAVIX_"))},
        "GRAVIX_OBJECT_STORE_URL": f"file://{copy}",
        "GRAVIX_ROLLUP_THREADS": str(args.threads),
        "GRAVIX_ROLLUP_MEMORY_LIMIT": args.memory_limit,
        "GRAVIX_SPARK_MASTER": cluster.url if cluster is not None else args.master,
        "GRAVIX_SPARK_CONF": json.dumps(conf),
    }
    if engine == "spark" and args.spark_chunk_mib:
        env["GRAVIX_ROLLUP_CHUNK_BYTES"] = str(args.spark_chunk_mib << 20)
    cmd = [str(REPO / ".venv" / "bin" / "gravix"), "rollup", "--engine", engine]
    cmd += ["--data-dir", str(work / "data")]
    stderr_path = work / "stderr.log"
    on_cluster = CpuSampler(cluster.daemon_pids()) if cluster is not None else None
    started = time.perf_counter()
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, cwd=REPO, env=env)
        on_driver = CpuSampler([proc.pid])
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    driver_cpu = on_driver.stop()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = stderr_path.read_text(errors="replace")[-2000:]
        raise BenchError(f"gravix rollup ({contender}) exited with {code}: {tail}")
    # The Python process as sampled, its children (PySpark's JVM) too: what
    # wait4 reports includes the children it reaped, if it did.
    python = driver_cpu.get(proc.pid, 0.0)
    waited = usage.ru_utime + usage.ru_stime
    jvm = sum(cpu for pid, cpu in driver_cpu.items() if pid != proc.pid)
    driver = python + jvm
    executors = 0.0
    if cluster is not None and on_cluster is not None:
        wait_for_executors(cluster)
        executors = sum(on_cluster.stop().values())
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result: dict[str, Any] = {
        "contender": contender,
        "seconds": round(wall, 2),
        # The driver: the gravix process and PySpark's JVM (on local[2], the
        # executors too).
        "driver_cpu_seconds": round(driver, 1),
        "driver_python_cpu_seconds": round(python, 1),
        "driver_jvm_cpu_seconds": round(jvm, 1),
        "wait4_cpu_seconds": round(waited, 1),
        # Master, workers and executors.
        "cluster_cpu_seconds": round(executors, 1) if cluster is not None else None,
        "driver_cpu_share": round(driver / (driver + executors), 3) if cluster else None,
        # The largest RSS of any process the benchmark has waited for so far.
        "largest_child_rss_mib": round(children.ru_maxrss / 1024, 1),
        "left_raw_objects": sum(1 for _ in (copy / "raw").rglob("*.parquet")),
    }
    return result


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
            for contender, result, work in _round(store, count, args):
                result.update(facts=meta["lines"], unique_facts=meta["unique_facts"], round=rnd + 1)
                result["facts_per_second"] = round(meta["lines"] / result["seconds"])
                result["requests_counted"] = requests_counted(work / "store")
                outputs[contender] = published(work / "store")
                runs.append(result)
                share = result["driver_cpu_share"]
                log(
                    f"{meta['lines']:>11,} facts  {contender:9} {result['seconds']:8.1f} s  "
                    f"{result['facts_per_second']:>9,} facts/s  driver CPU "
                    f"{result['driver_cpu_seconds']:.1f} s (Python "
                    f"{result['driver_python_cpu_seconds']:.1f} s)"
                    + (f" ({share:.0%} of all)" if share is not None else "")
                    + f"  counted {result['requests_counted']:,} of {meta['unique_facts']:,}"
                )
        checks[str(meta["lines"])] = {
            contender: compare(outputs["duckdb"], outputs[contender])
            for contender in args.contenders
            if contender != "duckdb" and "duckdb" in outputs
        }
        for contender, check in checks[str(meta["lines"])].items():
            log(
                f"{meta['lines']:,} facts, {contender}: {check['identical']} of {check['files']} "
                "files identical to DuckDB's"
            )
    summary = summarise(runs, args.contenders)
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


def _round(
    store: Path, count: int, args: argparse.Namespace
) -> Iterator[tuple[str, dict[str, Any], Path]]:
    """One run of each contender, in ``args.contenders`` order; the cluster started for
    its first run with one worker, given its second worker before ``cluster/2``."""
    cluster: SparkCluster | None = None
    try:
        for contender in args.contenders:
            # No glob characters in the folder's name: DuckDB reads the files by pattern.
            name = re.sub(r"[^a-z0-9]+", "-", contender).strip("-")
            work = args.data_dir / "runs" / f"{count}-{name}"
            if contender.startswith("cluster/"):
                workers = int(contender.split("/")[1])
                if cluster is None:
                    root = args.data_dir / "cluster"
                    shutil.rmtree(root, ignore_errors=True)
                    cluster = SparkCluster(
                        root, worker_cores=args.worker_cores, worker_memory=args.worker_memory
                    )
                    cluster.start(workers=0)
                while cluster.workers < workers:
                    cluster.add_worker()
                log(f"cluster {cluster.url}: {cluster.workers} worker(s)")
            yield contender, run_rollup(contender, store, work, args, cluster), work
    finally:
        if cluster is not None:
            cluster.stop()


def summarise(runs: list[dict[str, Any]], contenders: list[str]) -> dict[str, Any]:
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for r in runs:
        key = (r["contender"], r["facts"])
        if key not in best or r["seconds"] < best[key]["seconds"]:
            best[key] = r
    lines = {}
    for contender in contenders:
        points = sorted((n, r["seconds"]) for (c, n), r in best.items() if c == contender)
        if len(points) >= 2:
            fixed, per_fact = fit(points)
            lines[contender] = {"fixed_seconds": round(fixed, 2), "per_million": per_fact * 1e6}
    sizes = sorted({n for _, n in best})
    speedup = {
        n: round(best[("cluster/1", n)]["seconds"] / best[("cluster/2", n)]["seconds"], 2)
        for n in sizes
        if ("cluster/1", n) in best and ("cluster/2", n) in best
    }
    return {
        "best_seconds": {f"{c}/{n}": r["seconds"] for (c, n), r in sorted(best.items())},
        "driver_cpu_share": {
            f"{c}/{n}": r["driver_cpu_share"]
            for (c, n), r in sorted(best.items())
            if r["driver_cpu_share"] is not None
        },
        "speedup_1_to_2_workers": speedup,
        "lines": lines,
    }


def markdown(summary: dict[str, Any], runs: list[dict[str, Any]], checks: dict[str, Any]) -> str:
    best = summary["best_seconds"]
    contenders = list(dict.fromkeys(r["contender"] for r in runs))
    out = [
        "| facts | " + " | ".join(f"{c} s" for c in contenders) + " | 1 -> 2 workers | "
        "driver CPU share (cluster/1, cluster/2) | files byte-identical |",
        "|---|" + "---|" * len(contenders) + "---|---|---|",
    ]
    for n in sorted({r["facts"] for r in runs}):
        seconds = [best.get(f"{c}/{n}") for c in contenders]
        cells = " | ".join("" if s is None else f"{s:.1f}" for s in seconds)
        speed = summary["speedup_1_to_2_workers"].get(n)
        shares = ", ".join(
            f"{summary['driver_cpu_share'][key]:.0%}"
            for key in (f"cluster/1/{n}", f"cluster/2/{n}")
            if key in summary["driver_cpu_share"]
        )
        same = ", ".join(
            f"{c} {v['identical']} of {v['files']}" for c, v in checks.get(str(n), {}).items()
        )
        out.append(
            f"| {n:,} | {cells} | {'' if speed is None else f'{speed:.2f}x'} | {shares} | {same} |"
        )
    out.append("")
    for contender, line in summary["lines"].items():
        out.append(
            f"- {contender}: about {line['fixed_seconds']:.1f} s fixed + "
            f"{line['per_million']:.2f} s per million facts (least squares over the sizes)"
        )
    counted = {(r["contender"], r["facts"]): r["requests_counted"] for r in runs}
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
    p.add_argument(
        "--contenders",
        type=lambda s: s.split(","),
        default=list(CONTENDERS),
        help=f"comma-separated, run in this order (default {','.join(CONTENDERS)})",
    )
    p.add_argument("--span-hours", type=int, default=24, help="event time span (default 24)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="runs of each contender per size")
    p.add_argument("--threads", type=int, default=2, help="DuckDB rollup threads (default 2)")
    p.add_argument("--memory-limit", default="1GB", help="DuckDB rollup memory limit")
    p.add_argument("--master", default="local[2]", help="master of 'local[2]' (default local[2])")
    p.add_argument("--spark-memory", default="4g", help="spark.driver.memory (default 4g)")
    p.add_argument(
        "--spark-chunk-mib",
        type=int,
        default=0,
        help="rollup_chunk_bytes of the Spark runs in MiB (default: the rollup's, as DuckDB's)",
    )
    p.add_argument("--worker-cores", type=int, default=1, help="cores of a worker (default 1)")
    p.add_argument("--worker-memory", default="4g", help="memory of a worker (default 4g)")
    p.add_argument(
        "--executor-memory", default="3g", help="spark.executor.memory on the cluster (default 3g)"
    )
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = p.parse_args(argv)
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        p.error(f"unknown contenders {sorted(unknown)}; known: {', '.join(CONTENDERS)}")
    clusters = [c for c in args.contenders if c.startswith("cluster/")]
    if clusters != sorted(clusters):
        p.error("the cluster grows between runs: give cluster/1 before cluster/2")
    return args
