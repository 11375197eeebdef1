"""The rollup's arithmetic in Spark SQL: :class:`SparkCompute`.

The same steps as :mod:`gravix.rollup.aggregate` (DuckDB), written for Spark,
returning the same Arrow tables: the same columns and types, the same rows in
the same order, maps with their keys ascending. The Parquet files of a Spark
rollup are therefore byte for byte those of a DuckDB rollup
(tests/rollup/test_spark_rollup.py compares them).

What differs between the two dialects, and is spelled out here:

* Spark sorts ascending NULLS FIRST, DuckDB NULLS LAST: every ORDER BY names
  its null order.
* Spark has no ``histogram``: minute maps are built from ``(key, count)``
  cells, ``map_from_entries(array_sort(collect_list(struct(key, count))))``,
  and tiers merge maps with ``map_zip_with``, then sort their entries.
* Spark has no QUALIFY: the first row of an event_id is ``min(struct(...))``.
* Spark's Arrow export marks columns NOT NULL where it can prove it, so
  results are cast to the exact DuckDB schema (nullability is in the Parquet
  schema).
* The sketch key is :func:`gravix.schema.sketch.key_sql`, the same SQL on
  both; the tests check that keys agree at every bucket boundary.

Every method but one is one Spark action (``toArrow``) over one input table
handed over with ``createDataFrame(arrow_table)``. :meth:`SparkCompute.dedup_files`
starts from the raw Parquet objects instead: ``spark.read.parquet`` of their
files, so the executors read and decode the facts and only the deduplicated
rows come back to the driver (two actions: the counts of what was read, then
the rows). With a cluster master the files must be on a filesystem every
executor mounts at the same path as the driver.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

import pyarrow as pa

from gravix.rollup import aggregate
from gravix.rollup.compute import METRIC_SCHEMA, RawFacts, UnreadableFiles, raw_fact_columns
from gravix.schema import sketch
from gravix.schema.raw import EVENT_SCHEMA, FACT_SCHEMA

_SERIES: Final = ", ".join(aggregate.SERIES)
_SERIES_ORDER: Final = aggregate.SERIES_ORDER  # "service NULLS FIRST, ..." (valid Spark SQL)
_SKETCH_KEY: Final = sketch.key_sql("(CAST(latency_us AS DOUBLE) / 1000.0)")
_ARCHIVE: Final = ", ".join(aggregate.ARCHIVE_COLUMNS)
# The tie-breaks of aggregate.dedup_sql and events_dedup_sql ("?": NULLS FIRST).
_FACT_TIE_BREAK: Final = (
    "received_ms",
    "timestamp_ms",
    "service",
    "method",
    "path",
    "status",
    "latency_us",
    "env?",
    "version?",
)
_EVENT_TIE_BREAK: Final = (
    "received_ms",
    "timestamp_ms",
    "service",
    "kind",
    "message",
    "version?",
)
_views = itertools.count()
# The archive columns of a raw facts object (gravix.schema.raw), given so that
# Spark reads no footer to infer them and skips the source columns.
_RAW_FILE_SCHEMA: Final = (
    "event_id STRING, timestamp TIMESTAMP, service STRING, method STRING, path STRING, "
    "status SMALLINT, latency_us BIGINT, env STRING, version STRING, received TIMESTAMP"
)
# Characters Hadoop reads as a glob pattern in a path (escaped with a backslash).
_GLOB: Final = re.compile(r"([\\*?\[\]{}])")


def dedup_sql(source: str) -> str:
    """As :func:`aggregate.dedup_sql`: the fact accepted first per event_id and hour.

    The first fact is the least struct of the tie-break columns: a hash
    aggregate instead of a window that sorts every fact. Structs compare
    NULL fields first, so ``x IS NULL`` goes before each column DuckDB
    orders NULLS LAST.
    """
    return f"""
        SELECT {", ".join(f"f.{c}" for c in aggregate.ARCHIVE_COLUMNS)} FROM (
            SELECT min(struct({_tie_break(_FACT_TIE_BREAK)}, {_ARCHIVE})) AS f
            FROM {source} GROUP BY event_id, timestamp_ms DIV {aggregate.HOUR_MS}
        )
        ORDER BY f.timestamp_ms NULLS LAST, f.event_id NULLS LAST
    """


def minute_sql(source: str) -> str:
    """As :func:`aggregate.minute_sql`: minute metric rows of deduplicated facts.

    One pass of GROUPING SETS makes the ``(minute, series, status)`` and
    ``(minute, series, sketch key)`` cells; the totals come from the status
    cells, the two maps from their cells. A fact without a latency has a NULL
    sketch key, left out of the sketch as DuckDB's ``histogram`` leaves it.
    """
    minute = aggregate.MINUTE_MS
    return f"""
        WITH f AS (
            SELECT timestamp_ms DIV {minute} * {minute} AS bucket_ms, {_SERIES},
                   status, latency_us, {_SKETCH_KEY} AS sk
            FROM {source}
        ),
        cells AS (
            SELECT bucket_ms, {_SERIES}, status, sk, grouping(status) AS by_key,
                   count(*) AS n, count(latency_us) AS latency_n,
                   sum(latency_us) AS latency_sum_us, max(latency_us) AS latency_max_us
            FROM f
            GROUP BY GROUPING SETS ((bucket_ms, {_SERIES}, status), (bucket_ms, {_SERIES}, sk))
        )
        SELECT bucket_ms, {_SERIES},
               sum(n) FILTER (WHERE by_key = 0) AS requests,
               coalesce(sum(n) FILTER (WHERE by_key = 0 AND status >= 500), 0) AS errors,
               coalesce(sum(n) FILTER (WHERE by_key = 0 AND status >= 400 AND status < 500), 0)
                   AS client_errors,
               {_map("status", "SMALLINT", "by_key = 0 AND status IS NOT NULL")} AS status_counts,
               sum(latency_n) FILTER (WHERE by_key = 0) AS latency_count,
               coalesce(sum(latency_sum_us) FILTER (WHERE by_key = 0), 0) AS latency_sum_us,
               max(latency_max_us) FILTER (WHERE by_key = 0) AS latency_max_us,
               {_map("sk", "INT", "by_key = 1 AND sk IS NOT NULL")} AS latency_sketch
        FROM cells
        GROUP BY bucket_ms, {_SERIES}
        ORDER BY {_SERIES_ORDER}, bucket_ms
    """


def tier_sql(source: str, step_ms: int, keep: tuple[str, ...] = aggregate.SERIES) -> str:
    """As :func:`aggregate.tier_sql`: metric rows merged into buckets of ``step_ms``.

    One aggregation: maps merge with ``map_zip_with`` (counts of a key add),
    then their entries are sorted by key.
    """
    dims = ", ".join(c if c in keep else f"CAST(NULL AS STRING) AS {c}" for c in aggregate.SERIES)
    return f"""
        SELECT bucket_ms DIV {step_ms} * {step_ms} AS b, {dims},
               sum(requests) AS requests, sum(errors) AS errors,
               sum(client_errors) AS client_errors,
               {_merged("status_counts", "SMALLINT")} AS status_counts,
               sum(latency_count) AS latency_count,
               sum(latency_sum_us) AS latency_sum_us, max(latency_max_us) AS latency_max_us,
               {_merged("latency_sketch", "INT")} AS latency_sketch
        FROM {source}
        GROUP BY 1, 2, 3, 4, 5, 6
        -- as DuckDB's inner join of the status cells: no group without one (a
        -- group whose facts had no latency keeps its empty sketch, as there)
        HAVING max(size(status_counts)) > 0
        ORDER BY {_SERIES_ORDER}, b
    """


def events_sql(source: str) -> str:
    """As :func:`aggregate.events_dedup_sql`: one service event per event_id, in time order."""
    cols = ("event_id", "timestamp_ms", "service", "kind", "message", "version", "received_ms")
    return f"""
        SELECT {", ".join(f"e.{c}" for c in cols)} FROM (
            SELECT min(struct({_tie_break(_EVENT_TIE_BREAK)}, {", ".join(cols)})) AS e
            FROM {source} GROUP BY event_id
        )
        ORDER BY e.timestamp_ms NULLS LAST, e.event_id NULLS LAST
    """


def _tie_break(columns: tuple[str, ...]) -> str:
    """Struct fields ordering as DuckDB's ``ORDER BY columns`` (``?`` marks NULLS FIRST)."""
    fields = []
    for i, column in enumerate(columns):
        name = column.rstrip("?")
        if not column.endswith("?"):
            fields.append(f"{name} IS NULL AS _n{i}")
        fields.append(f"{name} AS _o{i}")
    return ", ".join(fields)


