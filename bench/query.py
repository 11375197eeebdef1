"""The query benchmark: the dashboard's panels through Gravix, beside DuckDB and chdb.

From issue #5, on the minute rows of :mod:`bench.query_data` (1,200 series x
30 days, 51.8M rows, stored as Gravix stores them and as one flat Parquet
file), each contender in its own long-lived process (:func:`worker`):

1. **Panels**: four dashboard queries through ``QueryService.run`` (plan,
   level and tier choice, ``DuckDBEngine`` reading the files) and the same
   answers from plain DuckDB and from chdb (ClickHouse) over the flat file,
   both merging the latency sketches for p95 as Gravix does. Cold: the first
   query of a fresh process (files in the page cache). Warm: ``--reps``
   rounds, contenders taking turns query by query, p50/p95. Every answer
   must agree: counts exactly, percentiles in the same sketch bucket.
   Goals: warm p95 <= 100 ms and >= 1.0x DuckDB for the 24 h and 7-day
   panels; <= 100 ms and >= 5x DuckDB for the 30-day overview.
2. **Where Gravix's time goes**: the steps of ``DuckDBEngine.run`` timed one
   by one, cold and warm (:func:`gravix_profile`).
3. **Freshness**: a real ``gravix serve``; a fact posted, then
   ``POST /api/v1/query`` polled until it counts it. Goal <= 5 s.

Run ``.venv/bin/python -m bench query [--series N --days D]``; ``--help``
lists the knobs. Data is cached in ``--data-dir``; raw results go to
``bench/results/query-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.machine import describe_machine, probe_fsync, publish_results, results_head
from bench.query_peers import CONTENDERS, LABELS, NOW_BEFORE_END_MS, Panel, panels
from bench.servers import REPO, BenchError

RESULTS_DIR = REPO / "bench" / "results"
DATA_DIR = Path(tempfile.gettempdir()) / "gravix-bench-query"
GOALS = {
    "panel_p95_ms": 100.0,  # 24 h and 7-day panels, warm
    "panel_duckdb_ratio": 1.0,
    "overview_p95_ms": 100.0,  # the 30-day overview, warm
    "overview_duckdb_ratio": 5.0,
    "freshness_s": 5.0,
}


class WorkerProcess:
    """A contender's worker process, driven one JSON line at a time."""

    def __init__(self, name: str, meta_path: Path, now_ms: int, threads: int, work: Path) -> None:
        self.name = name
        cmd = [sys.executable, "-m", "bench.query_peers", name, str(meta_path), str(now_ms)]
        cmd.append(str(threads))
        self.stderr_path = work / f"{name}-{time.monotonic_ns()}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
                cwd=REPO,
            )  # fmt: skip
        self.setup_ms = self._read()["setup_ms"]
        self._pause()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            tail = self.stderr_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"{self.name} worker exited with {self.proc.returncode}: {tail}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise BenchError(f"{self.name}: {reply['error']}")
        return reply

    # Idle workers are stopped (SIGSTOP) while another one answers: whatever a
    # runtime does between queries (chdb keeps ~25 threads) cannot then take
    # CPU from the contender being timed.
    def _pause(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGSTOP)

    def call(self, op: str, panel: str | None = None) -> dict[str, Any]:
        assert self.proc.stdin is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        try:
            self.proc.stdin.write(json.dumps({"op": op, "panel": panel}) + "\n")
            self.proc.stdin.flush()
            return self._read()
        finally:
            if op != "quit":
                self._pause()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> dict[str, Any]:
        try:
            memory = self.call("quit")
        finally:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(30)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        return memory


# --- answers must agree ------------------------------------------------------------
def _bucket(value: float | None) -> int | None:
    """The sketch key a percentile value stands for (values are bucket values)."""
    from gravix.schema import sketch

    if value is None:
        return None
    if value == 0.0:
        return sketch.ZERO_KEY
    return round(math.log(value * (sketch.GAMMA + 1.0) / 2.0) / sketch.LN_GAMMA)


