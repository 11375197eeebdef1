"""The query benchmark's contenders, each answering the dashboard's panels in its own process.

``python -m bench.query_peers NAME META_JSON NOW_MS THREADS`` sets contender
NAME up on the data set described by META_JSON (:mod:`bench.query_data`),
prints one JSON line when ready, then answers JSON commands on stdin, one
line each: ``{"op": "run", "panel": P}`` -> ``{"ms": ..., "rows": [...]}``
(the time taken inside the process, set-up excluded); ``{"op": "profile",
"panel": P}`` -> Gravix's steps (:func:`gravix_profile`); ``{"op": "quit"}``
-> its peak RSS.

Contenders:

* ``gravix``: ``QueryService.run`` as ``POST /api/v1/query`` calls it
  (``decode_query``, plan, pending facts, ``DuckDBEngine`` reading the tier
  files of the level and tiers the plan picks, Arrow to Python rows, rollup
  state), over the LocalObjectStore of the data set, no spool.
* ``duckdb``: one connection, one plain statement per panel over
  ``read_parquet(<flat file>)`` (:func:`peer_sql`).
* ``chdb``: one session, the same statement in ClickHouse SQL over
  ``file(<flat file>, Parquet, <columns>)``, ``sumMap`` for the sketches.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.servers import BenchError

NOW_BEFORE_END_MS = 20 * 60_000 + 17_500  # "now" is 20m17.5s before the data's end
CONTENDERS = ("gravix", "duckdb", "chdb")
LABELS = {
    "gravix": "**Gravix** (`QueryService.run`)",
    "duckdb": "DuckDB, flat file",
    "chdb": "chdb, flat file",
}


# --- the panels -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Panel:
    name: str
    title: str
    goal: str  # "panel" or "overview"
    query: dict[str, Any]  # the JSON a dashboard posts


def panels(meta: dict[str, Any]) -> list[Panel]:
    """The dashboard's panels over this data set: one service, one endpoint of it."""
    from bench.query_data import catalog

    series = catalog(meta["series"], meta["seed"])
    service = series[0][2]
    # An endpoint of that service other than the first, and one without "{": Gravix's
    # compile_sql passes filter values through str.format, so "/orders/{id}" fails.
    plain = [s for s in series if s[2] == service and "{" not in s[4]]
    _, _, _, method, path, *_ = plain[-1]
    endpoint = [
        {"dimension": "service", "op": "eq", "values": [service]},
        {"dimension": "method", "op": "eq", "values": [method]},
        {"dimension": "path", "op": "eq", "values": [path]},
    ]
    return [
        Panel(
            "error-rate-7d",
            f"error rate of `{service}`, 7 days (auto grain)",
            "panel",
            {
                "metrics": ["requests", "errors", "error_rate"],
                "filters": [{"dimension": "service", "op": "eq", "values": [service]}],
                "from": "now-7d",
            },
        ),
        Panel(
            "top-endpoints-24h",
            "top 10 endpoints by errors, 24 h",
            "panel",
            {
                "metrics": ["errors", "requests", "error_rate"],
                "dimensions": ["service", "method", "path"],
                "from": "now-24h",
                "grain": "all",
                "order": [{"by": "errors", "desc": True}],
                "limit": 10,
            },
        ),
        Panel(
            "endpoint-p95-24h",
            f"p95 of `{method} {path}`, 24 h (auto grain)",
            "panel",
            {"metrics": ["p95"], "filters": endpoint, "from": "now-24h"},
        ),
        Panel(
            "overview-30d",
            "30-day overview: requests, errors, error rate, p50/p95/p99 per service",
            "overview",
            {
                "metrics": ["requests", "errors", "error_rate", "p50", "p95", "p99"],
                "dimensions": ["service"],
                "from": "now-30d",
                "grain": "all",
            },
        ),
    ]