def _merged(column: str, key_type: str) -> str:
    """The sum of the maps in ``column`` of a group, keys ascending."""
    add = "(k, a, b) -> coalesce(a, 0L) + coalesce(b, 0L)"
    empty = f"CAST(map() AS MAP<{key_type}, BIGINT>)"
    return (
        f"map_from_entries(array_sort(map_entries(aggregate(collect_list({column}), {empty}, "
        f"(acc, m) -> map_zip_with(acc, m, {add})))))"
    )


def _map(key: str, key_type: str, where: str) -> str:
    """A map of the cells' ``key -> n`` (keys ascending), of the cells matching ``where``."""
    return (
        f"map_from_entries(array_sort(collect_list(struct(CAST({key} AS {key_type}), "
        f"CAST(n AS BIGINT))) FILTER (WHERE {where})))"
    )


class SparkCompute:
    """The rollup's steps in Spark SQL on ``session`` (see :func:`gravix.spark.session`).

    ``close`` leaves the session running: it is shared (the query engine,
    the next rollup pass, or spark-submit's own).
    """

    def __init__(self, session: Any) -> None:
        self.session = session

    def dedup(self, facts: pa.Table) -> pa.Table:
        return self._run(dedup_sql, facts, FACT_SCHEMA)

    def dedup_files(self, paths: Sequence[str], late_before_ms: int | None) -> RawFacts:
        from py4j.protocol import Py4JError  # type: ignore[import-untyped]
        from pyspark.errors import PySparkException

        if not paths:
            return RawFacts(FACT_SCHEMA.empty_table(), 0, None, 0)
        view = f"gravix_rollup_{next(_views)}"
        before = "NULL" if late_before_ms is None else str(int(late_before_ms))
        try:
            reader = self.session.read.schema(_RAW_FILE_SCHEMA)
            frame = reader.parquet(*(file_url(p) for p in paths))
            frame.selectExpr(*raw_fact_columns("unix_millis")).createOrReplaceTempView(view)
            try:
                read, newest, late = self.session.sql(
                    f"SELECT count(*), max(timestamp_ms), count_if(timestamp_ms < {before}) "
                    f"FROM {view}"
                ).collect()[0]
                facts = self.session.sql(dedup_sql(view)).toArrow()
            finally:
                self.session.catalog.dropTempView(view)
        except (PySparkException, Py4JError) as e:
            raise UnreadableFiles(str(e)) from e
        return RawFacts(_conform(facts, FACT_SCHEMA), int(read), newest, int(late))

    def minutes(self, facts: pa.Table) -> pa.Table:
        return self._run(minute_sql, facts, METRIC_SCHEMA)

    def tier(
        self, rows: pa.Table, step_ms: int, keep: tuple[str, ...] = aggregate.SERIES
    ) -> pa.Table:
        return self._run(lambda source: tier_sql(source, step_ms, keep), rows, METRIC_SCHEMA)

    def events(self, events: pa.Table) -> pa.Table:
        return self._run(events_sql, events, EVENT_SCHEMA)

    def close(self) -> None:
        pass

    def _run(self, sql: Callable[[str], str], table: pa.Table, schema: pa.Schema) -> pa.Table:
        if table.num_rows == 0:
            return schema.empty_table()
        # A view name per call: one session may serve several rollups at once.
        view = f"gravix_rollup_{next(_views)}"
        # One chunk: PySpark (4.3) drops every record batch after an empty one.
        self.session.createDataFrame(table.combine_chunks()).createOrReplaceTempView(view)
        try:
            result = self.session.sql(sql(view)).toArrow()
        finally:
            self.session.catalog.dropTempView(view)
        return _conform(result, schema)


def file_url(path: str) -> str:
    """A ``file:`` URL Spark reads as the local file ``path`` (an absolute path),
    whatever the cluster's default filesystem; other URLs as they are."""
    if not path.startswith("/"):
        return path
    return "file://" + _GLOB.sub(r"\\\1", path)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` as ``schema`` exactly: names (by position), types, nullability; one chunk."""
    columns = [
        column.cast(field.type).combine_chunks()
        for column, field in zip(table.columns, schema, strict=True)
    ]
    return pa.Table.from_arrays(columns, schema=schema)
