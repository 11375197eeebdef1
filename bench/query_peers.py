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
  (``decode_query``, plan, pending facts, ``DuckDBEngine`` with its
  ``TableCache``, Arrow to Python rows, rollup state), over the
  LocalObjectStore of the data set, no spool.
* ``duckdb``: one connection, one plain statement per panel over
  ``read_parquet(<flat file>)`` (:func:`peer_sql`).
* ``chdb``: one session, the same statement in ClickHouse SQL over
  ``file(<flat file>, Parquet, <columns>)``, ``sumMap`` for the sketches.
* ``gravix-files`` and ``gravix-tables``: proposals, not what Gravix runs:
  ``QueryService.run`` with another engine behind the same boundary
  (:class:`FilesEngine`, :class:`TablesEngine`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.servers import BenchError

NOW_BEFORE_END_MS = 20 * 60_000 + 17_500  # "now" is 20m17.5s before the data's end
CONTENDERS = ("gravix", "duckdb", "chdb", "gravix-files", "gravix-tables", "gravix-premerged")
LABELS = {
    "gravix": "**Gravix** (`QueryService.run`)",
    "duckdb": "DuckDB, flat file",
    "chdb": "chdb, flat file",
    "gravix-files": "Gravix + FilesEngine (proposed)",
    "gravix-tables": "Gravix + TablesEngine (proposed)",
    "gravix-premerged": "Gravix + PremergedEngine (proposed)",
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
    nearest rank, as :mod:`gravix.rollup.sketch` defines it: DuckDB unnests
    the maps and runs a window sum; ClickHouse adds the maps with ``sumMap``.
    """
    from gravix.rollup import sketch

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


# --- proposed engines (bench only) -----------------------------------------------
def _timestamp_sql(ms: int) -> str:
    # A TIMESTAMPTZ literal, so the filter on the files' `bucket` column reaches
    # the Parquet reader (row group statistics) instead of a computed column.
    return f"make_timestamptz({int(ms) * 1000})"


def _with_rows(sql: str, rows_sql: str) -> str:
    """``compile_sql``'s statement reading ``metric_rows`` from ``rows_sql``."""
    head, sep, rest = sql.partition("WITH ")
    if not sep or head.strip():
        raise BenchError("compile_sql no longer starts with WITH; update bench.query_peers")
    return f"WITH metric_rows AS ({rows_sql}), {rest}"


class FilesEngine:
    """DuckDB reads the tier objects' files itself (``read_parquet``), every query.

    No decoded copy in Python, no Arrow scan: the Parquet reader projects the
    columns a query needs, skips row groups by ``bucket`` and lets the page
    cache keep the files. One connection, queries one at a time. Works as is
    for a local store only (an S3 store would need httpfs or a disk cache).
    """

    name = "duckdb-files"

    def __init__(self, store: Any, threads: int = 0) -> None:
        import duckdb

        self.store = store
        self.con = duckdb.connect(":memory:")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.lock = threading.Lock()

    def run(self, tenant: str, plan: Any, extra_rows: Any = None) -> Any:
        from gravix.query.compile import compile_sql, segments
        from gravix.query.engine import _EMPTY, object_keys

        parts = []
        for segment in segments(plan):
            _, start, end = segment
            paths = [self.store.root / key for key in object_keys(tenant, segment)]
            files = [str(path) for path in paths if path.exists()]
            if files:
                parts.append(
                    f"SELECT epoch_ms(bucket) AS bucket_ms, * EXCLUDE (bucket) "
                    f"FROM read_parquet({files!r}, hive_partitioning = false) "
                    f"WHERE bucket >= {_timestamp_sql(start)} "
                    f"AND bucket < {_timestamp_sql(end)}"
                )
        with self.lock:
            self.con.register("no_rows", _EMPTY)
            parts.append("SELECT * FROM no_rows")
            if extra_rows is not None and extra_rows.num_rows:
                self.con.register("extra_rows", extra_rows)
                parts.append("SELECT * FROM extra_rows")
            rows_sql = " UNION ALL BY NAME ".join(parts)
            return self.con.sql(_with_rows(compile_sql(plan), rows_sql)).to_arrow_table()


class TablesEngine:
    """The TableCache kept as DuckDB tables in one long-lived connection.

    Each tier object is loaded once, by DuckDB's own Parquet reader
    (``CREATE TABLE ... AS SELECT ... FROM read_parquet(<file>)``; an S3 store
    would fetch the object to a local file first), so the Arrow-to-DuckDB
    conversion of the sketch maps is never paid, and known by the size and
    mtime from ``os.stat`` (not a read and SHA-256 of the whole file). Tables
    beyond ``max_rows`` (5M, as TableCache) are dropped, least recently used
    first. A query reads the cached tables cut to its segments, as one
    ``UNION ALL``, on the same connection (queries one at a time here; a
    cursor per thread would let them run side by side).
    """

    name = "duckdb-tables"

    def __init__(self, store: Any, threads: int = 0, max_rows: int = 5_000_000) -> None:
        import duckdb

        self.store = store
        self.con = duckdb.connect(":memory:")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.lock = threading.Lock()
        self.max_rows = max_rows
        self.tables: OrderedDict[str, tuple[tuple[int, int], str, int]] = OrderedDict()
        self.rows = 0
        self.made = 0

    def _table(self, key: str) -> str | None:
        path = self.store.root / key
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        stamp = (st.st_size, st.st_mtime_ns)
        cached = self.tables.get(key)
        if cached is not None and cached[0] == stamp:
            self.tables.move_to_end(key)
            return cached[1]
        self.made += 1
        name = f"tier_{self.made}"
        self.con.execute(
            f"CREATE TABLE {name} AS SELECT epoch_ms(bucket) AS bucket_ms, * EXCLUDE (bucket) "
            # Not the key's tenant=/date=/hour= folders as columns.
            f"FROM read_parquet('{path}', hive_partitioning = false)"
        )
        rows = self.con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
        if cached is not None:
            self.con.execute(f"DROP TABLE {cached[1]}")
            self.rows -= cached[2]
            del self.tables[key]
        self.tables[key] = (stamp, name, rows)
        self.rows += rows
        while self.rows > self.max_rows and len(self.tables) > 1:
            _, (_, dropped, dropped_rows) = self.tables.popitem(last=False)
            self.con.execute(f"DROP TABLE {dropped}")
            self.rows -= dropped_rows
        return name

    def _source(self, key: str, plan: Any) -> str | None:
        """The table a query reads for the object ``key``."""
        return self._table(key)

    def run(self, tenant: str, plan: Any, extra_rows: Any = None) -> Any:
        from gravix.query.compile import compile_sql, segments
        from gravix.query.engine import _EMPTY, object_keys

        with self.lock:
            parts = []
            for segment in segments(plan):
                _, start, end = segment
                for key in object_keys(tenant, segment):
                    name = self._source(key, plan)
                    if name is not None:
                        parts.append(
                            f"SELECT * FROM {name} WHERE bucket_ms >= {start} AND bucket_ms < {end}"
                        )
            self.con.register("no_rows", _EMPTY)
            parts.append("SELECT * FROM no_rows")
            if extra_rows is not None and extra_rows.num_rows:
                self.con.register("extra_rows", extra_rows)
                parts.append("SELECT * FROM extra_rows")
            rows_sql = " UNION ALL BY NAME ".join(parts)
            return self.con.sql(_with_rows(compile_sql(plan), rows_sql)).to_arrow_table()


class PremergedEngine(TablesEngine):
    """TablesEngine, plus each object's rows merged down to the query's shape, kept.

    For an object and a query shape (the query's series dimensions and series
    filters), the object's rows with the filters applied, grouped by
    ``bucket_ms`` and those dimensions (the others NULL): counts and sums
    added, maxima taken, sketch and status maps merged key by key, as
    ``tier_sql`` merges them. The result has the metric row shape, so
    ``compile_sql`` runs on it unchanged and gives the same answer; it is
    kept until the object changes. A daily object of 1,200 series becomes 20
    rows for a per-service overview: a dashboard re-asking a panel only merges
    what changed since (the newest hour and day objects).
    """

    name = "duckdb-premerged"

    def __init__(self, store: Any, threads: int = 0, max_rows: int = 5_000_000) -> None:
        super().__init__(store, threads, max_rows)
        self.merged: dict[tuple[Any, ...], tuple[tuple[int, int], str]] = {}

    def _source(self, key: str, plan: Any) -> str | None:
        from gravix.query.model import SERIES_DIMENSIONS

        base = self._table(key)
        if base is None:
            return None
        stamp = self.tables[key][0]
        filters = [f for f in plan.filters if f.dimension in SERIES_DIMENSIONS]
        keep = [
            c for c in SERIES_DIMENSIONS
            if c in plan.dimensions or any(f.dimension == c for f in filters)
        ]  # fmt: skip
        where = [
            f"{f.dimension} {'NOT IN' if f.op in ('neq', 'not_in') else 'IN'} "
            f"({', '.join(_quote(str(v)) for v in f.values)})"
            for f in filters
        ]
        shape = (key, tuple(keep), tuple(where))
        cached = self.merged.get(shape)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        self.made += 1
        name = f"merged_{self.made}"
        self.con.execute(f"CREATE TABLE {name} AS {_premerge_sql(base, keep, where)}")
        if cached is not None:
            self.con.execute(f"DROP TABLE {cached[1]}")
        self.merged[shape] = (stamp, name)
        return name


def _premerge_sql(table: str, keep: list[str], where: list[str]) -> str:
    from gravix.query.model import SERIES_DIMENSIONS

    keys = ["bucket_ms", *keep]
    key_list = ", ".join(keys)

    def on(alias: str) -> str:
        return " AND ".join(f"t.{k} IS NOT DISTINCT FROM {alias}.{k}" for k in keys)

    rows = f"SELECT * FROM {table}" + (f" WHERE {' AND '.join(where)}" if where else "")

    def merged(column: str, key_type: str) -> str:
        return f"""SELECT {key_list}, CAST(map(list(k ORDER BY k), list(n ORDER BY k))
                                AS MAP({key_type}, BIGINT)) AS {column}
            FROM (SELECT {key_list}, k, CAST(sum(n) AS BIGINT) AS n
                  FROM (SELECT {key_list}, unnest(map_keys({column})) AS k,
                               unnest(map_values({column})) AS n FROM base)
                  GROUP BY ALL)
            GROUP BY ALL"""

    series = ", ".join(
        f"t.{c}" if c in keep else f"CAST(NULL AS VARCHAR) AS {c}" for c in SERIES_DIMENSIONS
    )
    return f"""
        WITH base AS ({rows}),
        totals AS (
            SELECT {key_list}, CAST(sum(requests) AS BIGINT) AS requests,
                   CAST(sum(errors) AS BIGINT) AS errors,
                   CAST(sum(client_errors) AS BIGINT) AS client_errors,
                   CAST(sum(latency_sum_us) AS BIGINT) AS latency_sum_us,
                   max(latency_max_us) AS latency_max_us
            FROM base GROUP BY ALL
        ),
        statuses AS ({merged("status_counts", "SMALLINT")}),
        sketches AS ({merged("latency_sketch", "INTEGER")})
        SELECT t.bucket_ms, {series}, t.requests, t.errors, t.client_errors, s.status_counts,
               t.latency_sum_us, t.latency_max_us, m.latency_sketch
        FROM totals t JOIN sketches m ON {on("m")} JOIN statuses s ON {on("s")}"""


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
    if name.startswith("gravix"):
        import msgspec

        from gravix.query.engine import DuckDBEngine
        from gravix.query.service import QueryService
        from gravix.query.spec import decode_query
        from gravix.storage.local import LocalObjectStore

        store = LocalObjectStore(Path(meta["store"]))
        engine: Any = {
            "gravix": DuckDBEngine,
            "gravix-files": FilesEngine,
            "gravix-tables": TablesEngine,
            "gravix-premerged": PremergedEngine,
        }[name](store, threads)
        service = QueryService(store, None, engine)
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

    A step-by-step copy of the engine's code path (plan, pending facts, per
    tier object: ``store.head`` then ``TableCache.get`` then the cut to the
    segment; concat; a new DuckDB connection; the SQL; Arrow to Python rows;
    the rollup state), on the engine's own store and cache. Also times two
    alternatives on the same objects: ``os.stat`` instead of ``head`` (which
    reads and hashes the whole file), and the SQL on a connection kept open.
    """
    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc

    from gravix.query.compile import compile_sql, segments
    from gravix.query.engine import _EMPTY, object_keys
    from gravix.query.model import SERIES_DIMENSIONS
    from gravix.query.spec import decode_query, plan
    from gravix.storage.base import ObjectNotFound

    engine = service.engine
    store = engine.store
    clock = time.perf_counter
    steps: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = clock()
        steps[name] = steps.get(name, 0.0) + (now - since) * 1000
        return now

    t = clock()
    p = plan(decode_query(body), now_ms)
    t = lap("plan", t)
    extra, _ = service.pending.minute_rows(tenant)
    t = lap("pending facts", t)
    tables, whole, files, loaded, missing = [], [], 0, 0, 0
    for segment in segments(p):
        _, start, end = segment
        for key in object_keys(tenant, segment):
            t = clock()
            try:
                info = store.head(key)
            except ObjectNotFound:
                lap("head (read + sha256)", t)
                missing += 1
                continue
            t = lap("head (read + sha256)", t)
            table = engine.cache.get(store, info)
            t = lap("TableCache.get", t)
            whole.append((table, start, end))
            buckets = table["bucket_ms"]
            keep = pc.and_(pc.greater_equal(buckets, start), pc.less(buckets, end))
            tables.append(table.filter(keep))
            lap("cut to segment", t)
            files += 1
            loaded += table.num_rows
    if extra is not None and extra.num_rows:
        tables.append(extra)
    t = clock()
    rows = pa.concat_tables(tables) if tables else _EMPTY
    t = lap("concat", t)
    con = duckdb.connect(":memory:")
    if engine.threads:
        con.execute(f"SET threads = {int(engine.threads)}")
    t = lap("duckdb.connect", t)
    con.register("metric_rows", rows)
    t = lap("register", t)
    table = con.sql(compile_sql(p)).to_arrow_table()
    t = lap("SQL", t)
    con.close()
    t = lap("close", t)
    answer = _table_rows(table)
    t = lap("rows to Python", t)
    service.rollup_state(tenant)
    lap("rollup state", t)
    total = sum(steps.values())
    # The alternatives, on the same objects and rows.
    t = clock()
    for segment in segments(p):
        for key in object_keys(tenant, segment):
            with contextlib.suppress(FileNotFoundError):
                os.stat(store.root / key)
    head_stat = (clock() - t) * 1000
    # Tier objects are sorted by bucket_ms: a zero-copy slice cuts them as well.
    t = clock()
    for table, start, end in whole:
        buckets = table["bucket_ms"].to_numpy()
        first, last = (int(i) for i in buckets.searchsorted([start, end]))
        table.slice(first, last - first)
    cut_slice = (clock() - t) * 1000
    kept = getattr(service, "_bench_con", None)
    if kept is None:
        kept = duckdb.connect(":memory:")
        service._bench_con = kept
    t = clock()
    kept.register("metric_rows", rows)
    kept.sql(compile_sql(p)).to_arrow_table()
    kept.unregister("metric_rows")
    kept_sql = (clock() - t) * 1000
    # Only the rows of the filtered series go to DuckDB (filtered in Arrow first).
    prefilter_sql = None
    series = [f for f in p.filters if f.dimension in SERIES_DIMENSIONS]
    if series:
        t = clock()
        mask = None
        for f in series:
            match = pc.is_in(rows[f.dimension], value_set=pa.array(f.values))
            match = pc.invert(match) if f.op in ("neq", "not_in") else match
            mask = match if mask is None else pc.and_(mask, match)
        kept.register("metric_rows", rows.filter(mask))
        kept.sql(compile_sql(p)).to_arrow_table()
        kept.unregister("metric_rows")
        prefilter_sql = (clock() - t) * 1000
    return {
        "steps_ms": {k: round(v, 2) for k, v in steps.items()},
        "total_ms": round(total, 2),
        "tiers": sorted({s[0] for s in segments(p)}),
        "segments": [list(s) for s in segments(p)],
        "objects": files,
        "objects_missing": missing,
        "rows_loaded": loaded,
        "rows_to_sql": rows.num_rows,
        "answer_rows": len(answer),
        "alt_head_by_stat_ms": round(head_stat, 2),
        "alt_cut_by_slice_ms": round(cut_slice, 2),
        "alt_sql_on_kept_connection_ms": round(kept_sql, 2),
        "alt_sql_series_filtered_in_arrow_ms": (
            None if prefilter_sql is None else round(prefilter_sql, 2)
        ),
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
