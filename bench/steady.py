"""The steady-state benchmark: ``gravix serve`` taking a constant load for an hour.

From issue #17: at 5,000 facts/s for an hour, every rollup pass ends within
its interval, RSS stays under 1 GiB, and metrics trail the facts by at most
10 s. One run, no peer: the goals are absolute.

* **Server**: ``gravix serve --workers 1`` with ``role=all`` (intake, uploader,
  rollup, retention, query API) on a fresh data dir, every setting at the
  product's default (``rollup_interval_seconds``, ``segment_max_age_seconds``,
  ``rollup_memory_limit``...) except what moves intake limits out of the way
  (:data:`bench.servers.GRAVIX_ENV`), and ``rollup_settle_seconds``
  (``--settle-seconds``, 600 instead of 7,200) so that an hour-long run also
  compacts an hour inside the server. Not pinned: the rollup uses every core.
* **Load** (:mod:`bench.steady_load`): ``--rate`` facts/s in paced batches of
  100 (``POST /api/v1/facts``, the bench key), timestamps = now, 1 fact in 100
  a client retry of an acknowledged fact. Every answer counted; a 429/503 or a
  timeout is a finding in the table, not a crash.
* **Samples**, every ``--sample-seconds`` (5): RSS (and PSS) summed over the
  server's process tree (the main process, its worker and any child, from
  ``/proc``), its CPU seconds; from ``/metrics``: ``rollup_duration_seconds``
  (count and sum: a pass's duration is the sum's step when the count steps by
  one), ``rollup_runs_total`` by result, ``rollup_last_success_timestamp_seconds``,
  ``rollup_newest_fact_timestamp_seconds``, ``rollup_pending_objects``,
  ``spool_bytes``, ``upload_backlog_segments``; the spool's size on disk; and
  one ``POST /api/v1/query`` (requests, grain ``all``) over the last
  ``--window-minutes`` whole minutes and the current one.
* **Rollup lag**: sample time minus the newest folded fact's event time, over
  the samples after warm-up (from the first sample that sees a folded fact).
* **Query lag** (what a user sees): the query's answer against the distinct
  facts acknowledged before it was sent with timestamps in its range, taken
  in time order: if the answer is short by ``k`` facts, the lag is the time
  from the oldest of the ``k`` newest facts to the query (0 when it counts
  them all). An answer above the facts of its range acknowledged by one
  second after it arrived is a double count, reported as such.
* **Cross-checks**: right after the load stops, the query over the whole run
  equals the distinct facts acknowledged (pending facts included); then,
  once the last segment is sealed, uploaded and folded (waited for up to
  ``segment_max_age_seconds`` + 2 intervals + 2 min), the ``requests`` of
  the store's ``metrics_1m`` Parquet files add up to the same number.

Run ``.venv/bin/python -m bench steady [--seconds 3600] [--rate 5000]``;
``--help`` lists the knobs; raw results go to ``bench/results/steady-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import shutil
import statistics
import tempfile
import time
from bisect import bisect_left
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx

from bench.machine import describe_machine, probe_fsync, publish_results, results_head
from bench.servers import (
    REPO,
    BenchError,
    ServerProcess,
    gravix_server,
    make_key,
    prometheus_values,
)
from bench.steady_load import BATCH, Ack, LoadGenerator
from gravix.api.auth import token_store
from gravix.config import Settings
from gravix.schema.archive import COMPACTED

RESULTS_DIR = REPO / "bench" / "results"
GOALS = {"pass_within_interval": True, "rss_mib": 1024.0, "lag_s": 10.0}
TENANT = "bench"
MINUTE_MS = 60_000
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
METRICS = (
    "rollup_duration_seconds_count",
    "rollup_duration_seconds_sum",
    "rollup_last_success_timestamp_seconds",
    "rollup_newest_fact_timestamp_seconds",
    "rollup_pending_objects",
    "rollup_facts_in_total",
    "spool_bytes",
    "upload_backlog_segments",
    "ingestion_facts_total",
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the server's process tree, from /proc ---------------------------------------------
def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_usage(root: int) -> dict[str, float]:
    """RSS and PSS (MiB) summed over the tree, and its CPU seconds (reaped children too)."""
    rss = pss = cpu = 0.0
    pids = process_tree(root)
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue  # exited between the listing and the read
        cpu += sum(int(x) for x in fields[11:15]) / _CLOCK_TICKS  # utime stime cutime cstime
    return {
        "processes": len(pids),
        "rss_mib": round(rss / 2**20, 1),
        "pss_mib": round(pss / 2**20, 1),
        "cpu_s": round(cpu, 2),
    }


def metric_values(text: str) -> dict[str, float]:
    """:data:`METRICS` summed over label sets; ``rollup_runs_total`` per result."""
    out = prometheus_values(text, *METRICS)
    for line in text.splitlines():
        if line.startswith("rollup_runs_total{"):
            metric, _, value = line.rpartition(" ")
            result = metric.partition('result="')[2].partition('"')[0]
            out[f"rollup_runs_{result}"] = out.get(f"rollup_runs_{result}", 0.0) + float(value)
    return out


def dir_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):  # a segment sealed or deleted while walking
            total += p.stat().st_size if p.is_file() else 0
    return total


def minute_tier_requests(store: Path) -> int:
    """The sum of ``requests`` over the store's ``metrics_1m`` Parquet files."""
    if not any((store / "metrics_1m").rglob("*.parquet")):
        return 0
    con = duckdb.connect(":memory:")
    try:
        row = con.execute(
            f"SELECT sum(requests) FROM read_parquet('{store}/metrics_1m/*/*/*/*.parquet')"
        ).fetchone()
    finally:
        con.close()
    return int(row[0] or 0) if row else 0