def _same_cell(column: str, a: Any, b: Any) -> bool:
    if column in ("p50", "p95", "p99"):
        return _bucket(a) == _bucket(b)
    if column == "error_rate" and a is not None and b is not None:
        return math.isclose(a, b, rel_tol=1e-12)
    return bool(a == b)


def disagreement(panel: Panel, reference: list[list[Any]], rows: list[list[Any]]) -> str | None:
    """Why ``rows`` is not ``reference`` (None if they agree).

    Counts must be equal, error rates equal to 1e-12, percentiles in the same
    sketch bucket. A top-N may list a different one of several rows tied at
    the cut: then the ranked values must be equal and every row both hold too.
    """
    query = panel.query
    columns = (["time"] if query.get("grain") != "all" else []) + query.get("dimensions", [])
    columns += query["metrics"]
    width = len(columns) - len(query["metrics"])

    def same(a: list[Any], b: list[Any]) -> bool:
        return len(a) == len(b) and all(
            _same_cell(c, x, y) for c, x, y in zip(columns, a, b, strict=True)
        )

    if len(reference) == len(rows) and all(
        same(a, b) for a, b in zip(reference, rows, strict=True)
    ):
        return None
    if query.get("limit") and len(reference) == len(rows):
        by = columns.index(query["order"][0]["by"])
        ref_keys = {tuple(r[:width]): r for r in reference}
        if [r[by] for r in reference] == [r[by] for r in rows] and all(
            same(ref_keys[tuple(r[:width])], r) for r in rows if tuple(r[:width]) in ref_keys
        ):
            return None
    first = next(
        (i for i, (a, b) in enumerate(zip(reference, rows, strict=False)) if not same(a, b)),
        min(len(reference), len(rows)),
    )
    return (
        f"{len(reference)} rows against {len(rows)}; first difference at row {first}: "
        f"{reference[first] if first < len(reference) else None} against "
        f"{rows[first] if first < len(rows) else None}"
    )


# --- the measurements --------------------------------------------------------------
def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(round(q * len(ordered), 6))) - 1]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _check(
    answers: dict[str, list[list[Any]]], panel: Panel, name: str, rows: list[list[Any]]
) -> None:
    """Keep the first answer of the panel as the reference; fail on any that differs."""
    if panel.name not in answers:
        answers[panel.name] = rows
        return
    problem = disagreement(panel, answers[panel.name], rows)
    if problem:
        raise BenchError(f"{panel.name}: {name} disagrees with the first answer: {problem}")


class PageCache:
    """Puts the data set back into the page cache after a query that may have pushed it out.

    The peers' 30-day scans take up to 16 GiB (DuckDB's hash aggregate of
    1.1 billion sketch entries) and so evict the files everyone reads; after
    any query of more than ``heavy_ms`` every file is read once more, untimed,
    so the next query finds them where the first ones did.
    """

    def __init__(self, meta: dict[str, Any], heavy_ms: float = 5_000.0) -> None:
        self.meta, self.heavy_ms, self.rewarms = meta, heavy_ms, 0

    def settle(self, ms: float) -> None:
        from bench.query_data import warm

        if ms > self.heavy_ms:
            warm(self.meta)
            self.rewarms += 1


def cold_runs(
    args: argparse.Namespace, ps: list[Panel], meta_path: Path, now_ms: int, work: Path,
    answers: dict[str, list[list[Any]]], cache: PageCache,
) -> list[dict[str, Any]]:  # fmt: skip
    """Each panel as the first query of a fresh process, then once more in it."""
    runs = []
    for n in range(1, args.cold_rounds + 1):
        for panel in ps:
            order = args.contenders if n % 2 else list(reversed(args.contenders))
            for name in order:
                w = WorkerProcess(name, meta_path, now_ms, args.threads, work)
                try:
                    first = w.call("run", panel.name)
                    cache.settle(first["ms"])
                    second = w.call("run", panel.name)
                    cache.settle(second["ms"])
                    memory = w.close()
                except BenchError:
                    w.kill()
                    raise
                _check(answers, panel, name, first["rows"])
                _check(answers, panel, name, second["rows"])
                runs.append({
                    "round": n, "panel": panel.name, "contender": name,
                    "cold_ms": first["ms"], "second_ms": second["ms"], **memory,
                })  # fmt: skip
                log(
                    f"cold {n} {panel.name:18} {name:8} first {first['ms']:9.1f} ms  "
                    f"second {second['ms']:9.1f} ms"
                )
    return runs


