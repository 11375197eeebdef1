"""The rollup's arithmetic, as DuckDB SQL: dedup, minute buckets, tiers.

Every function here takes the name of a relation (a table, a view, a
registered Arrow table or a ``read_parquet(...)`` call) and returns a SQL
query, so the same statements run over Arrow tables in memory (the rollup),
over Parquet files (re-rollups) and over NDJSON (the benchmark).

Facts in the raw archive have :data:`ARCHIVE_COLUMNS`; metric rows of every
tier have :data:`METRIC_COLUMNS` (docs/data-model.md). Timestamps are
handled as epoch milliseconds (``BIGINT``) inside the SQL and become Parquet
timestamps only when written, so no statement depends on a time zone.
"""

from __future__ import annotations

from typing import Final

import duckdb

from gravix.schema import sketch

MINUTE_MS: Final = 60_000
# Facts are deduplicated within their event hour (docs/data-model.md).
HOUR_MS: Final = 3_600_000

# The raw archive: one row per deduplicated fact.
ARCHIVE_COLUMNS: Final = (
    "event_id",  # VARCHAR, unique within a (tenant, hour) archive
    "timestamp_ms",  # BIGINT, when the request happened (epoch ms)
    "service",
    "method",
    "path",
    "status",  # SMALLINT
    "latency_us",  # BIGINT, microseconds; NULL when unknown
    "env",  # VARCHAR or NULL
    "version",  # VARCHAR or NULL
    "received_ms",  # BIGINT, when Gravix accepted it
)
SERIES: Final = ("service", "method", "path", "env", "version")
_SERIES = ", ".join(SERIES)
# NULLS FIRST everywhere: the same order on every engine, so rows are stable.
SERIES_ORDER: Final = ", ".join(f"{c} NULLS FIRST" for c in SERIES)
_SERIES_ORDER = SERIES_ORDER

METRIC_COLUMNS: Final = (
    "bucket_ms",  # BIGINT start of the minute / hour / day (written as a timestamp)
    *SERIES,
    "requests",  # BIGINT
    "errors",  # BIGINT, status 500-599
    "client_errors",  # BIGINT, status 400-499
    "status_counts",  # MAP(SMALLINT, BIGINT)
    # The latency columns count only the facts with a latency (latency_us not
    # NULL): latency_count of them, latency_sum_us 0 and latency_max_us NULL
    # and latency_sketch empty when there is none.
    "latency_count",  # BIGINT
    "latency_sum_us",  # BIGINT
    "latency_max_us",  # BIGINT or NULL
    "latency_sketch",  # MAP(INTEGER, BIGINT), see gravix.schema.sketch
)
# The empty sketch of rows without a latency (NULL never: every reader adds maps).
EMPTY_SKETCH: Final = "CAST(MAP {} AS MAP(INTEGER, BIGINT))"


def connect(
    memory_limit: str = "1GB", threads: int = 0, temp_dir: str | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the rollup's limits."""
    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if temp_dir:
        con.execute("SET temp_directory = ?", [temp_dir])
    # Output order is fixed by ORDER BY; insertion order is not needed and
    # costs memory on big inputs.
    con.execute("SET preserve_insertion_order = false")
    return con


_UNITS: Final = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}  # fmt: skip


def memory_share(limit: str, share: float) -> str:
    """``share`` of a DuckDB memory limit such as ``"1GB"`` (Settings' pattern), as a limit."""
    number = limit.rstrip("BKMGTIbkmgti \t")
    unit = limit[len(number) :].strip().upper()
    return f"{int(float(number) * _UNITS[unit] * share)}B"


def dedup_sql(source: str, *, ordered: bool = True) -> str:
    """The facts of ``source``, one per event_id (sorted for the archive if ``ordered``).

    Of several facts with one event_id in one event hour (a client retry, or
    a segment stored twice) the one Gravix accepted first is kept, so
    ``source`` may hold several hours; full ties are broken by
    every other column, so the choice never depends on input order.

    Only facts whose ``hash(event_id)`` occurs more than once (the retries,
    and rare hash collisions) go through the window that picks one; the
    rest are unique and pass straight through. Sorting every fact by id is
    what made a plain ``QUALIFY`` over all facts slow (bench/README.md).
    """
    cols = ", ".join(ARCHIVE_COLUMNS)
    order = "ORDER BY timestamp_ms, event_id" if ordered else ""
    return f"""
        WITH hashed AS (SELECT {cols}, hash(event_id) AS id_hash FROM {source}),
        shared AS (SELECT id_hash FROM hashed GROUP BY id_hash HAVING count(*) > 1)
        SELECT {cols} FROM hashed ANTI JOIN shared USING (id_hash)
        UNION ALL
        SELECT {cols} FROM (
            SELECT * FROM hashed SEMI JOIN shared USING (id_hash)
            QUALIFY row_number() OVER (
                PARTITION BY event_id, timestamp_ms // {HOUR_MS}
                ORDER BY received_ms, timestamp_ms, service, method, path, status, latency_us,
                         env NULLS FIRST, version NULLS FIRST
            ) = 1
        )
        {order}
    """


