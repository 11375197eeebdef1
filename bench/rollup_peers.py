"""One contender of the rollup benchmark, run alone in a fresh process.

``python -m bench.rollup_peers NAME INPUT OUTPUT [--threads N] [--memory-limit M]
[--temp-dir D]`` reads the NDJSON facts of :mod:`bench.rollup_data`, drops
duplicate event ids (keeping the first received), rolls the facts up into one
row per minute and series, writes the rows to the Parquet file OUTPUT with
ZSTD, and prints one JSON line: the seconds the job took (imports excluded),
its peak RSS before the job started and at the end (``VmHWM``), and what it
wrote. A fresh process per contender, so every one starts clean.

Contenders (every one limited to ``--threads``):

* ``gravix``: Gravix's own SQL, :func:`gravix.rollup.aggregate.minute_sql`
  over :func:`~gravix.rollup.aggregate.dedup_sql`, on a connection from
  :func:`~gravix.rollup.aggregate.connect`; rows fetched as Arrow and written
  by :func:`gravix.schema.parquet.encode`, as the rollup job stores them.
* ``gravix-unordered``: the same with ``dedup_sql(..., ordered=False)``: no
  final ``ORDER BY`` (the archive's row order, which minute rows do not need).
* ``gravix-archive``: the raw archive, as the job makes it: dedup_sql to an
  Arrow table, ``parquet.encode``; then the same facts with UUIDv4 event ids
  (``--archive-v4`` output) to see what the ids cost.
* ``duckdb``: one plain statement, ``QUALIFY row_number()`` dedup, exact
  ``quantile_disc`` p50/p95/p99, ``COPY ... (FORMAT parquet, COMPRESSION zstd)``.
* ``duckdb-capped``: the same statement under Gravix's ``--memory-limit`` and
  ``preserve_insertion_order = false`` (DuckDB's default limit is 80% of RAM),
  to show what the memory budget costs.
* ``gravix-hashdedup``: the hash dedup as this benchmark first measured it,
  before ``dedup_sql`` took it up: facts whose ``hash(event_id)`` occurs once
  are unique and pass straight on; only those sharing a hash (retries, and
  the rare collision) go through the window, which then sorts ~2% of the rows
  instead of all of them. Spelled with the source repeated (read three times,
  5 s a pass of this NDJSON) where ``dedup_sql`` uses a CTE.
* ``chdb``: ClickHouse in process, ``argMin`` per event id for the dedup,
  exact ``quantilesExactLow``, ``INSERT INTO FUNCTION file(..., Parquet)``.
* ``polars``: ``scan_ndjson`` -> ``unique`` -> ``group_by`` with exact
  ``quantile(interpolation="equiprobable")``, ``sink_parquet`` (streaming).

All exact quantiles are nearest-rank (the rank ``ceil(q * n)`` value), the
definition of :mod:`gravix.schema.sketch`: DuckDB's ``quantile_disc``,
ClickHouse's ``quantilesExactLow`` and Polars' ``equiprobable`` all give it.
Every peer writes ``bucket_ms, service, method, path, env, version, requests,
errors, client_errors, latency_sum_us, latency_max_us, p50_us, p95_us,
p99_us``; Gravix writes its minute rows (docs/data-model.md), which also hold
the per-status counts and the latency sketch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bench.rollup_data import NDJSON_COLUMNS

CONTENDERS = (
    "gravix",
    "gravix-unordered",
    "gravix-hashdedup",
    "gravix-archive",
    "duckdb",
    "duckdb-capped",
    "chdb",
    "polars",
)
SERIES = "service, method, path, env, version"


def peak_rss_mib() -> float:
    """This process's peak RSS since it started (``VmHWM``), MiB.

    Not ``ru_maxrss``: Linux keeps that across ``exec``, so a child forked from
    a parent holding 300 MiB reports at least 300 MiB whatever it does itself.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _start() -> tuple[float, float]:
    """The job's start time, and the process's peak RSS so far (imports, connection)."""
    return time.perf_counter(), peak_rss_mib()


def _duckdb_columns() -> str:
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in NDJSON_COLUMNS.items()) + "}"


def gravix_source(path: Path) -> str:
    """The NDJSON as the raw archive's columns (gravix.schema.raw.FACT_SCHEMA)."""
    return f"""(
        SELECT event_id, timestamp AS timestamp_ms, service, method, path, status,
               CAST(round(latency_ms * 1000) AS BIGINT) AS latency_us, env, version,
               received_ms
        FROM read_ndjson('{path}', columns = {_duckdb_columns()})
    )"""