# --- one run -----------------------------------------------------------------------------
class SteadyRun:
    """The server, the load, the samples and the query answers of one run."""

    def __init__(
        self, args: argparse.Namespace, server: ServerProcess, key: str, token: str, data_dir: Path
    ) -> None:
        self.args, self.server, self.key, self.data_dir = args, server, key, data_dir
        self.client = httpx.Client(
            base_url=server.url, timeout=30.0, headers={"Authorization": f"Bearer {token}"}
        )
        self.samples: list[dict[str, Any]] = []
        self.queries: list[dict[str, Any]] = []
        self.started_wall_ms = int(time.time() * 1000)

    def passes_done(self) -> float | None:
        try:
            return metric_values(self.server.get("/metrics"))["rollup_duration_seconds_count"]
        except OSError:
            return None

    def query(self, from_ms: int, to_ms: int) -> dict[str, Any]:
        """The requests the API counts in [from_ms, to_ms), and whether a pass ended meanwhile."""
        body = {"metrics": ["requests"], "from": from_ms, "to": to_ms, "grain": "all"}
        before = self.passes_done()
        sent_ms, t0 = int(time.time() * 1000), time.perf_counter()
        record: dict[str, Any] = {"sent_ms": sent_ms, "from_ms": from_ms, "to_ms": to_ms}
        try:
            reply = self.client.post("/api/v1/query", json=body)
        except httpx.HTTPError as e:
            return record | {"error": type(e).__name__}
        record["query_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        record["pass_ended_during"] = before is None or self.passes_done() != before
        if reply.status_code != 200:
            return record | {"error": f"{reply.status_code} {reply.text[:200]}"}
        rows = reply.json()["rows"]
        return record | {"answer": int(rows[0][0]) if rows and rows[0][0] else 0}

    def sample(self, phase: str) -> dict[str, Any]:
        now = time.time()
        s: dict[str, Any] = {"phase": phase, "t": round(now - self.started_wall_ms / 1000, 1)}
        s["wall_ms"] = int(now * 1000)
        s |= tree_usage(self.server.pid)
        try:
            s |= metric_values(self.server.get("/metrics"))
        except OSError as e:
            s["metrics_error"] = type(e).__name__
        s["spool_dir_bytes"] = dir_bytes(self.data_dir / "spool")
        if phase == "load":
            minute = s["wall_ms"] // MINUTE_MS * MINUTE_MS
            q = self.query(minute - self.args.window_minutes * MINUTE_MS, minute + MINUTE_MS)
            self.queries.append(q)
            s["query_answer"] = q.get("answer")
        self.samples.append(s)
        return s

    def run(self) -> dict[str, Any]:
        args = self.args
        load = LoadGenerator(self.server.url, self.key, args.rate, args.seconds, args.senders)
        load.start()
        first_ts = self.started_wall_ms // MINUTE_MS * MINUTE_MS
        next_at, next_log = time.monotonic(), time.monotonic() + 30
        while load.running():
            s = self.sample("load")
            if time.monotonic() >= next_log:
                next_log += 30
                self._log(s, load.distinct_acked())
            next_at += args.sample_seconds
            time.sleep(max(0.0, next_at - time.monotonic()))
        load.join()
        acked = load.distinct_acked()
        last_ts = max((a.timestamp_ms for a in load.snapshot()), default=first_ts)
        whole = (first_ts, last_ts // MINUTE_MS * MINUTE_MS + MINUTE_MS)
        at_stop = self.query(*whole)
        log(f"load done: {acked:,} distinct facts acknowledged; query says {at_stop.get('answer')}")
        drain = self._drain(acked)
        after = self.query(*whole)
        compacted = sorted(
            str(f.relative_to(self.data_dir)) for f in self.data_dir.rglob(COMPACTED)
        )
        log(f"hours compacted inside gravix serve: {len(compacted)}")
        return {
            "load": load.summary(),
            "acks": load.snapshot(),
            "at_stop": at_stop,
            "drain": drain,
            "after_final_pass": after,
            "compacted_hours": compacted,
        }

    def _drain(self, acked: int) -> dict[str, Any]:
        """Samples until the minute tier holds every acknowledged fact (or time runs out)."""
        d = Settings.model_fields
        limit = (
            d["segment_max_age_seconds"].default + 2 * d["rollup_interval_seconds"].default + 120
        )
        started = time.monotonic()
        tier = 0
        while time.monotonic() - started < limit:
            time.sleep(self.args.sample_seconds)
            self.sample("drain")
            try:
                tier = minute_tier_requests(self.data_dir / "store")
            except duckdb.Error:
                continue  # a file replaced while read; the next sample reads it again
            if tier >= acked:
                break
        waited = round(time.monotonic() - started, 1)
        log(f"drain: metrics_1m holds {tier:,} requests after {waited} s ({acked:,} acknowledged)")
        return {"minute_tier_requests": tier, "seconds": waited, "limit_seconds": limit}

    def _log(self, s: dict[str, Any], acked: int) -> None:
        newest = s.get("rollup_newest_fact_timestamp_seconds") or 0
        lag = f"{s['wall_ms'] / 1000 - newest:.0f} s" if newest else "-"
        log(
            f"t={s['t']:.0f} s  acked {acked:,}  query {s.get('query_answer')}  "
            f"RSS {s['rss_mib']:.0f} MiB  CPU {s['cpu_s']:.0f} s  "
            f"passes {s.get('rollup_duration_seconds_count', 0):.0f}  rollup lag {lag}  "
            f"pending objects {s.get('rollup_pending_objects', 0):.0f}"
        )


# --- figures -----------------------------------------------------------------------------
def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def passes(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each pass seen, from the steps of the duration histogram's count and sum.

    A pass counts its facts as it reads them and observes its duration at its
    end, so its facts are those counted since the previous pass ended.
    """
    out, prev, prev_end = [], None, None
    for s in samples:
        if "rollup_duration_seconds_count" not in s:
            continue
        if prev is not None and prev_end is not None:
            n = s["rollup_duration_seconds_count"] - prev["rollup_duration_seconds_count"]
            if n:
                took = s["rollup_duration_seconds_sum"] - prev["rollup_duration_seconds_sum"]
                facts = s["rollup_facts_in_total"] - prev_end["rollup_facts_in_total"]
                prev_end = s
                out.append(
                    {
                        "ended_by_t": s["t"],
                        "passes": int(n),
                        "seconds": round(took / n, 3),  # exact when n == 1
                        "facts_in": int(facts),
                    }
                )
        prev = s
        prev_end = prev_end or s
    return out


def query_lags(queries: list[dict[str, Any]], acks: list[Ack]) -> list[dict[str, Any]]:
    """Each answered query's lag (seconds) and shortfall against the acknowledged facts."""
    ordered = sorted(acks, key=lambda a: a.timestamp_ms)
    stamps = [a.timestamp_ms for a in ordered]
    out = []
    for q in queries:
        if "answer" not in q:
            continue
        lo, hi = bisect_left(stamps, q["from_ms"]), bisect_left(stamps, q["to_ms"])
        window = ordered[lo:hi]
        known = [a for a in window if a.acked_ms < q["sent_ms"]]
        # Acknowledged by a second after the answer arrived: all the answer may count.
        answered = q["sent_ms"] + q["query_ms"] + 1000
        possible = sum(a.new_facts for a in window if a.acked_ms <= answered)
        expected = sum(a.new_facts for a in known)
        short = expected - q["answer"]
        lag = 0.0
        if short > 0:  # the answer misses the newest `short` facts: from when?
            missing = 0
            for a in reversed(known):
                missing += a.new_facts
                if missing >= short:
                    lag = (q["sent_ms"] - a.timestamp_ms) / 1000
                    break
        over = q["answer"] - possible
        out.append(
            {
                "sent_ms": q["sent_ms"],
                "answer": q["answer"],
                "expected": expected,
                "short": max(short, 0),
                "double_counted": max(over, 0),
                "lag_s": round(lag, 2),
                "query_ms": q["query_ms"],
                "pass_ended_during": q["pass_ended_during"],
            }
        )
    return out


def summarise(
    run: dict[str, Any], samples: list[dict[str, Any]], interval: float
) -> dict[str, Any]:
    load, acked = run["load"], run["load"]["distinct_facts_acknowledged"]
    durations = [p["seconds"] for p in run["passes"]]
    loaded = [s for s in samples if s["phase"] == "load"]
    folded = [s for s in loaded if s.get("rollup_newest_fact_timestamp_seconds")]
    rollup_lags = [s["wall_ms"] / 1000 - s["rollup_newest_fact_timestamp_seconds"] for s in folded]
    q_lags = [q["lag_s"] for q in run["query_lags"]]
    cpu_steps = [
        (b["cpu_s"] - a["cpu_s"]) / (b["t"] - a["t"])
        for a, b in itertools.pairwise(samples)
        if b["t"] > a["t"]
    ]
    last = samples[-1]

    def spread(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        return {
            "max": round(max(values), 2),
            "p99": round(nearest_rank(values, 99), 2),
            "median": round(statistics.median(values), 2),
        }

    return {
        "rollup_interval_seconds": interval,
        "passes": len(durations),
        "pass_seconds": spread(durations),
        "passes_over_interval": sum(d > interval for d in durations),
        "pass_failures": int(last.get("rollup_runs_failure", 0)),
        "facts_per_pass": spread([float(p["facts_in"]) for p in run["passes"]]),
        "rss_peak_mib": max(s["rss_mib"] for s in samples),
        "rss_end_of_load_mib": loaded[-1]["rss_mib"] if loaded else None,
        "rss_final_mib": last["rss_mib"],
        "pss_peak_mib": max(s["pss_mib"] for s in samples),
        "processes": max(s["processes"] for s in samples),
        "server_cpu_cores": {
            "mean_under_load": round(
                (loaded[-1]["cpu_s"] - loaded[0]["cpu_s"])
                / max(loaded[-1]["t"] - loaded[0]["t"], 1),
                2,
            )
            if loaded
            else None,
            "max_per_sample": round(max(cpu_steps), 2) if cpu_steps else None,
        },
        "warmup_ends_t": folded[0]["t"] if folded else None,
        "rollup_lag_s": spread(rollup_lags),
        "rollup_lag_samples": len(rollup_lags),
        "query_lag_s": spread(q_lags),
        "query_samples": len(q_lags),
        "query_errors": sum("answer" not in q for q in run["queries"]),
        "query_ms": spread([q["query_ms"] for q in run["query_lags"]]),
        "double_counted_max": max((q["double_counted"] for q in run["query_lags"]), default=0),
        "double_counts": sum(q["double_counted"] > 0 for q in run["query_lags"]),
        "double_counts_while_a_pass_ended": sum(
            q["double_counted"] > 0 and q["pass_ended_during"] for q in run["query_lags"]
        ),
        "spool_dir_peak_mib": round(max(s["spool_dir_bytes"] for s in samples) / 2**20, 1),
        "pending_objects_peak": int(max(s.get("rollup_pending_objects", 0) for s in samples)),
        "rate_held": round(load["facts_per_s_posted"] / load["target_facts_per_s"], 3),
        "distinct_acked": acked,
        "query_at_stop": run["at_stop"].get("answer"),
        "query_at_stop_pass_ended": run["at_stop"].get("pass_ended_during"),
        "minute_tier_after_final_pass": run["drain"]["minute_tier_requests"],
        "query_after_final_pass": run["after_final_pass"].get("answer"),
        "drain_seconds": run["drain"]["seconds"],
    }


def markdown(s: dict[str, Any], load: dict[str, Any], args: argparse.Namespace) -> str:
    def met(ok: bool) -> str:
        return "**yes**" if ok else "**no**"

    def mmp(d: dict[str, float] | None, unit: str = " s", digits: int = 1) -> str:
        if d is None:
            return "none"
        return " / ".join(f"{d[k]:,.{digits}f}" for k in ("max", "p99", "median")) + unit

    def n(value: int | None) -> str:
        return "no answer" if value is None else f"{value:,}"

    interval = s["rollup_interval_seconds"]
    statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(load["statuses"].items()))
    within = s["passes"] > 0 and s["passes_over_interval"] == 0 and not s["pass_failures"]
    rss_ok = s["rss_peak_mib"] < GOALS["rss_mib"]
    r_lag, q_lag = s["rollup_lag_s"], s["query_lag_s"]
    q_ok = q_lag is not None and q_lag["max"] <= GOALS["lag_s"] and not s["query_errors"]
    acked = s["distinct_acked"]
    rows = [
        "| measure | result | goal | met |",
        "|---|---:|---|---|",
        f"| load: facts/s posted (target {args.rate:,.0f}, batches of {BATCH}, 1% retries) "
        f"| {load['facts_per_s_posted']:,.0f} ({load['facts_posted']:,} facts, "
        f"{load['retries_posted']:,} of them retries, in {load['batches_made']:,} batches; "
        f"answers {statuses}) | rate held (>= 97%) "
        f"| {met(s['rate_held'] >= 0.97 and not load['not_acknowledged'])} |",
        f"| rollup passes (interval {interval:g} s): duration max / p99 / median "
        f"| {s['passes']} passes: {mmp(s['pass_seconds'])}; {s['passes_over_interval']} over "
        f"the interval, {s['pass_failures']} failed | every pass < {interval:g} s "
        f"| {met(within)} |",
        f"| RSS of the server's process tree ({s['processes']} "
        f"process{'es' if s['processes'] != 1 else ''}): peak / end of load "
        f"/ final | {s['rss_peak_mib']:,.0f} / {s['rss_end_of_load_mib'] or 0:,.0f} / "
        f"{s['rss_final_mib']:,.0f} MiB (PSS peak {s['pss_peak_mib']:,.0f}) "
        f"| < {GOALS['rss_mib']:,.0f} MiB | {met(rss_ok)} |",
        f"| rollup lag: sample time - newest folded fact, max / p99 / median "
        f"({s['rollup_lag_samples']} samples after warm-up at t={s['warmup_ends_t']} s) "
        f"| {mmp(r_lag) if r_lag else 'none: no pass folded facts during the load'} "
        f"| <= {GOALS['lag_s']:g} s "
        f"| {met(r_lag is not None and r_lag['max'] <= GOALS['lag_s'])} |",
        f"| query lag: `POST /api/v1/query` (last {args.window_minutes}-{args.window_minutes + 1}"
        f" min) against the facts acknowledged, max / p99 / median ({s['query_samples']} "
        f"queries, {s['query_errors']} failed) | {mmp(q_lag)} | <= {GOALS['lag_s']:g} s "
        f"| {met(q_ok)} |",
        f"| query total over the run right after the load stopped = distinct facts acknowledged "
        f"| {n(s['query_at_stop'])} / {acked:,}"
        f"{' (a pass ended during the query)' if s['query_at_stop_pass_ended'] else ''} "
        f"| equal | {met(s['query_at_stop'] == acked)} |",
        f"| `metrics_1m` requests after the final pass ({s['drain_seconds']:.0f} s after the "
        f"load stopped) = distinct facts acknowledged | {s['minute_tier_after_final_pass']:,} / "
        f"{acked:,} (query: {n(s['query_after_final_pass'])}) | equal "
        f"| {met(s['minute_tier_after_final_pass'] == acked == s['query_after_final_pass'])} |",
    ]
    cpu = s["server_cpu_cores"]
    notes = [
        "",
        f"- Server CPU: {cpu['mean_under_load']} cores on average under load, "
        f"{cpu['max_per_sample']} at most over one sample; ack latency p50 "
        f"{load['ack_p50_ms']} ms, p99 {load['ack_p99_ms']} ms, max {load['ack_max_ms']} ms; "
        f"largest schedule slip {load['max_schedule_slip_s']} s; the load generator (this "
        f"process, beside the server) used {load.get('generator_cpu_s')} CPU s.",
        f"- Facts per pass max / p99 / median: {mmp(s['facts_per_pass'], '', 0)}; spool on disk "
        f"at most {s['spool_dir_peak_mib']:,.1f} MiB; pending raw objects at most "
        f"{s['pending_objects_peak']}; query time max / p99 / median: "
        f"{mmp(s['query_ms'], ' ms', 0)}.",
    ]
    if s["double_counted_max"]:
        notes.append(
            f"- **{s['double_counts']} of {s['query_samples']} queries counted more facts than "
            f"were acknowledged in their range, up to {s['double_counted_max']:,}** (a double "
            f"count); a rollup pass ended during {s['double_counts_while_a_pass_ended']} of them."
        )
    return "\n".join(rows + notes)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench steady", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=3600, help="length of the load (default 3600)")
    p.add_argument("--rate", type=float, default=5000, help="facts/s posted (default 5000)")
    p.add_argument("--sample-seconds", type=float, default=5, help="sampling period (default 5)")
    p.add_argument(
        "--window-minutes", type=int, default=5, help="whole minutes the lag query covers"
    )
    p.add_argument("--senders", type=int, default=16, help="sender threads (connections)")
    p.add_argument(
        "--settle-seconds",
        type=int,
        default=600,
        help="the server's rollup_settle_seconds: an hour is compacted this long after "
        "its end, so an hour-long run compacts inside `gravix serve` (default 600)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting (segment_max_age_seconds=5), repeatable; kept in the result",
    )
    p.add_argument("--tmp-dir", type=Path, default=None, help="where the data dir goes")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep", action="store_true", help="keep the data dir and the server's log")
    args = p.parse_args(argv)
    if args.seconds < 30 or args.rate < BATCH or args.sample_seconds <= 0:
        p.error(f"--seconds must be at least 30, --rate at least {BATCH}")
    return args


def server_settings(args: argparse.Namespace) -> dict[str, str]:
    """The ``--set NAME=VALUE`` settings, by name (checked against Settings)."""
    chosen: dict[str, str] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in Settings.model_fields or not value:
            raise BenchError(f"--set {item!r}: not NAME=VALUE with NAME a setting")
        chosen[name] = value
    return chosen


def measure(args: argparse.Namespace, work: Path) -> tuple[SteadyRun, dict[str, Any]]:
    """Start ``gravix serve`` on a fresh data dir in ``work``, run the load, stop it."""
    data_dir = work / "data"
    data_dir.mkdir()
    key = make_key(data_dir, tenant=TENANT)
    _, token = token_store(data_dir / "tokens.db").create(TENANT, "bench")
    env = {"GRAVIX_ROLLUP_SETTLE_SECONDS": str(args.settle_seconds)}
    env |= {f"GRAVIX_{name.upper()}": value for name, value in server_settings(args).items()}
    server = gravix_server(data_dir, cpu=None, log_path=work / "gravix.log", role="all", env=env)
    server.start()
    log(f"gravix serve (role=all) on {server.url}, pid {server.pid}, not pinned")
    bench = SteadyRun(args, server, key, token, data_dir)
    try:
        return bench, bench.run()
    except BenchError:
        raise
    except Exception as e:
        tail = (work / "gravix.log").read_text(errors="replace")[-2000:]
        raise BenchError(f"{type(e).__name__}: {e}; server log tail: {tail}") from e
    finally:
        server.stop()
        bench.client.close()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = datetime.now(UTC)
    try:
        chosen = server_settings(args)
    except BenchError as e:
        print(f"bench: error: {e}", flush=True)
        return 2
    interval = float(
        chosen.get(
            "rollup_interval_seconds", Settings.model_fields["rollup_interval_seconds"].default
        )
    )
    work = Path(tempfile.mkdtemp(prefix="gravix-steady-", dir=args.tmp_dir))
    try:
        machine = describe_machine(work)
        for name in ("wrk", "hey"):
            machine.pop(name, None)
        machine["fsync_probe"] = probe_fsync(work, min(os.sched_getaffinity(0)))
        own = os.times()
        bench, run = measure(args, work)
        run["load"]["generator_cpu_s"] = round(
            os.times().user - own.user + os.times().system - own.system, 1
        )
    except BenchError as e:
        print(f"bench: error: {e}", flush=True)
        return 1
    finally:
        if args.keep:
            log(f"kept the data dir and the server's log in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    run["passes"] = passes(bench.samples)
    run["queries"] = bench.queries
    run["query_lags"] = query_lags(bench.queries, run.pop("acks"))
    summary = summarise(run, bench.samples, interval)
    table = markdown(summary, run["load"], args)
    seconds = (datetime.now(UTC) - started).total_seconds()
    out, head = results_head("steady", args, started, seconds, argv)
    defaults = Settings.model_fields
    result = {
        **head,
        "server_defaults": {
            k: defaults[k].default
            for k in (
                "rollup_interval_seconds",
                "segment_max_age_seconds",
                "segment_max_bytes",
                "upload_interval_seconds",
                "rollup_memory_limit",
                "rollup_threads",
                "rollup_chunk_bytes",
                "workers",
            )
        },
        "server_settings": chosen,  # --set, over the defaults above
        "machine": machine,
        "goals": GOALS,
        "summary": summary,
        "load": run["load"],
        "passes": run["passes"],
        "at_stop": run["at_stop"],
        "drain": run["drain"],
        "after_final_pass": run["after_final_pass"],
        "query_lags": run["query_lags"],
        "samples": bench.samples,
        "table": table,
    }
    publish_results(out, result, table, machine, "data dir", seconds)
    return 0
