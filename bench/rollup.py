"""The rollup benchmark: NDJSON facts -> dedup -> minute rows -> Parquet, beside three peers.

From issue #4, on the same input in the same run, each contender alone in a
fresh process limited to ``--threads`` (2) threads (:mod:`bench.rollup_peers`):

1. **Throughput**: Gravix's SQL (``dedup_sql`` -> ``minute_sql`` with
   latency sketches, ``parquet.encode``) against one plain DuckDB statement
   with exact quantiles, chdb (ClickHouse) and Polars. Goals: Gravix >= 1.0x
   the DuckDB statement's facts/s, >= 2x Polars'; peak RSS <= 1 GiB per 20M
   facts. Every output must hold the same requests per minute and series.
2. **Percentile error**: minute sketches of a 30-day dataset merged over
   random windows of 1 minute to 30 days, per series and over all series,
   against the exact nearest-rank percentile. Bound: ALPHA (1%).
3. **Bytes**: raw archive bytes per fact (UUIDv7 and UUIDv4 event ids; goal
   <= 21.5) and minute-tier bytes per bucket row.

Run ``.venv/bin/python -m bench rollup [--facts N]``; ``--help`` lists the
knobs. Inputs are cached in ``--data-dir``; raw results go to
``bench/results/rollup-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import shutil
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
from bench.rollup_data import DAY_MS, HOUR_MS, T0, dataset, warm
from bench.rollup_peers import gravix_source
from bench.servers import REPO, BenchError

RESULTS_DIR = REPO / "bench" / "results"
DATA_DIR = Path(tempfile.gettempdir()) / "gravix-bench-rollup"
GOALS = {
    "duckdb_ratio": 1.0,
    "polars_ratio": 2.0,
    "rss_mib_per_20m_facts": 1024.0,
    "relative_error": 0.01,
    "archive_bytes_per_fact": 21.5,
}
PEERS = ("duckdb", "chdb", "polars")
EXACT = ("duckdb", "duckdb-capped", "chdb", "polars")  # outputs with exact percentiles
LABELS = {
    "gravix": "**Gravix** (dedup_sql -> minute_sql, parquet.encode)",
    "gravix-unordered": "Gravix, `dedup_sql(ordered=False)` (no archive order)",
    "gravix-hashdedup": "Gravix, hash dedup spelled without a CTE (experiment)",
    "duckdb": "DuckDB, one statement (QUALIFY dedup, exact quantile_disc)",
    "duckdb-capped": "the same DuckDB statement under Gravix's memory_limit",
    "chdb": "chdb (argMin dedup, exact quantilesExactLow)",
    "polars": "Polars, streaming (unique, exact equiprobable quantile)",
}
WINDOWS = (
    ("1m", 60_000),
    ("5m", 300_000),
    ("1h", HOUR_MS),
    ("6h", 6 * HOUR_MS),
    ("1d", DAY_MS),
    ("7d", 7 * DAY_MS),
    ("30d", 30 * DAY_MS),
)
QUANTILES = (0.5, 0.95, 0.99)
SERIES = ("service", "method", "path", "env", "version")


def _made(meta: dict[str, Any]) -> str:
    return "cached" if meta["cached"] else f"made in {meta['generate_seconds']} s"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- one contender in its own process -------------------------------------------
def run_contender(
    name: str, source: Path, output: Path, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Run ``bench.rollup_peers NAME`` alone; its JSON line plus wall time and peak RSS."""
    cmd = [
        sys.executable,
        "-m",
        "bench.rollup_peers",
        name,
        str(source),
        str(output),
        "--threads",
        str(args.threads),
        "--memory-limit",
        args.memory_limit,
        "--temp-dir",
        str(work / "spill"),
        "--archive-v4",
        str(work / "archive-v4.parquet"),
    ]
    stderr_path = work / f"{name}.stderr"
    started = time.perf_counter()
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, cwd=REPO)
        assert proc.stdout is not None
        out = proc.stdout.read()
        # wait4, not wait: the child's own rusage (CPU time).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = stderr_path.read_text(errors="replace")[-2000:]
        raise BenchError(f"{name} exited with {proc.returncode}: {tail}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    # The child's VmHWM is its peak RSS; ru_maxrss also counts the parent's
    # RSS at fork (Linux keeps it across exec), so it is only recorded.
    result.update(
        process_seconds=round(wall, 2),
        ru_maxrss_mib=round(usage.ru_maxrss / 1024, 1),
        cpu_seconds=round(usage.ru_utime + usage.ru_stime, 1),
    )
    return result


def rollup_runs(
    args: argparse.Namespace, source: Path, lines: int, work: Path
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Every contender ``--rounds`` times, the order reversed every other round."""
    contenders = list(args.contenders)
    outputs = {name: work / f"{name}.parquet" for name in contenders}
    runs = []
    for n in range(1, args.rounds + 1):
        for name in contenders if n % 2 else reversed(contenders):
            shutil.rmtree(work / "spill", ignore_errors=True)
            (work / "spill").mkdir()
            outputs[name].unlink(missing_ok=True)  # chdb will not overwrite a file
            try:
                r = run_contender(name, source, outputs[name], args, work)
            except BenchError as e:
                if name == "gravix":
                    raise
                # A peer that cannot do the job (e.g. out of memory) is a result.
                error = next((ln for ln in str(e).splitlines() if "Error" in ln), str(e))
                runs.append({"contender": name, "round": n, "failed": error.strip()[:300]})
                log(f"round {n} {name:16} failed: {error.strip()[:200]}")
                continue
            r["round"] = n
            runs.append(r)
            log(
                f"round {n} {name:16} {r['seconds']:7.1f} s  {lines / r['seconds']:>10,.0f} "
                f"facts/s  peak RSS {r['peak_rss_mib']:6.0f} MiB  CPU {r['cpu_seconds']:.0f} s"
            )
    # Cross-check the files of the contenders whose last run succeeded.
    last = {r["contender"]: r for r in runs}
    return runs, {name: path for name, path in outputs.items() if "failed" not in last[name]}


# --- cross-checks of the outputs ------------------------------------------------
def _read_rows(path: Path) -> list[dict[str, Any]]:
    import duckdb

    con = duckdb.connect(":memory:")
    rel = con.sql(f"SELECT * FROM read_parquet('{path}')")
    if "bucket" in rel.columns:  # Gravix's file: a timestamp named without _ms
        rel = con.sql(f"SELECT epoch_ms(bucket) AS bucket_ms, * FROM read_parquet('{path}')")
    table = rel.to_arrow_table()
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["bucket_ms"], *(row[c] for c in SERIES))


def cross_check(outputs: dict[str, Path], unique_facts: int) -> dict[str, Any]:
    """Fail unless every output has the same requests per (minute, series)."""
    from gravix.schema import sketch

    rows = {name: {_key(r): r for r in _read_rows(path)} for name, path in outputs.items()}
    reference_name = "gravix" if "gravix" in rows else next(iter(rows))
    reference = {k: r["requests"] for k, r in rows[reference_name].items()}
    total = sum(reference.values())
    if total != unique_facts:
        raise BenchError(f"{reference_name} counted {total} facts, the input holds {unique_facts}")
    for name, by_key in rows.items():
        counts = {k: r["requests"] for k, r in by_key.items()}
        if counts != reference:
            diff = sorted(set(counts.items()) ^ set(reference.items()), key=str)[:5]
            raise BenchError(
                f"{name} and {reference_name} disagree on requests per minute and series: {diff}"
            )
    check: dict[str, Any] = {"rows": len(reference), "facts": total, "counts_agree": True}
    # The exact peers should agree on every percentile (all nearest rank), and
    # Gravix's sketch should be within ALPHA of them in every row.
    peers = [p for p in EXACT if p in rows]
    if peers:
        exact = rows[peers[0]]
        check["percentile_rows_differing"] = {
            p: sum(
                1
                for k, r in rows[p].items()
                if any(r[f"p{n}_us"] != exact[k][f"p{n}_us"] for n in ("50", "95", "99"))
            )
            for p in peers[1:]
        }
        if "gravix" in rows:
            worst = 0.0
            for k, r in rows["gravix"].items():
                sk = dict(r["latency_sketch"])
                for q, n in zip(QUANTILES, ("50", "95", "99"), strict=True):
                    truth = exact[k][f"p{n}_us"] / 1000
                    est = sketch.quantile(sk, q) or 0.0
                    worst = max(worst, abs(est - truth) / truth if truth else abs(est))
            check["gravix_minute_max_relative_error"] = worst
    return check


# --- percentile error over windows ------------------------------------------------
def percentile_errors(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Sketch percentiles merged over random windows against exact nearest-rank ones."""
    from gravix.rollup import aggregate
    from gravix.schema import parquet, sketch

    span = args.error_days * DAY_MS
    meta = dataset(args.data_dir, args.error_facts, span, args.seed)
    log(f"error dataset: {meta['lines']:,} lines over {args.error_days} days ({_made(meta)})")
    con = aggregate.connect("4GB", args.threads, str(work / "spill"))
    con.execute("SET enable_progress_bar = false")
    con.execute(f"CREATE TABLE facts AS {aggregate.dedup_sql(gravix_source(Path(meta['path'])))}")
    minutes = con.sql(aggregate.minute_sql("facts")).to_arrow_table()
    minute_bytes = len(parquet.encode(minutes))
    con.register("minutes", minutes)
    series_cols = ", ".join(SERIES)
    con.execute(
        f"CREATE TABLE series AS SELECT row_number() OVER (ORDER BY {series_cols}) - 1 AS sid, "
        f"* FROM (SELECT DISTINCT {series_cols} FROM facts)"
    )
    joined = con.sql(
        "SELECT m.bucket_ms, s.sid, m.latency_sketch FROM minutes m JOIN series s "
        f"USING ({series_cols}) ORDER BY m.bucket_ms"
    ).to_arrow_table()
    buckets = joined["bucket_ms"].to_pylist()
    sids = joined["sid"].to_pylist()
    sketches = [dict(s) for s in joined["latency_sketch"].to_pylist()]
    n_series = len(set(sids))

    rng = random.Random(args.seed)
    windows: list[tuple[int, str, int, int, int | None]] = []  # (id, label, start, end, sid)
    for label, size in WINDOWS:
        if size > span:
            continue
        count = 1 if size == span else args.windows
        for _ in range(count):
            start = T0 + rng.randrange((span - size) // 60_000 + 1) * 60_000
            scopes: list[int | None] = [None, *rng.sample(range(n_series), args.window_series)]
            for sid in scopes:
                windows.append((len(windows), label, start, start + size, sid))
    # Exact nearest-rank percentiles: DuckDB's quantile_disc is the rank
    # ceil(q * n) value, as sketch.exact_quantile (checked below on a sample).
    con.execute("CREATE TABLE windows (wid INTEGER, lo BIGINT, hi BIGINT, sid BIGINT)")
    con.executemany(
        "INSERT INTO windows VALUES (?, ?, ?, ?)", [(w[0], w[2], w[3], w[4]) for w in windows]
    )
    qs = ", ".join(repr(q) for q in QUANTILES)
    exact_rows = con.sql(f"""
        SELECT w.wid, count(*) AS n, quantile_disc(f.latency_us, [{qs}]) AS qs
        FROM facts f JOIN series s USING ({series_cols})
        JOIN windows w ON f.timestamp_ms >= w.lo AND f.timestamp_ms < w.hi
                      AND (w.sid IS NULL OR w.sid = s.sid)
        GROUP BY w.wid
    """).fetchall()
    exact = {wid: (n, [v / 1000 for v in values]) for wid, n, values in exact_rows}
    spot = [w for w in windows if w[0] in exact and exact[w[0]][0] <= 5000][:5]
    for wid, _, lo, hi, sid in spot:
        where = "" if sid is None else f" AND s.sid = {sid}"
        values = [
            v / 1000
            for (v,) in con.sql(
                f"SELECT latency_us FROM facts f JOIN series s USING ({series_cols}) "
                f"WHERE timestamp_ms >= {lo} AND timestamp_ms < {hi}{where}"
            ).fetchall()
        ]
        for q, got in zip(QUANTILES, exact[wid][1], strict=True):
            if sketch.exact_quantile(values, q) != got:
                raise BenchError(f"quantile_disc is not nearest rank in window {wid}, q={q}")
    con.close()

    errors: dict[str, dict[float, list[float]]] = {
        label: {q: [] for q in QUANTILES} for label, _ in WINDOWS
    }
    facts_per_window: dict[str, list[int]] = {label: [] for label, _ in WINDOWS}
    for wid, label, lo, hi, sid in windows:
        if wid not in exact:
            continue  # no fact of that series in that window
        first, last = bisect.bisect_left(buckets, lo), bisect.bisect_left(buckets, hi)
        merged = sketch.merge(
            sketches[i] for i in range(first, last) if sid is None or sids[i] == sid
        )
        n, truths = exact[wid]
        if sum(merged.values()) != n:
            raise BenchError(f"window {wid}: sketches hold {sum(merged.values())} facts, not {n}")
        facts_per_window[label].append(n)
        for q, truth in zip(QUANTILES, truths, strict=True):
            est = sketch.quantile(merged, q) or 0.0
            errors[label][q].append(abs(est - truth) / truth if truth else abs(est))
    table = []
    for label, _ in WINDOWS:
        if not facts_per_window[label]:
            continue
        row: dict[str, Any] = {
            "window": label,
            "windows": len(facts_per_window[label]),
            "median_facts": statistics.median(facts_per_window[label]),
        }
        for q in QUANTILES:
            row[f"p{q * 100:g}_max"] = max(errors[label][q])
            row[f"p{q * 100:g}_mean"] = statistics.fmean(errors[label][q])
        table.append(row)
    worst = max(max(v) for per_q in errors.values() for v in per_q.values() if v)
    return {
        "dataset": meta,
        "minute_rows": minutes.num_rows,
        "minute_bytes": minute_bytes,
        "series": n_series,
        "table": table,
        "max_relative_error": worst,
        "within_bound": worst <= GOALS["relative_error"],
        "spot_checked_windows": len(spot),
    }


# --- report ------------------------------------------------------------------------
def summarise(
    runs: list[dict[str, Any]], lines: int, archive: dict[str, Any] | None
) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    failed = {r["contender"]: r["failed"] for r in runs if "failed" in r}
    for name in dict.fromkeys(r["contender"] for r in runs):
        mine = [r for r in runs if r["contender"] == name and "failed" not in r]
        if not mine:
            continue
        seconds = statistics.median(r["seconds"] for r in mine)
        per[name] = {
            "seconds": round(seconds, 2),
            "facts_per_s": round(lines / seconds),
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in mine),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in mine),
            "rss_before_job_mib": max(r["rss_before_job_mib"] for r in mine),
            "output_bytes": mine[-1]["output_bytes"],
            "rounds": [round(r["seconds"], 2) for r in mine],
        }
    s: dict[str, Any] = {"contenders": per, "failed": failed}
    g = per.get("gravix")
    if g:
        gravix_rounds = {r["round"]: r["seconds"] for r in runs if r["contender"] == "gravix"}
        for peer in ("gravix-unordered", "gravix-hashdedup", "duckdb-capped", *PEERS):
            if peer in per:
                s[f"gravix_over_{peer}"] = round(per[peer]["seconds"] / g["seconds"], 3)
                s[f"gravix_over_{peer}_per_round"] = [
                    round(r["seconds"] / gravix_rounds[r["round"]], 3)
                    for r in runs
                    if r["contender"] == peer and "failed" not in r
                ]
        rss_goal = GOALS["rss_mib_per_20m_facts"] * max(1.0, lines / 20e6)
        s["rss_goal_mib"] = rss_goal
        s["rss_goal_met"] = g["peak_rss_mib"] <= rss_goal
        if "duckdb" in per:  # a peer that failed is not a goal met
            s["duckdb_goal_met"] = s["gravix_over_duckdb"] >= GOALS["duckdb_ratio"]
        if "polars" in per:
            s["polars_goal_met"] = s["gravix_over_polars"] >= GOALS["polars_ratio"]
    if archive:
        rows = archive["rows"]
        s["archive"] = {
            "facts": rows,
            "bytes_v7": archive["output_bytes"],
            "bytes_v4": archive["v4_bytes"],
            "bytes_per_fact_v7": round(archive["output_bytes"] / rows, 2),
            "bytes_per_fact_v4": round(archive["v4_bytes"] / rows, 2),
            "seconds": round(archive["seconds"], 1),
            "peak_rss_mib": archive["peak_rss_mib"],
        }
        s["archive"]["goal_met_v7"] = (
            s["archive"]["bytes_per_fact_v7"] <= GOALS["archive_bytes_per_fact"]
        )
    return s


def _met(ok: bool) -> str:
    return "**yes**" if ok else "**no**"


def markdown(summary: dict[str, Any], check: dict[str, Any], errors: dict[str, Any] | None) -> str:
    per = summary["contenders"]
    g = per.get("gravix")
    lines = [
        "| contender | seconds | CPU s | facts/s | Gravix / it | per round | goal | met "
        "| peak RSS | RSS before job | output |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for name, c in per.items():
        ratio, spread, goal, met = "", "", "", ""
        if g and name != "gravix":
            ratio = f"{summary[f'gravix_over_{name}']:.2f}x"
            rounds = summary[f"gravix_over_{name}_per_round"]
            spread = f"{min(rounds):.2f}-{max(rounds):.2f}" if len(rounds) > 1 else ""
            if name == "duckdb":
                goal, met = ">= 1.0x", _met(summary["duckdb_goal_met"])
            if name == "polars":
                goal, met = ">= 2.0x", _met(summary["polars_goal_met"])
        if name == "gravix":
            goal = f"RSS <= {summary['rss_goal_mib']:,.0f} MiB"
            met = _met(summary["rss_goal_met"])
        lines.append(
            f"| {LABELS[name]} | {c['seconds']:.1f} | {c['cpu_seconds']:.0f} "
            f"| {c['facts_per_s']:,} | {ratio} | {spread} "
            f"| {goal} "
            f"| {met} | {c['peak_rss_mib']:,.0f} MiB | {c['rss_before_job_mib']:,.0f} MiB "
            f"| {c['output_bytes'] / 1e6:,.2f} MB |"
        )
    for name, error in summary["failed"].items():
        lines.append(f"| {LABELS[name]} | failed: {error} | | | | | | | | | |")
    notes = [
        "",
        f"Cross-check: all outputs hold the same requests in each of {check['rows']:,} "
        f"(minute, series) rows, {check['facts']:,} facts in all.",
    ]
    if "percentile_rows_differing" in check:
        notes.append(
            "Exact percentiles differing from DuckDB's, rows: "
            + ", ".join(f"{k} {v}" for k, v in check["percentile_rows_differing"].items())
            + "."
        )
    if "gravix_minute_max_relative_error" in check:
        notes.append(
            "Gravix's sketch p50/p95/p99 per minute row against the exact value: max relative "
            f"error {check['gravix_minute_max_relative_error']:.5%}."
        )
    out = lines + notes
    if "archive" in summary:
        a = summary["archive"]
        out += [
            "",
            "| stored | rows | bytes | bytes per row | goal | met |",
            "|---|---:|---:|---:|---|---|",
            f"| raw archive, UUIDv7 event ids (`parquet.encode`) | {a['facts']:,} "
            f"| {a['bytes_v7']:,} | {a['bytes_per_fact_v7']:.2f} "
            f"| <= {GOALS['archive_bytes_per_fact']} | {_met(a['goal_met_v7'])} |",
            f"| raw archive, UUIDv4 event ids | {a['facts']:,} | {a['bytes_v4']:,} "
            f"| {a['bytes_per_fact_v4']:.2f} | | |",
        ]
        if g:
            out.append(
                f"| minute tier, this hour | {check['rows']:,} | {g['output_bytes']:,} "
                f"| {g['output_bytes'] / check['rows']:,.0f} | | |"
            )
        if errors:
            out.append(
                f"| minute tier, {errors['dataset']['span_ms'] // DAY_MS} days of "
                f"{errors['dataset']['lines']:,} facts | {errors['minute_rows']:,} "
                f"| {errors['minute_bytes']:,} "
                f"| {errors['minute_bytes'] / errors['minute_rows']:,.1f} | | |"
            )
        out.append(
            f"\nArchive step (dedup_sql to Arrow, `parquet.encode`): {a['seconds']:.1f} s, "
            f"peak RSS {a['peak_rss_mib']:,.0f} MiB."
        )
    if errors:
        out += [
            "",
            "| window | windows with facts | median facts | p50 max | p50 mean | p95 max "
            "| p95 mean | p99 max | p99 mean |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in errors["table"]:
            out.append(
                f"| {r['window']} | {r['windows']} | {r['median_facts']:,.0f} "
                + " ".join(
                    f"| {r[f'p{q * 100:g}_max']:.5%} | {r[f'p{q * 100:g}_mean']:.3%}"
                    for q in QUANTILES
                )
                + " |"
            )
        out.append(
            f"\nMax relative error over all windows {errors['max_relative_error']:.5%} "
            f"(bound {GOALS['relative_error']:.0%}): {_met(errors['within_bound'])}."
        )
    return "\n".join(out)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench rollup",
        description="Gravix rollup benchmark beside DuckDB, chdb and Polars.",
    )
    parser.add_argument(
        "--facts", type=int, default=20_000_000, help="NDJSON lines over one hour (default 20M)"
    )
    parser.add_argument("--threads", type=int, default=2, help="threads per contender")
    parser.add_argument(
        "--memory-limit", default="600MB", help="Gravix's DuckDB memory_limit (default 600MB)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each contender")
    parser.add_argument(
        "--contenders",
        type=lambda s: s.split(","),
        default=list(LABELS),
        help=f"comma-separated (default: all of {', '.join(LABELS)})",
    )
    parser.add_argument("--no-archive", action="store_true", help="skip the raw archive step")
    parser.add_argument(
        "--error-facts", type=int, default=4_000_000, help="facts of the error dataset"
    )
    parser.add_argument("--error-days", type=int, default=30, help="its span (default 30)")
    parser.add_argument(
        "--windows", type=int, default=20, help="random windows per window size (default 20)"
    )
    parser.add_argument(
        "--window-series", type=int, default=3, help="random series per window besides all"
    )
    parser.add_argument("--no-errors", action="store_true", help="skip the error table")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help=f"input cache (default {DATA_DIR})"
    )
    parser.add_argument("--tmp-dir", type=Path, default=None, help="outputs and spill files")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    unknown = set(args.contenders) - set(LABELS)
    if unknown or not args.contenders:
        parser.error(f"unknown contenders {sorted(unknown)}; choose from {sorted(LABELS)}")
    if args.facts < 1000 or args.rounds < 1 or args.threads < 1:
        parser.error("--facts must be at least 1000, --rounds and --threads at least 1")
    return args


def _check_extra() -> None:
    for module in ("chdb", "polars"):
        try:
            __import__(module)
        except ImportError as e:
            raise BenchError(
                f"the rollup benchmark's peers need the bench extra: "
                f"pip install -e '.[bench]' ({e})"
            ) from e


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = datetime.now(UTC)
    try:
        _check_extra()
        with tempfile.TemporaryDirectory(prefix="gravix-bench-", dir=args.tmp_dir) as tmp:
            work = Path(tmp)
            machine = describe_machine(work)
            for name in ("wrk", "hey"):
                machine.pop(name, None)
            machine["packages"] = {
                p: metadata.version(p) for p in ("duckdb", "chdb", "polars", "pyarrow")
            }
            machine["fsync_probe"] = probe_fsync(work, min(os.sched_getaffinity(0)))
            log(f"machine: {machine['cpu_model']}, {machine['nproc']} CPUs, work dir {tmp}")
            meta = dataset(args.data_dir, args.facts, HOUR_MS, args.seed)
            source = Path(meta["path"])
            log(
                f"input: {meta['lines']:,} lines ({meta['unique_facts']:,} facts, "
                f"{meta['duplicate_lines']:,} duplicates), {meta['bytes'] / 1e9:.2f} GB "
                f"({_made(meta)}); "
                f"read into the page cache in {warm(source):.1f} s"
            )
            runs, outputs = rollup_runs(args, source, meta["lines"], work)
            check = cross_check(outputs, meta["unique_facts"])
            log(f"cross-check: {check}")
            archive = None
            if not args.no_archive:
                archive = run_contender(
                    "gravix-archive", source, work / "archive-v7.parquet", args, work
                )
                archive["v4_bytes"] = (work / "archive-v4.parquet").stat().st_size
                log(
                    f"archive: {archive['seconds']:.1f} s, peak RSS "
                    f"{archive['peak_rss_mib']:,.0f} MiB, {archive['output_bytes']:,} bytes"
                )
            errors = None if args.no_errors else percentile_errors(args, work)
    except BenchError as e:
        print(f"bench: error: {e}", flush=True)
        return 1
    summary = summarise(runs, meta["lines"], archive)
    table = markdown(summary, check, errors)
    seconds = (datetime.now(UTC) - started).total_seconds()
    out, head = results_head("rollup", args, started, seconds, argv)
    result = {
        **head,
        "machine": machine,
        "goals": GOALS,
        "input": meta,
        "summary": summary,
        "cross_check": check,
        "archive": archive,
        "percentile_errors": errors,
        "runs": runs,
        "table": table,
    }
    publish_results(out, result, table, machine, "work dir", seconds)
    return 0