def run_gravix(args: argparse.Namespace, ordered: bool, by_hash: bool = False) -> dict[str, Any]:
    from gravix.rollup import aggregate
    from gravix.schema import parquet

    con = aggregate.connect(args.memory_limit, args.threads, str(args.temp_dir))
    con.execute("SET enable_progress_bar = false")
    if by_hash:
        dedup = hash_dedup_sql(gravix_source(args.input))
    else:
        dedup = aggregate.dedup_sql(gravix_source(args.input), ordered=ordered)
    started, rss = _start()
    minutes = con.sql(aggregate.minute_sql(f"({dedup})")).to_arrow_table()
    query_s = time.perf_counter() - started
    args.output.write_bytes(parquet.encode(minutes))
    return {
        "seconds": time.perf_counter() - started,
        "query_seconds": query_s,
        "rss_before_job_mib": rss,
    }


def hash_dedup_sql(source: str) -> str:
    """The hash dedup as first measured here: the source repeated, not a CTE.

    Facts whose ``hash(event_id)`` occurs once pass straight on; the others go
    through dedup_sql's window (same tie-break). Kept beside ``dedup_sql`` to
    compare the two spellings (DuckDB may materialize a CTE used twice).
    """
    from gravix.rollup import aggregate

    cols = ", ".join(aggregate.ARCHIVE_COLUMNS)
    return f"""
        WITH shared_hashes AS (
            SELECT hash(event_id) AS h FROM {source} GROUP BY h HAVING count(*) > 1
        )
        SELECT {cols} FROM {source} WHERE hash(event_id) NOT IN (SELECT h FROM shared_hashes)
        UNION ALL
        SELECT {cols} FROM (
            SELECT * FROM {source} WHERE hash(event_id) IN (SELECT h FROM shared_hashes)
            QUALIFY row_number() OVER (
                PARTITION BY event_id
                ORDER BY received_ms, timestamp_ms, service, method, path, status, latency_us,
                         env NULLS FIRST, version NULLS FIRST
            ) = 1
        )
    """


def _uuid4_sql(column: str) -> str:
    # A version-4 UUID string drawn from the hash of the v7 id: 122 bits that
    # look random, one per fact, the same on every run.
    h1, h2 = f"hash({column})", f"hash({column} || '#')"
    return (
        f"printf('%08x-%04x-4%03x-%04x-%012x', {h1} & 4294967295, ({h1} >> 32) & 65535, "
        f"({h1} >> 48) & 4095, 32768 | ({h2} & 16383), ({h2} >> 16) & 281474976710655)"
    )


def run_archive(args: argparse.Namespace) -> dict[str, Any]:
    from gravix.rollup import aggregate
    from gravix.schema import parquet
    from gravix.schema.raw import FACT_SCHEMA

    con = aggregate.connect(args.memory_limit, args.threads, str(args.temp_dir))
    con.execute("SET enable_progress_bar = false")
    started, rss = _start()
    archive = con.sql(aggregate.dedup_sql(gravix_source(args.input))).to_arrow_table()
    query_s = time.perf_counter() - started
    args.output.write_bytes(parquet.encode(archive.cast(FACT_SCHEMA)))
    seconds = time.perf_counter() - started
    rows = archive.num_rows
    # The same facts as if clients sent random (v4) ids, sorted as dedup_sql sorts.
    con.register("archive_v7", archive)
    v4 = con.sql(
        f"SELECT * REPLACE ({_uuid4_sql('event_id')} AS event_id) FROM archive_v7 "
        "ORDER BY timestamp_ms, event_id"
    ).to_arrow_table()
    con.unregister("archive_v7")
    del archive
    v4_bytes = parquet.encode(v4.cast(FACT_SCHEMA))
    args.archive_v4.write_bytes(v4_bytes)
    return {"seconds": seconds, "query_seconds": query_s, "rows": rows, "rss_before_job_mib": rss}


def run_duckdb(args: argparse.Namespace, capped: bool) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute(f"SET threads = {args.threads}")
    if capped:  # Gravix's limits (aggregate.connect), nothing else changed
        con.execute(f"SET memory_limit = '{args.memory_limit}'")
        con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    con.execute("SET temp_directory = ?", [str(args.temp_dir)])
    started, rss = _start()
    con.execute(f"""
        COPY (
            SELECT timestamp // 60000 * 60000 AS bucket_ms, {SERIES},
                   count(*) AS requests,
                   count(*) FILTER (WHERE status >= 500) AS errors,
                   count(*) FILTER (WHERE status >= 400 AND status < 500) AS client_errors,
                   sum(latency_us) AS latency_sum_us, max(latency_us) AS latency_max_us,
                   quantile_disc(latency_us, 0.5) AS p50_us,
                   quantile_disc(latency_us, 0.95) AS p95_us,
                   quantile_disc(latency_us, 0.99) AS p99_us
            FROM (
                SELECT *, CAST(round(latency_ms * 1000) AS BIGINT) AS latency_us
                FROM read_ndjson('{args.input}', columns = {_duckdb_columns()})
                QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY received_ms) = 1
            )
            GROUP BY ALL
        ) TO '{args.output}' (FORMAT parquet, COMPRESSION zstd)
    """)
    return {"seconds": time.perf_counter() - started, "rss_before_job_mib": rss}