def warm_runs(
    args: argparse.Namespace, ps: list[Panel], meta_path: Path, now_ms: int, work: Path,
    answers: dict[str, list[list[Any]]], cache: PageCache,
) -> tuple[dict[str, dict[str, list[float]]], dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Long-lived workers answer each panel ``--reps`` times, taking turns query by query.

    Panel after panel (the 30-day overview last): the peers' 30-day scans
    (up to 16 GiB) then run only beside other 30-day queries. Each panel is
    asked once untimed first. Returns the
    latencies per contender and panel, Gravix's warm profiles and each
    worker's memory at the end.
    """
    workers = {}
    try:
        for name in args.contenders:
            workers[name] = WorkerProcess(name, meta_path, now_ms, args.threads, work)
        took: dict[str, dict[str, list[float]]] = {
            name: {p.name: [] for p in ps} for name in workers
        }
        for panel in ps:
            for name, w in workers.items():
                reply = w.call("run", panel.name)
                cache.settle(reply["ms"])
                _check(answers, panel, name, reply["rows"])
            names = list(workers)
            for rep in range(args.reps):
                shift = rep % len(names)
                for name in names[shift:] + names[:shift]:
                    done = took[name][panel.name]
                    if len(done) >= args.min_reps and sum(done) > args.budget * 1000:
                        continue
                    reply = workers[name].call("run", panel.name)
                    cache.settle(reply["ms"])
                    _check(answers, panel, name, reply["rows"])
                    done.append(reply["ms"])
            log(f"warm: {panel.name}, {args.reps} rounds")
        profiles: dict[str, Any] = {}
        if "gravix" in workers and not args.no_profile:
            for panel in ps:
                reps = [workers["gravix"].call("profile", panel.name) for _ in range(5)]
                profiles[panel.name] = _median_profile(reps)
        memory = {name: w.close() for name, w in workers.items()}
    finally:
        for w in workers.values():
            w.kill()
    return took, profiles, memory


def _median_profile(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every timed figure over the repetitions; the rest from the first."""
    out = dict(reps[0])
    out["steps_ms"] = {
        step: round(statistics.median(r["steps_ms"].get(step, 0.0) for r in reps), 2)
        for step in reps[0]["steps_ms"]
    }
    out["total_ms"] = round(statistics.median(r["total_ms"] for r in reps), 2)
    out["reps"] = len(reps)
    return out


def cold_profiles(
    args: argparse.Namespace, ps: list[Panel], meta_path: Path, now_ms: int, work: Path
) -> dict[str, Any]:
    """Gravix's steps for each panel as the first query of a fresh process."""
    out = {}
    for panel in ps:
        w = WorkerProcess("gravix", meta_path, now_ms, args.threads, work)
        try:
            out[panel.name] = w.call("profile", panel.name)
            w.close()
        finally:
            w.kill()
    return out


def freshness(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Seconds from a fact's 202 to the first query answer that counts it (real server)."""
    import httpx

    from bench.servers import gravix_server, make_key
    from gravix.api.auth import token_store

    data_dir = work / "serve"
    data_dir.mkdir()
    tenant = "fresh"
    key = make_key(data_dir, tenant=tenant)
    _, token = token_store(data_dir / "tokens.db").create(tenant, "bench")
    cpu = max(os.sched_getaffinity(0))
    server = gravix_server(data_dir, cpu=cpu, log_path=work / "serve.log").start()
    trials = []
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            body = {"metrics": ["requests"], "from": "now-1h", "grain": "all"}
            auth = {"Authorization": f"Bearer {token}"}
            for i in range(args.freshness_trials):
                fact = {
                    "event_id": f"fresh-{time.time_ns()}-{i}",
                    "timestamp": int(time.time() * 1000),
                    "service": "checkout", "method": "GET", "path": "/checkout/{id}",
                    "status": 200, "latency_ms": 12.5, "env": "prod", "version": "v42",
                }  # fmt: skip
                posted = client.post(
                    "/api/v1/facts", json=[fact], headers={"Authorization": f"Bearer {key}"}
                )
                accepted = time.perf_counter()
                if posted.status_code != 202:
                    raise BenchError(f"POST /api/v1/facts: {posted.status_code} {posted.text}")
                polls, poll_ms = 0, []
                while True:
                    sent = time.perf_counter()
                    reply = client.post("/api/v1/query", json=body, headers=auth)
                    poll_ms.append((time.perf_counter() - sent) * 1000)
                    polls += 1
                    if reply.status_code != 200:
                        raise BenchError(f"POST /api/v1/query: {reply.status_code} {reply.text}")
                    if reply.json()["rows"] == [[i + 1]]:
                        break
                    if time.perf_counter() - accepted > 60:
                        raise BenchError(f"fact {i + 1} not in query results after 60 s")
                trials.append({
                    "seconds": time.perf_counter() - accepted, "polls": polls,
                    "poll_ms_mean": statistics.fmean(poll_ms),
                })  # fmt: skip
                time.sleep(args.freshness_gap)
    finally:
        server.stop()
    seconds = [t["seconds"] for t in trials]
    return {
        "trials": trials,
        "p50_s": statistics.median(seconds),
        "max_s": max(seconds),
        "poll_ms_mean": statistics.fmean(t["poll_ms_mean"] for t in trials),
        "goal_met": max(seconds) <= GOALS["freshness_s"],
    }


# --- report ------------------------------------------------------------------------
def summarise(
    ps: list[Panel],
    cold: list[dict[str, Any]],
    warm: dict[str, dict[str, list[float]]],
    profiles: dict[str, Any],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for panel in ps:
        row: dict[str, Any] = {"title": panel.title, "goal": panel.goal, "contenders": {}}
        for name, per_panel in warm.items():
            ms = per_panel[panel.name]
            firsts = [
                r["cold_ms"] for r in cold if r["panel"] == panel.name and r["contender"] == name
            ]
            row["contenders"][name] = {
                "warm_reps": len(ms),
                "warm_p50_ms": round(statistics.median(ms), 2),
                "warm_p95_ms": round(nearest_rank(ms, 0.95), 2),
                "warm_max_ms": round(max(ms), 2),
                "cold_ms": round(statistics.median(firsts), 2) if firsts else None,
            }
        c = row["contenders"]
        if "gravix" in c:
            g = c["gravix"]
            for peer in (n for n in c if n != "gravix"):
                row[f"gravix_over_{peer}"] = round(c[peer]["warm_p50_ms"] / g["warm_p50_ms"], 3)
                if g["cold_ms"] and c[peer]["cold_ms"]:
                    row[f"cold_gravix_over_{peer}"] = round(c[peer]["cold_ms"] / g["cold_ms"], 3)
            limit = GOALS[f"{panel.goal}_p95_ms"]
            row["p95_goal_met"] = g["warm_p95_ms"] <= limit
            if "duckdb" in c:
                row["ratio_goal_met"] = (
                    row["gravix_over_duckdb"] >= GOALS[f"{panel.goal}_duckdb_ratio"]
                )
            if panel.name in profiles:
                prof = profiles[panel.name]
                row["gravix_reads"] = {k: prof[k] for k in ("level", "tiers", "objects")}
        out[panel.name] = row
    return out


def _met(ok: bool) -> str:
    return "**yes**" if ok else "**no**"


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def markdown(
    summary: dict[str, Any],
    contenders: list[str],
    cold_prof: dict[str, Any],
    warm_prof: dict[str, Any],
    fresh: dict[str, Any] | None,
) -> str:
    lines = [
        "| panel | contender | cold | warm p50 | warm p95 | speed vs DuckDB (warm p50) "
        "| goal | met |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for name, row in summary.items():
        c = row["contenders"]
        reads = row.get("gravix_reads")
        panel = f"**{name}**: {row['title']}"
        if reads:
            panel += (
                f"; Gravix reads the {reads['level']} level, tiers "
                f"{'+'.join(reads['tiers'])}: {reads['objects']} files"
            )
        for n in contenders:
            x = c[n]
            speed = ""
            if "duckdb" in c:
                speed = f"{c['duckdb']['warm_p50_ms'] / x['warm_p50_ms']:.2f}x"
            goal = met = ""
            if n == "gravix":
                goal = (
                    f"p95 <= {GOALS[row['goal'] + '_p95_ms']:g} ms, "
                    f">= {GOALS[row['goal'] + '_duckdb_ratio']:g}x"
                )
                met = _met(row.get("p95_goal_met", False) and row.get("ratio_goal_met", False))
            lines.append(
                f"| {panel} | {LABELS[n]} | {_ms(x['cold_ms'])} | {_ms(x['warm_p50_ms'])} "
                f"| {_ms(x['warm_p95_ms'])} | {speed} | {goal} | {met} |"
            )
            panel = ""
    reps = {n: sorted({row["contenders"][n]["warm_reps"] for row in summary.values()})
            for n in contenders}  # fmt: skip
    lines.append("")
    lines.append(
        "Warm repetitions per panel: "
        + ", ".join(
            f"{n} {'-'.join(str(r) for r in sorted({min(v), max(v)}))}" for n, v in reps.items()
        )
        + ". Times in ms; cold = first query of a fresh process (files in the page cache)."
    )
    if warm_prof:
        steps = list(dict.fromkeys(s for p in [*cold_prof.values(), *warm_prof.values()]
                                   for s in p["steps_ms"]))  # fmt: skip
        names = list(warm_prof)
        lines += [
            "",
            "| Gravix step (ms) | " + " | ".join(f"{n} cold | {n} warm" for n in names) + " |",
        ]
        lines.append("|---|" + "---:|---:|" * len(names))
        for step in [*steps, "total"]:
            cells = f"| {step} |"
            for n in names:
                for prof in (cold_prof.get(n), warm_prof[n]):
                    if prof is None:
                        cells += " |"
                        continue
                    v = prof["total_ms"] if step == "total" else prof["steps_ms"].get(step)
                    cells += f" {_ms(v)} |"
            lines.append(cells)
        lines.append(
            "\nGravix's steps: cold = the first query of a fresh process; warm = the median "
            "of 5 back to back after the warm rounds."
        )
    if fresh:
        lines += [
            "",
            "| freshness | trials | p50 | max | mean query round trip | goal | met |",
            "|---|---:|---:|---:|---:|---|---|",
            f"| POST a fact -> first `POST /api/v1/query` counting it | {len(fresh['trials'])} "
            f"| {fresh['p50_s']:.3f} s | {fresh['max_s']:.3f} s | {fresh['poll_ms_mean']:.1f} ms "
            f"| <= {GOALS['freshness_s']:g} s | {_met(fresh['goal_met'])} |",
        ]
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench query",
        description="Gravix query benchmark beside DuckDB and chdb over one flat Parquet file.",
    )
    parser.add_argument("--series", type=int, default=1200, help="series (default 1200, max 1200)")
    parser.add_argument("--days", type=int, default=30, help="days of minute rows (default 30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reps", type=int, default=30, help="warm rounds (default 30)")
    parser.add_argument(
        "--min-reps", type=int, default=5, help="warm rounds every contender runs (default 5)"
    )
    parser.add_argument(
        "--budget", type=float, default=60.0,
        help="seconds of warm queries per contender and panel after --min-reps (default 60)",
    )  # fmt: skip
    parser.add_argument("--cold-rounds", type=int, default=1, help="fresh processes per panel")
    parser.add_argument("--threads", type=int, default=0, help="engine threads (0: default)")
    parser.add_argument(
        "--contenders", type=lambda s: s.split(","), default=list(CONTENDERS),
        help=f"comma-separated (default: {','.join(CONTENDERS)})",
    )  # fmt: skip
    parser.add_argument(
        "--panels", type=lambda s: s.split(","), default=None, help="comma-separated panel names"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip Gravix's step timings")
    parser.add_argument("--no-freshness", action="store_true", help="skip the freshness test")
    parser.add_argument("--freshness-trials", type=int, default=10)
    parser.add_argument("--freshness-gap", type=float, default=0.5, help="seconds between facts")
    parser.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help=f"data cache (default {DATA_DIR})"
    )
    parser.add_argument("--tmp-dir", type=Path, default=None, help="work dir parent")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown or "gravix" not in args.contenders:
        parser.error(f"contenders must include gravix; unknown: {sorted(unknown)}")
    if not 1 <= args.series <= 1200 or args.days < 1 or args.reps < 1 or args.min_reps < 1:
        parser.error("--series 1-1200, --days, --reps and --min-reps at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from bench.query_data import dataset, warm

    args = _parse_args(argv)
    started = datetime.now(UTC)
    try:
        if "chdb" in args.contenders:
            try:
                import chdb  # noqa: F401
            except ImportError as e:
                raise BenchError(
                    f"the query benchmark's chdb peer needs the bench extra: "
                    f"pip install -e '.[bench]' ({e})"
                ) from e
        with tempfile.TemporaryDirectory(prefix="gravix-bench-", dir=args.tmp_dir) as tmp:
            work = Path(tmp)
            machine = describe_machine(work)
            for name in ("wrk", "hey"):
                machine.pop(name, None)
            machine["packages"] = {p: metadata.version(p) for p in ("duckdb", "chdb", "pyarrow")}
            machine["fsync_probe"] = probe_fsync(work, min(os.sched_getaffinity(0)))
            log(f"machine: {machine['cpu_model']}, {machine['nproc']} CPUs, work dir {tmp}")
            meta = dataset(args.data_dir, args.series, args.days, args.seed, log=log)
            made = "cached" if meta["cached"] else f"made in {meta['generate_seconds']} s"
            log(
                f"data: {meta['minute_rows']:,} minute rows, {meta['facts']:,} facts, "
                f"{meta['mean_sketch_keys']} sketch keys a row ({made}); "
                f"read into the page cache in {warm(meta):.1f} s"
            )
            meta_path = Path(meta["root"]) / "meta.json"
            now_ms = meta["end_ms"] - NOW_BEFORE_END_MS
            ps = [p for p in panels(meta) if args.panels is None or p.name in args.panels]
            answers: dict[str, list[list[Any]]] = {}
            cache = PageCache(meta)
            cold = cold_runs(args, ps, meta_path, now_ms, work, answers, cache)
            cold_prof = {} if args.no_profile else cold_profiles(args, ps, meta_path, now_ms, work)
            took, warm_prof, memory = warm_runs(args, ps, meta_path, now_ms, work, answers, cache)
            log(f"page cache refilled after {cache.rewarms} queries of over 5 s")
            log("answers: every contender gave the same rows for every panel")
            fresh = None if args.no_freshness else freshness(args, work)
    except BenchError as e:
        print(f"bench: error: {e}", flush=True)
        return 1
    summary = summarise(ps, cold, took, warm_prof)
    table = markdown(summary, args.contenders, cold_prof, warm_prof, fresh)
    seconds = (datetime.now(UTC) - started).total_seconds()
    out, head = results_head("query", args, started, seconds, argv)
    result = {
        **head,
        "machine": machine,
        "goals": GOALS,
        "data": meta,
        "now_ms": now_ms,
        "panels": [{"name": p.name, "title": p.title, "query": p.query} for p in ps],
        "summary": summary,
        "profiles": {"cold": cold_prof, "warm": warm_prof},
        "worker_memory": memory,
        "page_cache_refills": cache.rewarms,
        "freshness": fresh,
        "cold_runs": cold,
        "warm_ms": took,
        "answers": answers,
        "table": table,
    }
    publish_results(out, result, table, machine, "work dir", seconds)
    return 0