def _plan(panel: Panel, now_ms: int) -> Any:
    import msgspec

    from gravix.query.spec import Query, plan

    return plan(msgspec.convert(panel.query, Query), now_ms)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def peer_sql(panel: Panel, now_ms: int, source: str, dialect: str) -> str:
    """The panel as one plain statement over the flat file (``dialect``: duckdb or clickhouse).

    The range and grain are the ones Gravix's plan resolved, so all answer the
    same question. Percentiles merge the minute sketches and take the
    nearest rank, as :mod:`gravix.schema.sketch` defines it: DuckDB unnests
    the maps and runs a window sum; ClickHouse adds the maps with ``sumMap``.
    """
    from gravix.schema import sketch

    p = _plan(panel, now_ms)
    ch = dialect == "clickhouse"
    where = [f"bucket_ms >= {p.from_ms}", f"bucket_ms < {p.to_ms}"]
    where += [f"{f.dimension} = {_quote(str(f.values[0]))}" for f in p.filters]
    keys = list(p.dimensions)
    select_keys = list(p.dimensions)
    if p.grain_ms:
        div = f"intDiv(bucket_ms, {p.grain_ms})" if ch else f"bucket_ms // {p.grain_ms}"
        keys.insert(0, "t")
        select_keys.insert(0, f"{div} * {p.grain_ms} AS t")
    key_list = ", ".join(keys)
    g, zero = repr(sketch.GAMMA), sketch.ZERO_KEY
    quantiles = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
    wanted = [m for m in p.metrics if m in quantiles]

    def value(k: str) -> str:
        if ch:
            return f"if({k} = {zero}, 0.0, 2.0 * pow({g}, {k}) / ({g} + 1.0))"
        return f"CASE WHEN {k} = {zero} THEN 0.0 ELSE 2.0 * pow({g}, {k}) / ({g} + 1.0) END"

    def rank(q: float, total: str) -> str:
        return f"greatest(1, ceil(round({q!r} * {total}, 6)))"

    out = {
        "requests": "n_req",
        "errors": "n_err",
        "error_rate": "n_err / n_req" if ch else "CAST(n_err AS DOUBLE) / n_req",
    }
    if ch:
        cumsum = "arrayCumSum(mapValues(merged))"
        for m in wanted:
            at_rank = rank(quantiles[m], "arraySum(mapValues(merged))")
            first = f"arrayFirstIndex(x -> x >= {at_rank}, {cumsum})"
            out[m] = value(f"mapKeys(merged)[{first}]")
    else:
        out.update({m: value(f"k_{m}") for m in wanted})
    names = [*(["t AS time"] if p.grain_ms else []), *p.dimensions]
    final = ", ".join([*names, *(f"{out[m]} AS {m}" for m in p.metrics)])
    order = ", ".join(f"{o.by} {'DESC' if o.desc else 'ASC'}" for o in p.order) or key_list
    limit = f" LIMIT {p.limit}" if p.limit else ""
    totals = f"{', '.join(select_keys)}, sum(requests) AS n_req, sum(errors) AS n_err"
    if ch:
        merged = ", sumMap(latency_sketch) AS merged" if wanted else ""
        return (
            f"SELECT {final} FROM (SELECT {totals}{merged} FROM {source} "
            f"WHERE {' AND '.join(where)} GROUP BY {key_list}) ORDER BY {order}{limit}"
        )
    ctes = [
        f"sel AS (SELECT {', '.join([*select_keys, 'requests', 'errors', 'latency_sketch'])} "
        f"FROM {source} WHERE {' AND '.join(where)})",
        f"totals AS (SELECT {key_list}, sum(requests) AS n_req, sum(errors) AS n_err "
        f"FROM sel GROUP BY {key_list})",
    ]
    joined = "totals"
    if wanted:
        picks = ", ".join(
            f"min(k) FILTER (WHERE seen >= {rank(quantiles[m], 'total')}) AS k_{m}" for m in wanted
        )
        ctes.append(
            f"""exploded AS (SELECT {key_list}, unnest(map_keys(latency_sketch)) AS k,
                                    unnest(map_values(latency_sketch)) AS n FROM sel),
            merged AS (SELECT {key_list}, k, sum(n) AS n FROM exploded GROUP BY {key_list}, k),
            ranked AS (SELECT {key_list}, k,
                              sum(n) OVER (PARTITION BY {key_list} ORDER BY k) AS seen,
                              sum(n) OVER (PARTITION BY {key_list}) AS total FROM merged),
            picked AS (SELECT {key_list}, {picks} FROM ranked GROUP BY {key_list})"""
        )
        joined += f" JOIN picked USING ({key_list})"
    return f"WITH {', '.join(ctes)} SELECT {final} FROM {joined} ORDER BY {order}{limit}"


# --- one contender in its own process ----------------------------------------------
CH_STRUCTURE = (
    "bucket_ms Int64, service String, method String, path String, env String, "
    "version String, requests Int64, errors Int64, client_errors Int64, "
    "status_counts Map(Int16, Int64), latency_sum_us Int64, latency_max_us Int64, "
    "latency_sketch Map(Int32, Int64)"
)  # the flat file's columns; inferred, ClickHouse makes them Nullable, which sumMap refuses