def run_chdb(args: argparse.Namespace) -> dict[str, Any]:
    import chdb

    types = {"VARCHAR": "String", "BIGINT": "Int64", "SMALLINT": "Int16", "DOUBLE": "Float64"}
    schema = ", ".join(f"{k} {types[v]}" for k, v in NDJSON_COLUMNS.items())
    started, rss = _start()
    chdb.query(f"""
        INSERT INTO FUNCTION file('{args.output}', 'Parquet')
        SELECT intDiv(f.1, 60000) * 60000 AS bucket_ms, f.2 AS service, f.3 AS method,
               f.4 AS path, f.7 AS env, f.8 AS version,
               count() AS requests,
               countIf(f.5 >= 500) AS errors,
               countIf(f.5 >= 400 AND f.5 < 500) AS client_errors,
               sum(f.6) AS latency_sum_us, max(f.6) AS latency_max_us,
               quantilesExactLow(0.5, 0.95, 0.99)(f.6) AS q,
               q[1] AS p50_us, q[2] AS p95_us, q[3] AS p99_us
        FROM (
            SELECT event_id,
                   argMin((timestamp, service, method, path, status,
                           toInt64(round(latency_ms * 1000)), env, version), received_ms) AS f
            FROM file('{args.input}', 'JSONEachRow', '{schema}')
            GROUP BY event_id
        )
        GROUP BY bucket_ms, service, method, path, env, version
        SETTINGS max_threads = {args.threads},
                 output_format_parquet_compression_method = 'zstd'
    """)
    return {"seconds": time.perf_counter() - started, "rss_before_job_mib": rss}


def run_polars(args: argparse.Namespace) -> dict[str, Any]:
    import polars as pl

    types = {"VARCHAR": pl.String, "BIGINT": pl.Int64, "SMALLINT": pl.Int64, "DOUBLE": pl.Float64}
    schema = {k: types[v] for k, v in NDJSON_COLUMNS.items()}
    latency = pl.col("latency_us")
    started, rss = _start()
    (
        pl.scan_ndjson(args.input, schema=schema)
        .unique(subset=["event_id"], keep="first")  # lines are in received order
        .with_columns(
            (pl.col("timestamp") // 60_000 * 60_000).alias("bucket_ms"),
            (pl.col("latency_ms") * 1000).round().cast(pl.Int64).alias("latency_us"),
        )
        .group_by("bucket_ms", "service", "method", "path", "env", "version")
        .agg(
            pl.len().alias("requests"),
            (pl.col("status") >= 500).sum().alias("errors"),
            pl.col("status").is_between(400, 499).sum().alias("client_errors"),
            latency.sum().alias("latency_sum_us"),
            latency.max().alias("latency_max_us"),
            *(
                latency.quantile(q, interpolation="equiprobable").alias(f"p{name}_us")
                for q, name in ((0.5, "50"), (0.95, "95"), (0.99, "99"))
            ),
        )
        .sink_parquet(args.output, compression="zstd")
    )
    return {"seconds": time.perf_counter() - started, "rss_before_job_mib": rss}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.rollup_peers")
    parser.add_argument("contender", choices=CONTENDERS)
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", default="1GB", help="Gravix's DuckDB memory_limit")
    parser.add_argument("--temp-dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--archive-v4", type=Path, help="gravix-archive: the v4-id archive")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.contender == "polars":
        # Read by Polars when it is imported, so set before.
        os.environ["POLARS_MAX_THREADS"] = str(args.threads)
    runners = {
        "gravix": lambda: run_gravix(args, ordered=True),
        "gravix-unordered": lambda: run_gravix(args, ordered=False),
        "gravix-hashdedup": lambda: run_gravix(args, ordered=False, by_hash=True),
        "gravix-archive": lambda: run_archive(args),
        "duckdb": lambda: run_duckdb(args, capped=False),
        "duckdb-capped": lambda: run_duckdb(args, capped=True),
        "chdb": lambda: run_chdb(args),
        "polars": lambda: run_polars(args),
    }
    result = runners[args.contender]()
    result.update(
        contender=args.contender,
        output_bytes=args.output.stat().st_size,
        peak_rss_mib=peak_rss_mib(),
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