def minute_sql(source: str) -> str:
    """Minute metric rows of the (deduplicated) facts in ``source``.

    A fact without a latency counts in ``requests`` and the status columns,
    not in the latency ones (NULLs are skipped by ``count``, ``sum``, ``max``
    and ``histogram``).
    """
    key = sketch.key_sql("(CAST(latency_us AS DOUBLE) / 1000.0)")
    return f"""
        SELECT
            timestamp_ms // {MINUTE_MS} * {MINUTE_MS} AS bucket_ms, {_SERIES},
            count(*) AS requests,
            count(*) FILTER (WHERE status >= 500) AS errors,
            count(*) FILTER (WHERE status >= 400 AND status < 500) AS client_errors,
            CAST(histogram(status) AS MAP(SMALLINT, BIGINT)) AS status_counts,
            count(latency_us) AS latency_count,
            CAST(coalesce(sum(latency_us), 0) AS BIGINT) AS latency_sum_us,
            max(latency_us) AS latency_max_us,
            coalesce(CAST(histogram({key}) AS MAP(INTEGER, BIGINT)), {EMPTY_SKETCH})
                AS latency_sketch
        FROM {source}
        GROUP BY ALL
        ORDER BY {_SERIES_ORDER}, bucket_ms
    """


def tier_sql(source: str, step_ms: int, keep: tuple[str, ...] = SERIES) -> str:
    """Metric rows of ``source`` (any tier) merged into buckets of ``step_ms``.

    Counts and sums add, maxima take the max, maps add key by key, so an
    hour built from its minutes equals an hour built from its facts. The
    series dimensions not in ``keep`` become NULL and merge too: with
    :data:`gravix.schema.layout.SERVICE_LEVEL` this makes the service level.
    """
    dims = ", ".join(c if c in keep else f"CAST(NULL AS VARCHAR) AS {c}" for c in SERIES)
    return f"""
        WITH base AS (
            SELECT *, dense_rank() OVER (ORDER BY {_SERIES_ORDER}, b) AS gid
            FROM (SELECT bucket_ms // {step_ms} * {step_ms} AS b, {dims},
                         * EXCLUDE (bucket_ms, {_SERIES})
                  FROM {source})
        ),
        totals AS (
            SELECT gid, any_value(b) AS bucket_ms,
                   {", ".join(f"any_value({c}) AS {c}" for c in SERIES)},
                   CAST(sum(requests) AS BIGINT) AS requests,
                   CAST(sum(errors) AS BIGINT) AS errors,
                   CAST(sum(client_errors) AS BIGINT) AS client_errors,
                   CAST(sum(latency_count) AS BIGINT) AS latency_count,
                   CAST(sum(latency_sum_us) AS BIGINT) AS latency_sum_us,
                   max(latency_max_us) AS latency_max_us
            FROM base GROUP BY gid
        ),
        {_merged_map_cte("statuses", "status_counts", "SMALLINT")},
        {_merged_map_cte("sketches", "latency_sketch", "INTEGER")}
        SELECT t.bucket_ms, {", ".join(f"t.{c}" for c in SERIES)},
               t.requests, t.errors, t.client_errors, s.status_counts, t.latency_count,
               t.latency_sum_us, t.latency_max_us,
               coalesce(k.latency_sketch, {EMPTY_SKETCH}) AS latency_sketch
        -- a group whose facts had no latency has no sketch cells
        FROM totals t JOIN statuses s USING (gid) LEFT JOIN sketches k USING (gid)
        ORDER BY {", ".join(f"t.{c} NULLS FIRST" for c in SERIES)}, t.bucket_ms
    """


def _merged_map_cte(name: str, column: str, key_type: str) -> str:
    return f"""{name} AS (
            SELECT gid, map(list(k ORDER BY k), list(n ORDER BY k)) AS {column}
            FROM (
                SELECT gid, k, CAST(sum(n) AS BIGINT) AS n
                FROM (SELECT gid, unnest(map_keys({column})) AS k,
                             unnest(map_values({column})) AS n FROM base)
                GROUP BY gid, k
            )
            GROUP BY gid
        )"""


def events_dedup_sql(source: str) -> str:
    """Service events of ``source``, one per event_id, in time order."""
    return f"""
        SELECT event_id, timestamp_ms, service, kind, message, version, received_ms
        FROM {source}
        QUALIFY row_number() OVER (
            PARTITION BY event_id
            ORDER BY received_ms, timestamp_ms, service, kind, message, version NULLS FIRST
        ) = 1
        ORDER BY timestamp_ms, event_id
    """