def _memory_mib() -> dict[str, float]:
    """Peak and current RSS of this process (``VmHWM``, ``VmRSS``), MiB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            found[name] = round(int(rest.split()[0]) / 1024, 1)
    return {"peak_rss_mib": found.get("VmHWM", 0.0), "rss_mib": found.get("VmRSS", 0.0)}


def _table_rows(table: Any) -> list[list[Any]]:
    return [list(row) for row in zip(*(c.to_pylist() for c in table.columns), strict=True)]


def _runner(name: str, meta: dict[str, Any], now_ms: int, threads: int) -> Callable[[str], Any]:
    """A function answering a panel by name as contender ``name``; set up untimed."""
    by_name = {p.name: p for p in panels(meta)}
    flat = meta["flat"]
    if name == "gravix":
        import msgspec

        from gravix.query.engine import DuckDBEngine
        from gravix.query.service import QueryService
        from gravix.query.spec import decode_query
        from gravix.storage.local import LocalObjectStore

        store = LocalObjectStore(Path(meta["store"]))
        service = QueryService(store, None, DuckDBEngine(store, threads))
        bodies = {n: msgspec.json.encode(p.query) for n, p in by_name.items()}

        def run_gravix(panel: str) -> Any:
            # What POST /api/v1/query does between authentication and rendering.
            return service.run(meta["tenant"], decode_query(bodies[panel]), now_ms)["rows"]

        run_gravix.service = service  # type: ignore[attr-defined]
        return run_gravix
    if name == "duckdb":
        import duckdb

        con = duckdb.connect(":memory:")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        sqls = {
            n: peer_sql(p, now_ms, f"read_parquet('{flat}')", "duckdb") for n, p in by_name.items()
        }

        def run_duckdb(panel: str) -> Any:
            return [list(row) for row in con.execute(sqls[panel]).fetchall()]

        return run_duckdb
    if name == "chdb":
        from chdb import session

        sess = session.Session()
        settings = f" SETTINGS max_threads = {int(threads)}" if threads else ""
        source = f"file('{flat}', Parquet, '{CH_STRUCTURE}')"
        sqls = {n: peer_sql(p, now_ms, source, "clickhouse") + settings for n, p in by_name.items()}
        sess.query("SELECT 1", "CSV")

        def run_chdb(panel: str) -> Any:
            return _table_rows(sess.query(sqls[panel], "ArrowTable"))

        return run_chdb
    raise BenchError(f"no contender named {name!r}")


def gravix_profile(service: Any, tenant: str, body: bytes, now_ms: int) -> dict[str, Any]:
    """``QueryService.run`` taken apart: each step of ``DuckDBEngine.run`` timed alone.

    A step-by-step copy of the engine's code path (plan, pending facts, the
    files of each segment opened, the SQL, Arrow to Python rows, the rollup
    state), on the engine's own store, and what it read.
    """
    from gravix.query.compile import compile_sql, level, segments
    from gravix.query.engine import _EMPTY
    from gravix.query.spec import decode_query, plan

    engine = service.engine
    clock = time.perf_counter
    steps: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = clock()
        steps[name] = steps.get(name, 0.0) + (now - since) * 1000
        return now

    t = clock()
    p = plan(decode_query(body), now_ms)
    t = lap("plan", t)
    service.pending.minute_rows(tenant)  # none here (no spool); timed all the same
    t = lap("pending facts", t)
    cursor = engine._db.cursor()
    with contextlib.ExitStack() as pins:
        parts = engine.sources(tenant, p, pins)
        files = sum(part.count("/proc/self/fd/") for part in parts)
        t = lap("open files", t)
        cursor.register("no_rows", _EMPTY)
        source = "(" + " UNION ALL BY NAME ".join([*parts, "SELECT * FROM no_rows"]) + ")"
        table = cursor.sql(compile_sql(p, source)).to_arrow_table()
        t = lap("SQL", t)
    cursor.close()
    answer = _table_rows(table)
    t = lap("rows to Python", t)
    service.rollup_state(tenant)
    lap("rollup state", t)
    return {
        "steps_ms": {k: round(v, 2) for k, v in steps.items()},
        "total_ms": round(sum(steps.values()), 2),
        "level": level(p),
        "tiers": sorted({s[0] for s in segments(p)}),
        "segments": [list(s) for s in segments(p)],
        "objects": files,
        "answer_rows": len(answer),
    }


def worker(argv: list[str]) -> int:
    """``python -m bench.query NAME META_JSON NOW_MS THREADS``: JSON commands on stdin."""
    name, meta_path, now_ms, threads = argv[0], Path(argv[1]), int(argv[2]), int(argv[3])
    meta = json.loads(meta_path.read_text())
    started = time.perf_counter()
    run = _runner(name, meta, now_ms, threads)
    print(json.dumps({"ready": True, "setup_ms": (time.perf_counter() - started) * 1000}))
    sys.stdout.flush()
    by_name = {p.name: p for p in panels(meta)}
    for line in sys.stdin:
        command = json.loads(line)
        reply: dict[str, Any]
        try:
            if command["op"] == "run":
                started = time.perf_counter()
                rows = run(command["panel"])
                reply = {"ms": (time.perf_counter() - started) * 1000, "rows": rows}
            elif command["op"] == "profile":
                import msgspec

                body = msgspec.json.encode(by_name[command["panel"]].query)
                service = run.service  # type: ignore[attr-defined]
                reply = gravix_profile(service, meta["tenant"], body, now_ms)
            else:
                reply = _memory_mib()
        except Exception as e:  # reported to the parent, which stops the benchmark
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply))
        sys.stdout.flush()
        if command["op"] == "quit":
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(worker(sys.argv[1:]))
